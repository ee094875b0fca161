"""`srcli upscale`: files, folders and globs in; upscaled images out, with progress and a summary."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from srcli.cli import common
from srcli.cli.common import (
    Border,
    Device,
    Precision,
    check_placement,
    console,
    download_progress,
    finite,
    stdout,
)
from srcli.cli.hints import jpeg_note
from srcli.cli.upscale_view import (
    json_report,
    outputs_went,
    plan_note,
    plan_text,
    progress_bars,
    report_failure,
    report_line,
    report_single,
    resize_note,
    start_line,
    summary_table,
)
from srcli.errors import SrcliError
from srcli.limits import DEFAULT_MAX_PIXELS
from srcli.options import UpscaleOptions

if TYPE_CHECKING:  # the core (and torch) loads when a command runs, never for --help
    from srcli import weights
    from srcli.batch import Found, ImageResult, Job, Shard, Summary
    from srcli.engine import Upscaler
    from srcli.pipeline import ImagePipeline, Stage

_UNITS = {"k": 1e3, "m": 1e6, "mp": 1e6, "g": 1e9, "gp": 1e9}


def parse_pixels(text: str) -> int:
    """'120M', '1.5G', '5000000' -> a pixel count; 0 means no limit."""
    cleaned = text.strip().lower()
    number = cleaned.rstrip("kmgp")
    unit = cleaned[len(number) :]
    try:
        value = float(number) * _UNITS.get(unit, 1.0 if not unit else float("nan"))
    except ValueError:
        value = float("nan")
    if not 0 <= value < float("inf"):
        raise SrcliError(f"--max-pixels {text!r} is not a pixel count (examples: 120M, 1.5G, 5000000)")
    return int(value)


def resolve_model(
    model: str | None,
    weights_path: Path | None,
    scale: int | None,
    mirror: str | None = None,
    outscale: float | None = None,
) -> tuple[weights.ResolvedModel, int]:
    """weights.select, with a byte bar while a catalogue file downloads on a terminal (logs and pipes need none)."""
    from srcli import weights

    if not console.is_terminal:
        return weights.select(model, weights_path, scale, outscale=outscale, mirror=mirror)
    name = model or (weights_path.name if weights_path is not None else "the default model")
    with download_progress() as track:
        return weights.select(model, weights_path, scale, outscale=outscale, mirror=mirror,
                              progress=track(f"downloading {name}"))


_DEFAULTS = UpscaleOptions.for_upscale()

_Inputs = Annotated[list[str], typer.Argument(metavar="INPUT", help="Image files, folders or globs.")]
_Output = Annotated[Path | None, typer.Option(
    "-o", "--output", help="Output file (one input) or folder. Default: beside each input."
)]
_Scale = Annotated[int | None, typer.Option(
    "-s", "--scale", metavar="2|3|4",
    help="Model scale: 2, 3 or 4. Default: the model's own; with --outscale a native one if any; else 4.",
)]
_Model = Annotated[str | None, typer.Option("-m", "--model", help="Catalogue model name (see `srcli models`).")]
_Weights = Annotated[Path | None, typer.Option(
    "-w", "--weights",
    help="Any supported model file (.pt/.pth/.safetensors: srcli's own, or a zoo architecture spandrel reads; "
    "detected from its tensors).",
)]
_Pre = Annotated[list[str] | None, typer.Option(
    "--pre", metavar="MODEL_OR_FILE",
    help="A 1x restorer (deJPEG, denoise, deblur: a catalogue name or file) run before the upscaler; "
    "repeat for several, in order. A grey-only model runs on luma (Y), chroma kept.",
)]
_Ensemble = Annotated[bool, typer.Option(
    "--ensemble", help="Geometric self-ensemble x8 (EDSR+): a little better; 8 passes, whole runs ~4-5x slower."
)]
_Tile = Annotated[int | None, typer.Option(
    "--tile", min=0, help="Tile size in input pixels; 0 = whole image. Default: from free memory."
)]
_TilePad = Annotated[int | None, typer.Option(
    "--tile-pad", min=0, help="Tile overlap. Default: the network's receptive field (exact output)."
)]
_Batch = Annotated[int | None, typer.Option(
    "--batch", min=1, help="Tiles per forward pass. Default: as many as free memory allows."
)]
_BorderOption = Annotated[Border, typer.Option(
    "--border",
    help="Extend the image past its edges before the network: reflect (clean borders), replicate, "
    "or zero (the papers' padding: darkened edges).",
)]
_Backend = Annotated[str, typer.Option(
    "--backend", metavar="auto|torch|openvino",
    help="auto (OpenVINO on the CPU when srcli\\[openvino] is installed), torch, openvino."
)]
_Outscale = Annotated[float | None, typer.Option(
    "--outscale", min=1.0, parser=finite(low=1.0),
    help="Final scale, e.g. 3.5: a native model when one exists, else the next scale up and a resize.",
)]
_Format = Annotated[str | None, typer.Option(
    "-f", "--format", metavar="png|jpg|webp|bmp|tif",
    help="Output format: png, jpg, webp, bmp, tif. Default: the input's."
)]
_Quality = Annotated[int | None, typer.Option(
    "-q", "--quality", min=1, max=100, help="JPEG/WebP quality (1-100); WebP without it is lossless."
)]
_Suffix = Annotated[str | None, typer.Option(
    "--suffix", metavar="TEXT",
    help="Output names <stem>_<suffix>.<ext>; may hold {model}, {scale}, {ensemble} (e.g. '{model}_x{scale}'). "
    "Default: x<scale>, then the model's name when it is not the default, then 'ensemble' with --ensemble.",
)]
_Recursive = Annotated[bool, typer.Option("-r", "--recursive", help="Include images in sub-folders.")]
_SkipExisting = Annotated[bool, typer.Option("--skip-existing", help="Leave outputs that already exist.")]
_Overwrite = Annotated[bool, typer.Option(
    "--overwrite", help="Replace outputs that already exist (never inputs)."
)]
_MaxPixels = Annotated[str, typer.Option("--max-pixels", help="Refuse larger inputs (300M, 1G; 0: none).")]
_Mirror = Annotated[str | None, typer.Option(
    "--mirror", metavar="URL", help="Mirror for catalogue downloads (default $SRCLI_MIRROR)."
)]
_Json = Annotated[bool, typer.Option("--json", help="Print a machine-readable result on stdout.")]
_Verbose = Annotated[bool, typer.Option(
    "-v", "--verbose", help="Show how the engine ran each image: device, precision, tile, batch."
)]


@dataclass
class _Outputs:
    """What the command line says about outputs and rendering, beside the engine's options."""

    output: Path | None
    output_format: str | None
    quality: int | None
    recursive: bool
    suffix: str | None
    existing: str  # refuse | skip | overwrite
    max_pixels: int | None
    as_json: bool
    verbose: bool


def upscale_command(
    inputs: _Inputs,
    output: _Output = None,
    scale: _Scale = None,
    model: _Model = None,
    weights_path: _Weights = None,
    pre: _Pre = None,
    ensemble: _Ensemble = _DEFAULTS.ensemble,
    tile: _Tile = _DEFAULTS.tile,
    tile_pad: _TilePad = _DEFAULTS.tile_pad,
    batch: _Batch = _DEFAULTS.batch,
    border: _BorderOption = Border(_DEFAULTS.border),
    device: Device = _DEFAULTS.device,
    precision: Precision = _DEFAULTS.precision,
    backend: _Backend = _DEFAULTS.backend,
    outscale: _Outscale = _DEFAULTS.outscale,
    output_format: _Format = None,
    quality: _Quality = None,
    suffix: _Suffix = None,
    recursive: _Recursive = False,
    skip_existing: _SkipExisting = False,
    overwrite: _Overwrite = False,
    max_pixels: _MaxPixels = f"{DEFAULT_MAX_PIXELS // 1_000_000}M",
    mirror: _Mirror = None,
    as_json: _Json = False,
    verbose: _Verbose = False,
) -> None:
    """Upscale images with any supported model file or catalogue model (default: srcli's embedded model for the scale).

    Outputs are named [bold]<stem>_x<scale>.<ext>[/] (plus [bold]_<model>[/] for a model other than the
    default and [bold]_ensemble[/] with --ensemble): beside each input file,
    in [bold]<folder>_x<scale>/[/] for a folder, or under [bold]-o[/].
    Existing outputs are never replaced silently, and inputs never.

    srcli's own models undo [bold]bicubic downscaling[/], not JPEG artefacts or noise: for real photos use a
    real-world model (`srcli models`: --model realesr-general-x4v3) or restore first (--pre).

    [bold]Examples[/]

      srcli upscale photo.png --scale 4 -v     (-> photo_x4.png; -v: the plan)

      srcli upscale photo.jpg --weights edsr_x4.pt   (scale from the file)

      srcli upscale photos/ -r -o big/ --model edsr-baseline-x2 --skip-existing

      srcli upscale photo.jpg --pre dncnn.pth -v   (denoise at 1x, then upscale)

      srcli upscale "scans/*.tif" --scale 2 --ensemble --json > report.json

      torchrun --nproc-per-node 4 -m srcli upscale huge/ -o out/   (a share each)
    """
    from srcli.batch import check_suffix, collect_inputs  # torch-free: mistakes are reported before torch loads

    if skip_existing and overwrite:
        raise SrcliError("--skip-existing and --overwrite contradict each other: pick one")
    if scale is not None and scale < 1:
        raise SrcliError(f"--scale {scale} is not a model scale: use 2, 3 or 4 (--outscale for other final sizes)")
    check_suffix(suffix)
    common.refuse_flag_values(inputs)
    found, problems = collect_inputs(inputs, recursive)
    if not found:
        for problem in problems:
            report_failure(problem)
        raise SystemExit(1)
    outputs = _Outputs(output, output_format, quality, recursive, suffix,
                       "skip" if skip_existing else "overwrite" if overwrite else "refuse",
                       parse_pixels(max_pixels) or None, as_json, verbose)
    options = UpscaleOptions.for_upscale(device=device, precision=precision, tile=tile, tile_pad=tile_pad,
                                         ensemble=ensemble, outscale=outscale, batch=batch, border=border.value,
                                         backend=backend)
    check_placement(options)
    code = _upscale_sharded((found, problems), (model, weights_path, pre or []), scale, mirror, options, outputs)
    if code:
        raise SystemExit(code)


def register(app: typer.Typer) -> None:
    """Add this module's command(s) to the app."""
    app.command("upscale")(upscale_command)


def _upscale_sharded(inputs: tuple[list[Found], list[ImageResult]], models: tuple[str | None, Path | None, list[str]],
                     scale: int | None, mirror: str | None, options: UpscaleOptions, outputs: _Outputs) -> int:
    """Resolve the models (--model/--weights and each --pre) and run this process's share of the inputs; the
    exit code."""
    from srcli.batch import join_shard, leave_shard
    from srcli.pipeline import restorer

    model, weights_path, pre = models
    shard = join_shard()
    finished = False
    try:
        options = replace(options, device=_shard_device(options.device, shard))
        stages = [restorer(*resolve_model(name, None, None, mirror), options) for name in pre]
        resolved, scale = resolve_model(model, weights_path, scale, mirror, options.outscale)
        code = _upscale(shard, inputs, (resolved, stages), scale, options, outputs)
        finished = True
        return code
    except KeyboardInterrupt:
        # Handled here so the exit status is 130 whatever the framework does with KeyboardInterrupt.
        console.print("[yellow]interrupted[/]: finished images are kept; no partial file was left behind. "
                      "Run the same command with --skip-existing to do the rest", soft_wrap=True)
        return 130
    finally:
        leave_shard(shard, finished)


def _shard_device(device: str, shard: Shard) -> str:
    """Under torchrun with GPUs, each local rank takes its own GPU."""
    from srcli.engine import choose_device

    if device != "auto" or shard.world == 1:
        return device
    return str(choose_device("auto", local_rank=shard.local_rank))


def _upscale(shard: Shard, inputs: tuple[list[Found], list[ImageResult]],
             models: tuple[weights.ResolvedModel, list[Stage]], scale: int, options: UpscaleOptions,
             outputs: _Outputs) -> int:
    """Plan the outputs, run the batch, render the summary: the exit code."""
    from srcli.batch import Summary, gather_results, model_tag, output_suffix, plan_jobs, scale_label
    from srcli.engine import Upscaler
    from srcli.pipeline import ImagePipeline

    resolved, stages = models
    started = time.perf_counter()
    found, problems = inputs
    label = scale_label(options.outscale or scale)
    model_name, default = model_tag(resolved, scale)
    suffix = output_suffix(outputs.suffix, label, model_name, default, options.ensemble)
    jobs = plan_jobs(found, outputs.output, label, outputs.output_format, outputs.existing, suffix)
    shard.wait_for_all()
    upscaler = Upscaler(resolved.model, scale, options, spec=resolved.spec)
    pipeline = ImagePipeline(upscaler, stages, resolved.name)
    mine = shard.take(jobs)
    lone = len(jobs) + len(problems) == 1
    if shard.rank == 0:
        for problem in problems:
            report_failure(problem)
        if note := jpeg_note((job.source for job in jobs), resolved.entry, scale):
            console.print(f"[yellow]note:[/] {escape(note)}", soft_wrap=True, highlight=False)
        if not lone:
            _announce(len(jobs), label, scale, pipeline.chain.label, upscaler, shard)
    results = _run_with_progress(mine, pipeline, outputs, lone, shard)
    summary = Summary(gather_results(shard, results) + (problems if shard.rank == 0 else []))
    summary.seconds = time.perf_counter() - started
    if shard.rank == 0:
        _render(summary, resolved.name, scale, label, pipeline, shard, outputs, lone)
    return 1 if summary.count("failed") else 0


def _announce(count: int, label: str, scale: int, model: str, upscaler: Upscaler, shard: Shard) -> None:
    """The heading of a run over several images: how many, at what scale, with what, where."""
    where = f", {shard.world} processes" if shard.world > 1 else ""
    note = resize_note(scale, label)
    resize = f" ({note})" if note else ""
    heading = f"upscaling {count} image(s) x{label} with {escape(model)}{resize} on {_engine(upscaler)}"
    console.print(heading + where, soft_wrap=True)


def _engine(upscaler: Upscaler) -> str:

    return f"{upscaler.device} {upscaler.placement.precision} {upscaler.backend}"


def _run_with_progress(mine: list[Job], pipeline: ImagePipeline, outputs: _Outputs, lone: bool,
                       shard: Shard) -> list[ImageResult]:
    """Run this process's jobs with a bar per image and per tile; a line per image where there is no bar."""
    from srcli.batch import BatchCallbacks, run_jobs

    upscaler = pipeline.upscaler
    with progress_bars(len(mine)) as progress:
        images = progress.add_task("images", total=len(mine))
        tiles = progress.add_task("", total=None, visible=False)

        def started_image(job: Job, size: tuple[int, int] | None) -> None:
            progress.reset(tiles, total=None, description=job.source.name, visible=True)
            if outputs.verbose:  # the plan as far as it is known before the work; the tiles follow with the result
                tile = "auto" if upscaler.options.tile is None else upscaler.options.tile
                progress.console.print(f"{escape(str(job.source))}: x{upscaler.scale} on {_engine(upscaler)}, "
                                       f"tile {tile}...", soft_wrap=True)
            elif not console.is_terminal:
                start_line(job, size, upscaler.scale)

        def tile_done(done: int, total: int) -> None:
            progress.update(tiles, completed=done, total=total)

        def finished_image(result: ImageResult) -> None:
            progress.update(tiles, visible=False)
            progress.advance(images)
            if not lone and not console.is_terminal:  # logs and pipes: one line per image instead of a bar
                report_line(result)
            shown = result.status == "written" and result.plan is not None and not lone
            if shown and (outputs.verbose or plan_note(result.plan)):
                progress.console.print(f"{escape(result.source)}: {plan_text(result.plan)}", soft_wrap=True)
            if result.status == "failed":
                report_failure(result)
            for warning in result.warnings:
                progress.console.print(f"[yellow]warning:[/] {escape(warning)}", soft_wrap=True, highlight=False)

        callbacks = BatchCallbacks(started_image, tile_done, finished_image)
        return run_jobs(mine, pipeline, outputs.quality, outputs.max_pixels, callbacks, rank=shard.rank)


def _render(summary: Summary, model: str, scale: int, label: str, pipeline: ImagePipeline, shard: Shard,
            outputs: _Outputs, lone: bool) -> None:
    """--json on stdout; the one image's line or the summary table on stderr."""
    if outputs.as_json:
        stdout.print_json(json.dumps(json_report(summary, model, scale, label, pipeline, shard)))
    if lone:
        made_by = pipeline.chain.label + (", --ensemble x8" if pipeline.upscaler.options.ensemble else "")
        report_single(summary.results[0], made_by, outputs.verbose, resize_note(scale, label))
        return
    console.print(summary_table(summary))
    where = outputs_went(summary)
    if where:
        console.print(where, soft_wrap=True, markup=False)
