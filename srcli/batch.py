"""Batches: which files to read, where each result goes, running them one by one, and sharding across ranks.

Nothing here prints; the CLI renders the callbacks and the results.
"""

from __future__ import annotations

import glob
import os
import re
import string
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from srcli import distributed
from srcli.errors import NonFiniteOutputError, OutputError, OutputExistsError, OutputTooLargeError, SrcliError
from srcli.files import check_writable_folder, is_hidden
from srcli.imageio import ALPHA_EXTENSIONS, DEFAULT_MAX_PIXELS, IMAGE_EXTENSIONS, read_image, write_image

if TYPE_CHECKING:  # planning a batch (inputs, names) needs no torch: a mistake is reported before it loads
    from srcli.engine import Plan, ProgressCallback, Upscaled
    from srcli.pipeline import ImagePipeline
    from srcli.weights import ResolvedModel

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
    return path.suffix.lower() in IMAGE_EXTENSIONS and not is_hidden(path)


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
        elif not path.exists():
            problems.append(ImageResult(argument, "", "failed", f"{argument}: no such file"))
            items = []
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


SUFFIX_FIELDS = ("model", "scale", "ensemble")


def check_suffix(template: str | None) -> None:
    """Refuse, before any work, a --suffix that would put outputs in another folder or names an unknown field."""
    if template is None:
        return
    _check_separators(template)
    try:
        fields = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as error:
        raise OutputError(f"--suffix {template!r}: {error} (write {{{{ and }}}} for literal braces)") from None
    unknown = [name for name in fields if name not in SUFFIX_FIELDS]
    if unknown:
        allowed = ", ".join(f"{{{name}}}" for name in SUFFIX_FIELDS)
        raise OutputError(f"--suffix {template!r}: unknown field {{{unknown[0]}}} (use {allowed})")


def _check_separators(suffix: str) -> None:
    if any(separator in suffix for separator in ("/", "\\", os.sep, "\0")):
        raise OutputError(f"--suffix {suffix!r} holds a path separator: it names a file suffix, not a folder "
                          "(use -o FOLDER for where outputs go)")


def output_suffix(template: str | None, label: str, model: str, default_model: bool, ensemble: bool) -> str:
    """The tag after `<stem>_` in output names. Without a template it says what made the output whenever that is
    not the default model's plain run (`x4`, `x4_bicubic`, `x4_ensemble`), so trying a model or the ensemble
    after the default leaves a new file instead of clashing with the first."""
    mark = "ensemble" if ensemble else ""
    if template is None:
        return "_".join(part for part in (f"x{label}", "" if default_model else model, mark) if part)
    check_suffix(template)
    text = template.format(model=model, scale=label, ensemble=mark)
    return re.sub(r"_{2,}", "_", text).strip("_")


def model_tag(resolved: ResolvedModel, scale: int) -> tuple[str, bool]:
    """The model's short name for output names, and whether it is the default one (whose outputs carry no tag).
    A --weights file counts as the default: it is the user's own model, named by the file (`{model}` in --suffix)."""
    from srcli.weights import default_model

    if resolved.entry is None:
        return Path(resolved.name).stem, True
    short = resolved.name.removesuffix(f"-x{scale}")
    return short, resolved.name == default_model(scale)


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
    if suffix:
        _check_separators(suffix)
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

    image_started: Callable[[Job, tuple[int, int] | None], None] | None = None  # (job, (w, h) once read)
    tile_progress: ProgressCallback | None = None
    image_done: Callable[[ImageResult], None] | None = None


# Small images of one size share forwards (Upscaler.upscale_many): read ahead up to this many, of at most this size.
GROUP_IMAGES = 32
GROUP_PIXELS = 256 * 256


def run_jobs(
    jobs: list[Job],
    pipeline: ImagePipeline,
    quality: int | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    callbacks: BatchCallbacks | None = None,
    rank: int = 0,
) -> list[ImageResult]:
    """Upscale each job in turn; a failure is recorded and the batch goes on (Ctrl-C still stops it). Runs of
    small RGB images of one size are read ahead and upscaled in shared forwards; each is still written, reported
    and failed on its own."""
    callbacks = callbacks or BatchCallbacks()
    results = []
    for group in _groups(jobs, max_pixels):
        upscaled, share = _upscale_group(pipeline, [image for _, image in group])
        for (job, image), done in zip(group, upscaled, strict=True):
            if callbacks.image_started:  # the size once read; None where the image's own run will report it
                callbacks.image_started(job, None if image is None else _size(image))
            result = _run_one(job, pipeline, quality, max_pixels, callbacks.tile_progress, image, done)
            result.rank, result.seconds = rank, result.seconds + share
            results.append(result)
            if callbacks.image_done:
                callbacks.image_done(result)
    return results


def _groups(jobs: list[Job], max_pixels: int | None) -> Iterator[list[tuple[Job, np.ndarray | None]]]:
    """Consecutive jobs with their images read ahead, small RGB images of one size together; any other job alone
    (unread where reading failed: its own run reads it again and reports what is wrong with it)."""
    group: list[tuple[Job, np.ndarray | None]] = []
    for job in jobs:
        image = _read_ahead(job, max_pixels)
        groupable = image is not None and image.ndim == 3 and image.shape[2] == 3 and \
            image.shape[0] * image.shape[1] <= GROUP_PIXELS
        if group and (not groupable or len(group) == GROUP_IMAGES or image.shape != group[0][1].shape
                      or image.dtype != group[0][1].dtype):
            yield group
            group = []
        if groupable:
            group.append((job, image))
        else:
            yield [(job, image)]
    if group:
        yield group


def _read_ahead(job: Job, max_pixels: int | None) -> np.ndarray | None:
    if job.skip:
        return None
    try:
        return read_image(job.source, max_pixels)
    except Exception:  # whatever it is, the image's own run reads it again and reports it for this image only
        return None


def _upscale_group(pipeline: ImagePipeline, images: list[np.ndarray | None]) -> tuple[list[Upscaled | None], float]:
    """Shared forwards for a group of equal RGB images (None for each image run on its own), and the seconds
    each image's share took."""
    if len(images) < 2 or any(image is None for image in images):
        return [None] * len(images), 0.0
    started = time.perf_counter()
    try:
        done = pipeline.upscaler.upscale_many(images)
    except Exception:  # run one by one instead, where each image's failure is its own
        done = None
    return done or [None] * len(images), (time.perf_counter() - started) / len(images)


def _run_one(
    job: Job, pipeline: ImagePipeline, quality: int | None, max_pixels: int | None, progress: ProgressCallback | None,
    image: np.ndarray | None = None, upscaled: Upscaled | None = None,
) -> ImageResult:
    result = ImageResult(str(job.source), str(job.target), "skipped")
    if job.skip:
        return result
    started = time.perf_counter()
    try:
        image = read_image(job.source, max_pixels) if image is None else image
        result.input_size = _size(image)
        upscaled, plan = pipeline.upscale(image, progress) if upscaled is None else upscaled
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


def leave_shard(shard: Shard, finished: bool) -> None:
    """Leave torchrun's group; `finished` when this rank ran its share to the end (see distributed.stop)."""
    if shard.world > 1:
        distributed.stop(finished)
