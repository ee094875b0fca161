"""Batches: which files to read, where each result goes, running them one by one, and sharding across ranks.

Nothing here prints; the CLI renders the callbacks and the results.
"""

from __future__ import annotations

import glob
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from srcli import distributed
from srcli.engine import Plan, ProgressCallback
from srcli.errors import NonFiniteOutputError, OutputError, OutputExistsError, OutputTooLargeError, SrcliError
from srcli.files import check_writable_folder
from srcli.imageio import ALPHA_EXTENSIONS, DEFAULT_MAX_PIXELS, IMAGE_EXTENSIONS, read_image, write_image
from srcli.pipeline import ImagePipeline

_GLOB_CHARACTERS = set("*?[")


@dataclass(frozen=True)
class Found:
    """An input file and the folder it was found under (None when named directly), for mirroring sub-folders."""

    path: Path
    root: Path | None = None
    from_directory: bool = False


@dataclass(frozen=True)
class Job:
    source: Path
    target: Path
    skip: bool = False  # the target exists and --skip-existing was given
    existing: str = "refuse"  # refuse | skip | overwrite: also decides when the target appears after planning


@dataclass
class ImageResult:
    """What happened to one input; plain data so it crosses process boundaries and serialises to JSON."""

    source: str
    target: str
    status: str  # written | skipped | failed
    error: str | None = None
    input_size: tuple[int, int] | None = None  # (width, height)
    output_size: tuple[int, int] | None = None
    seconds: float = 0.0
    rank: int = 0
    plan: Plan | None = None  # how the engine ran it (device, precision, tile, tiles, batch, back-offs)
    warnings: list[str] = field(default_factory=list)  # written, but not quite as asked (alpha flattened)

    def to_json(self) -> dict:
        data = asdict(self)
        data["plan"] = self.plan.to_dict() if self.plan is not None else None
        return data


@dataclass
class Summary:
    """Totals over every rank's results."""

    results: list[ImageResult] = field(default_factory=list)
    seconds: float = 0.0

    def count(self, status: str) -> int:
        return sum(result.status == status for result in self.results)

    @property
    def megapixels_in(self) -> float:
        return sum(r.input_size[0] * r.input_size[1] for r in self.results if r.input_size and r.output_size) / 1e6

    @property
    def megapixels_out(self) -> float:
        return sum(r.output_size[0] * r.output_size[1] for r in self.results if r.output_size) / 1e6


# --- which inputs -------------------------------------------------------------------------------------------


def is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def collect_inputs(arguments: list[str], recursive: bool = False) -> tuple[list[Found], list[ImageResult]]:
    """Files, folders (their images; sub-folders with `recursive`) and globs -> sorted unique inputs.

    A name that matches nothing comes back as a failed result rather than an exception, so one typo does
    not stop a batch. A name given directly is kept even if it does not look like an image: reading it
    then says exactly what is wrong with it.
    """
    found: dict[Path, Found] = {}
    problems: list[ImageResult] = []
    for argument in arguments:
        path = Path(argument)
        if any(character in argument for character in _GLOB_CHARACTERS) and not path.exists():
            root = _glob_root(argument)
            matches = [Path(m) for m in sorted(glob.glob(argument, recursive=recursive))]
            items = [Found(m, root) for m in matches if m.is_file() and is_image(m)]
            if not items:
                problems.append(ImageResult(argument, "", "failed", f"{argument}: matches no image"))
        elif path.is_dir():
            pattern = "**/*" if recursive else "*"
            items = [Found(m, path, True) for m in sorted(path.glob(pattern)) if m.is_file() and is_image(m)]
            if not items:
                hint = "" if recursive else " (use --recursive for sub-folders)"
                problems.append(ImageResult(argument, "", "failed", f"{argument}: folder holds no image{hint}"))
        else:
            items = [Found(path)]
        for item in items:
            found.setdefault(item.path.resolve(), item)
    return sorted(found.values(), key=lambda item: str(item.path)), problems


def _glob_root(pattern: str) -> Path:
    """The folder part of a glob before its first wildcard: results keep their sub-folders below it."""
    parts = Path(pattern).parts
    fixed = [part for part in parts[: next(i for i, p in enumerate(parts) if set(p) & _GLOB_CHARACTERS)]]
    return Path(*fixed) if fixed else Path(".")


# --- where outputs go ---------------------------------------------------------------------------------------


def scale_label(scale: float) -> str:
    """2 -> '2', 2.5 -> '2.5': the x-suffix of output names."""
    return str(int(scale)) if float(scale).is_integer() else f"{scale:g}"


def plan_jobs(
    inputs: list[Found],
    output: Path | None,
    label: str,
    extension: str | None = None,
    existing: str = "refuse",
    suffix: str | None = None,
) -> list[Job]:
    """Map inputs to outputs, refusing (before any work) collisions, overwriting an input, or existing files.

    Names are `<stem>_x<label>.<ext>`: beside each file; in `<folder>_x<label>/` for a folder input; under
    `output` when it is a folder (sub-folders mirrored); `output` itself when it names one file for one input.
    `existing` is refuse | skip | overwrite; an input is never overwritten whatever it says. `suffix` replaces
    `x<label>` in file names (`_<suffix>`; '' for none), as Real-ESRGAN's --suffix does.
    """
    if extension is not None:
        extension = "." + extension.lower().lstrip(".")
        if extension not in IMAGE_EXTENSIONS:
            raise OutputError(f"--format {extension[1:]} is not supported: use one of {_extension_list()}")
    output_is_file = output is not None and output.suffix.lower() in IMAGE_EXTENSIONS and not output.is_dir()
    if output_is_file and len(inputs) > 1:
        raise OutputError(f"-o {output} names one file but there are {len(inputs)} inputs: give a folder")
    if output is not None and output.suffix and not output_is_file and not output.is_dir():
        raise OutputError(f"-o {output}: {output.suffix} is not an image format ({_extension_list()})")

    jobs: list[Job] = []
    for item in inputs:
        tag = f"_x{label}" if suffix is None else f"_{suffix}" if suffix else ""
        name = f"{item.path.stem}{tag}{extension or item.path.suffix}"
        relative = item.path.parent.relative_to(item.root) if item.root is not None else Path()
        if output_is_file:
            target = output
        elif output is not None:
            target = output / relative / name
        elif item.from_directory:
            target = Path(f"{item.root}_x{label}") / relative / name
        else:
            target = item.path.parent / name
        jobs.append(Job(item.path, target))
    _check_targets(jobs, existing)
    return [Job(job.source, job.target, existing == "skip" and job.target.exists(), existing) for job in jobs]


def _extension_list() -> str:
    return ", ".join(e[1:] for e in IMAGE_EXTENSIONS)


def _check_targets(jobs: list[Job], existing: str) -> None:
    sources = {job.source.resolve() for job in jobs}
    seen: dict[Path, Path] = {}
    clashes: list[Job] = []
    for job in jobs:
        target = job.target.resolve()
        if target in sources:
            raise OutputError(f"{job.target} is an input: srcli never overwrites its inputs (choose another -o)")
        if target in seen:
            raise OutputError(
                f"{seen[target]} and {job.source} would both be written to {job.target} (use -o or --format)"
            )
        seen[target] = job.source
        if job.target.exists() and existing == "refuse":
            clashes.append(job)
    if clashes:
        exist = f"and {len(clashes) - 1} more outputs already exist" if len(clashes) > 1 else "already exists"
        raise OutputError(f"{clashes[0].target} {exist}: pass --skip-existing or --overwrite")
    for folder in sorted({job.target.parent for job in jobs}):
        check_writable_folder(folder)


# --- running ------------------------------------------------------------------------------------------------


@dataclass
class BatchCallbacks:
    """How the caller follows a batch: an image starts, its tiles progress, it ends."""

    image_started: Callable[[Job], None] | None = None
    tile_progress: ProgressCallback | None = None
    image_done: Callable[[ImageResult], None] | None = None


def run_jobs(
    jobs: list[Job],
    pipeline: ImagePipeline,
    quality: int | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    callbacks: BatchCallbacks | None = None,
    rank: int = 0,
) -> list[ImageResult]:
    """Upscale each job in turn; a failure is recorded and the batch goes on (Ctrl-C still stops it)."""
    callbacks = callbacks or BatchCallbacks()
    results = []
    for job in jobs:
        if callbacks.image_started:
            callbacks.image_started(job)
        result = _run_one(job, pipeline, quality, max_pixels, callbacks.tile_progress)
        result.rank = rank
        results.append(result)
        if callbacks.image_done:
            callbacks.image_done(result)
    return results


def _run_one(
    job: Job, pipeline: ImagePipeline, quality: int | None, max_pixels: int | None, progress: ProgressCallback | None
) -> ImageResult:
    result = ImageResult(str(job.source), str(job.target), "skipped")
    if job.skip:
        return result
    started = time.perf_counter()
    try:
        image = read_image(job.source, max_pixels)
        result.input_size = _size(image)
        upscaled, plan = pipeline.upscale(image, progress)
        result.plan = plan
        job.target.parent.mkdir(parents=True, exist_ok=True)
        write_image(job.target, upscaled, quality, overwrite=job.existing == "overwrite")
        result.warnings.extend(_format_losses(job.target, upscaled))
        result.output_size = _size(upscaled)
        result.status = "written"
    except OutputExistsError as error:  # another process wrote the target after planning
        result.status, result.error = ("skipped", None) if job.existing == "skip" else ("failed", str(error))
    except (NonFiniteOutputError, OutputTooLargeError) as error:  # the engine's message cannot know the file
        result.status, result.error = "failed", f"{job.source}: {error}"
    except SrcliError as error:
        result.status, result.error = "failed", str(error)
    except OSError as error:  # e.g. the output folder vanished or filled up mid-batch
        result.status, result.error = "failed", f"{job.target}: {error.strerror or error}"
    except Exception as error:  # memory ran out after all (numpy's MemoryError, OpenCV's own): this image only
        if not _out_of_memory(error):
            raise
        result.status, result.error = "failed", f"{job.source}: out of memory ({_first_sentence(error)})"
    result.seconds = time.perf_counter() - started
    return result


def _out_of_memory(error: Exception) -> bool:
    """numpy raises MemoryError; OpenCV a cv2.error whose text names its insufficient-memory status."""
    return isinstance(error, MemoryError) or (
        type(error).__module__.startswith("cv2") and "insufficient memory" in str(error).lower()
    )


def _first_sentence(error: Exception) -> str:
    """'Unable to allocate 5.45 GiB for an array with shape ...' -> up to 'for'; OpenCV's -> its 'Failed ...'."""
    text = " ".join(str(error).split())
    if "Failed to allocate" in text:
        text = text[text.index("Failed to allocate"):].split(" in function")[0]
    return text.split(" for an array")[0] or type(error).__name__


def _format_losses(target: Path, image: np.ndarray) -> list[str]:
    """What the output format could not hold: a transparent image written where alpha does not exist."""
    has_alpha = image.ndim == 3 and image.shape[2] == 4
    if not has_alpha or target.suffix.lower() in ALPHA_EXTENSIONS or image[..., 3].min() == np.iinfo(image.dtype).max:
        return []
    return [f"{target}: {target.suffix.lstrip('.').upper()} has no alpha channel, so transparency was flattened "
            "onto white (use --format png or webp to keep it)"]


def _size(image: np.ndarray) -> tuple[int, int]:
    return int(image.shape[1]), int(image.shape[0])


# --- several processes (torchrun) ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Shard(distributed.Ranks):
    """This process's share of a batch among torchrun's ranks; world 1 when run alone."""

    def take(self, jobs: list[Job]) -> list[Job]:
        """Every world-th job from this rank's index: disjoint slices whose union is the whole list."""
        return jobs[self.rank :: self.world]

    def wait_for_all(self) -> None:
        """Let every rank finish planning before any writes, so no rank sees another's fresh outputs."""
        self.barrier()


def join_shard() -> Shard:
    """Join torchrun's process group when RANK and WORLD_SIZE say there are several processes.

    gloo carries only the small result records, so it serves CPU and GPU runs alike.
    """
    ranks = distributed.environment()
    distributed.start(ranks, "gloo")
    return Shard(ranks.rank, ranks.world, ranks.local_rank)


def gather_results(shard: Shard, results: list[ImageResult]) -> list[ImageResult]:
    """Every rank's results, on every rank, in input order (so all ranks agree on the exit code)."""
    if shard.world == 1:
        return results
    import torch.distributed as dist

    gathered: list[list[ImageResult] | None] = [None] * shard.world
    dist.all_gather_object(gathered, results)
    merged = [result for part in gathered for result in (part or [])]
    return sorted(merged, key=lambda result: result.source)


def leave_shard(shard: Shard) -> None:
    if shard.world > 1:
        distributed.stop()
