"""`srcli upscale`: files, folders and globs in; upscaled images out, with progress and a summary."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from srcli.cli.common import Border, console, print_error, stdout
from srcli.errors import SrcliError
from srcli.imageio import DEFAULT_MAX_PIXELS

if TYPE_CHECKING:  # the core (and torch) loads when a command runs, never for --help
    from srcli import weights
    from srcli.batch import ImageResult, Job, Shard, Summary
    from srcli.engine import UpscaleOptions, Upscaler

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
    if not value >= 0:
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
    from srcli.cli.models_cmd import download_progress

    if not console.is_terminal:
        return weights.select(model, weights_path, scale, outscale=outscale, mirror=mirror)
    name = model or (weights_path.name if weights_path is not None else "the default model")
    with download_progress() as track:
        return weights.select(model, weights_path, scale, outscale=outscale, mirror=mirror,
                              progress=track(f"downloading {name}"))


def register(app: typer.Typer) -> None:
    """Add this module's command(s) to the app."""

    @app.command("upscale")
    def upscale_command(
        inputs: list[str] = typer.Argument(..., metavar="INPUT", help="Image files, folders or globs."),
        output: Path | None = typer.Option(
            None, "-o", "--output", help="Output file (one input) or folder. Default: beside each input."
        ),
        scale: int | None = typer.Option(
            None, "-s", "--scale", min=1,
            help="Model scale: 2, 3 or 4. Default: the model's own; with --outscale a native one if any; else 4.",
        ),
        model: str | None = typer.Option(None, "-m", "--model", help="Catalogue model name (see `srcli models`)."),
        weights_path: Path | None = typer.Option(
            None, "-w", "--weights", help="A checkpoint file (.pt/.pth, EDSR/MDSR/VDSR; detected from its tensors)."
        ),
        ensemble: bool = typer.Option(
            False, "--ensemble", help="Geometric self-ensemble x8 (EDSR+): a little better, ~8x slower."
        ),
        tile: int | None = typer.Option(
            None, "--tile", min=0, help="Tile size in input pixels; 0 = whole image. Default: from free memory."
        ),
        tile_pad: int | None = typer.Option(
            None, "--tile-pad", min=0, help="Tile overlap. Default: the network's receptive field (exact output)."
        ),
        batch: int | None = typer.Option(
            None, "--batch", min=1, help="Tiles per forward pass. Default: as many as free memory allows."
        ),
        border: Border = typer.Option(
            Border.reflect, "--border",
            help="Extend the image past its edges before the network: reflect (clean borders), replicate, "
            "or zero (the papers' padding: darkened edges).",
        ),
        device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N or mps."),
        precision: str = typer.Option("auto", "--precision", help="auto, fp32, fp16 or bf16 (fp16/bf16: GPU only)."),
        backend: str = typer.Option(
            "auto", "--backend", help="auto (OpenVINO on the CPU when srcli\\[openvino] is installed), torch, openvino."
        ),
        outscale: float | None = typer.Option(
            None, "--outscale", min=1.0,
            help="Final scale, e.g. 3.5: a native model when one exists, else the next scale up and a resize.",
        ),
        output_format: str | None = typer.Option(
            None, "-f", "--format", help="Output format: png, jpg, webp, bmp, tif. Default: the input's."
        ),
        quality: int | None = typer.Option(
            None, "-q", "--quality", min=1, max=100, help="JPEG/WebP quality (1-100); WebP without it is lossless."
        ),
        suffix: str | None = typer.Option(
            None, "--suffix", help="Output names <stem>_<suffix>.<ext> instead of <stem>_x<scale>.<ext>."
        ),
        recursive: bool = typer.Option(False, "-r", "--recursive", help="Include images in sub-folders."),
        skip_existing: bool = typer.Option(False, "--skip-existing", help="Leave outputs that already exist."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace outputs that already exist (never inputs)."),
        max_pixels: str = typer.Option(
            f"{DEFAULT_MAX_PIXELS // 1_000_000}M", "--max-pixels", help="Refuse larger inputs (300M, 1G; 0: none)."
        ),
        mirror: str | None = typer.Option(
            None, "--mirror", metavar="URL", help="Mirror for catalogue downloads (default $SRCLI_MIRROR)."
        ),
        as_json: bool = typer.Option(False, "--json", help="Print a machine-readable result on stdout."),
        verbose: bool = typer.Option(
            False, "-v", "--verbose", help="Show how the engine ran each image: device, precision, tile, batch."
        ),
    ) -> None:
        """Upscale images with an EDSR, MDSR or VDSR model (default: srcli's embedded model for the scale).

        Outputs are named [bold]<stem>_x<scale>.<ext>[/]: beside each input file,
        in [bold]<folder>_x<scale>/[/] for a folder, or under [bold]-o[/].
        Existing outputs are never replaced silently, and inputs never.

        [bold]Examples[/]

          srcli upscale photo.png --scale 4 -v     (-> photo_x4.png; -v: the plan)

          srcli upscale photo.jpg --weights edsr_x4.pt   (scale from the file)

          srcli upscale photos/ -r -o big/ --model edsr-baseline-x2 --skip-existing

          srcli upscale "scans/*.tif" --scale 2 --ensemble --json > report.json

          torchrun --nproc-per-node 4 -m srcli upscale huge/ -o out/   (a share each)
        """
        from srcli.batch import join_shard, leave_shard
        from srcli.engine import UpscaleOptions

        if skip_existing and overwrite:
            raise SrcliError("--skip-existing and --overwrite contradict each other: pick one")
        pixel_limit = parse_pixels(max_pixels) or None
        check_device(device, precision, backend)
        shard = join_shard()
        try:
            resolved, scale = resolve_model(model, weights_path, scale, mirror, outscale)
            code = _upscale(
                shard,
                inputs,
                output,
                resolved,
                scale,
                UpscaleOptions(
                    device=_shard_device(device, shard),
                    precision=precision,
                    tile=tile,
                    tile_pad=tile_pad,
                    ensemble=ensemble,
                    outscale=outscale,
                    batch=batch,
                    border=border.value,
                    backend=backend,
                ),
                output_format,
                quality,
                recursive,
                suffix,
                "skip" if skip_existing else "overwrite" if overwrite else "refuse",
                pixel_limit,
                as_json,
                verbose,
            )
        except KeyboardInterrupt:
            # Handled here so the exit status is 130 whatever the framework does with KeyboardInterrupt.
            console.print("[yellow]interrupted[/]: finished images are kept; no partial file was left behind")
            code = 130
        finally:
            leave_shard(shard)
        if code:
            raise SystemExit(code)


def check_device(device: str, precision: str, backend: str = "auto") -> None:
    """Refuse an absent device, a precision that cannot help or a backend that cannot run, before any input is
    looked at."""
    from srcli.engine import choose_backend, choose_device, choose_dtype, refuse_cpu_half

    chosen = choose_device(device)
    dtype = choose_dtype(precision, chosen)
    refuse_cpu_half(chosen, precision)
    choose_backend(backend, chosen, dtype)


def _shard_device(device: str, shard: Shard) -> str:
    """Under torchrun with GPUs, each local rank takes its own GPU."""
    from srcli.engine import choose_device

    if device != "auto" or shard.world == 1:
        return device
    return str(choose_device("auto", local_rank=shard.local_rank))


def _upscale(
    shard: Shard,
    inputs: list[str],
    output: Path | None,
    resolved: weights.ResolvedModel,
    scale: int,
    options: UpscaleOptions,
    output_format: str | None,
    quality: int | None,
    recursive: bool,
    suffix: str | None,
    existing: str,
    max_pixels: int | None,
    as_json: bool,
    verbose: bool = False,
) -> int:
    from srcli.batch import (
        BatchCallbacks,
        Summary,
        collect_inputs,
        gather_results,
        plan_jobs,
        run_jobs,
        scale_label,
    )
    from srcli.engine import Upscaler, precision_name
    from srcli.pipeline import ImagePipeline

    started = time.perf_counter()
    found, problems = collect_inputs(inputs, recursive)
    label = scale_label(options.outscale or scale)
    jobs = plan_jobs(found, output, label, output_format, existing, suffix)
    shard.wait_for_all()
    upscaler = Upscaler(resolved.model, scale, options, spec=resolved.spec)
    pipeline = ImagePipeline(upscaler)
    device = f"{upscaler.device} {precision_name(upscaler.dtype)} {upscaler.backend}"
    mine = shard.take(jobs)
    lone = len(jobs) + len(problems) == 1
    if shard.rank == 0:
        for problem in problems:
            _report_failure(problem)
        if not lone:
            where = f", {shard.world} processes" if shard.world > 1 else ""
            note = _resize_note(scale, label)
            resize = f" ({note})" if note else ""
            model = escape(Path(resolved.name).name)
            heading = f"upscaling {len(jobs)} image(s) x{label} with {model}{resize} on {device}{where}"
            console.print(heading, soft_wrap=True)

    with _progress(len(mine)) as progress:
        images = progress.add_task("images", total=len(mine))
        tiles = progress.add_task("", total=None, visible=False)

        def started_image(job: Job) -> None:
            progress.reset(tiles, total=None, description=job.source.name, visible=True)

        def tile_done(done: int, total: int) -> None:
            progress.update(tiles, completed=done, total=total)

        def finished_image(result: ImageResult) -> None:
            progress.update(tiles, visible=False)
            progress.advance(images)
            if not lone and not console.is_terminal:  # logs and pipes: one line per image instead of a bar
                _report_line(result)
            shown = result.status == "written" and result.plan is not None and not lone
            if shown and (verbose or _plan_note(result.plan)):
                progress.console.print(f"{escape(result.source)}: {_plan_text(result.plan)}", soft_wrap=True)
            if result.status == "failed":
                _report_failure(result)
            for warning in result.warnings:
                progress.console.print(f"[yellow]warning:[/] {escape(warning)}", soft_wrap=True, highlight=False)

        callbacks = BatchCallbacks(started_image, tile_done, finished_image)
        results = run_jobs(mine, pipeline, quality, max_pixels, callbacks, rank=shard.rank)

    summary = Summary(gather_results(shard, results) + (problems if shard.rank == 0 else []))
    summary.seconds = time.perf_counter() - started
    if shard.rank == 0:
        if as_json:
            stdout.print_json(json.dumps(_json(summary, resolved.name, scale, label, upscaler, shard)))
        if lone:
            _report_single(summary.results[0], Path(resolved.name).name, verbose, _resize_note(scale, label))
        else:
            console.print(_summary_table(summary))
            destination = _destination(summary)
            if destination:
                console.print(destination, soft_wrap=True, markup=False)
    return 1 if summary.count("failed") else 0


def _progress(total: int) -> Progress:
    """Bars only on a terminal: logs and pipes get the summary, not a stream of redraws."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    )


def _report_line(result: ImageResult) -> None:
    """One finished image, for logs: name, sizes and seconds (failures have their own error line)."""
    if result.status == "written" and result.input_size and result.output_size:
        (w, h), (ow, oh) = result.input_size, result.output_size
        console.print(f"{result.source} -> {result.target} ({w}x{h} -> {ow}x{oh}, {result.seconds:.1f} s)",
                      soft_wrap=True, markup=False)
    elif result.status == "skipped":
        console.print(f"skipped {result.source}: {result.target} exists", soft_wrap=True, markup=False)


def _destination(summary: Summary) -> str:
    """Where the outputs went: one folder, or how many under which common folder."""
    folders = sorted({str(Path(r.target).parent) for r in summary.results if r.status == "written"})
    if not folders:
        return ""
    if len(folders) == 1:
        return f"outputs in {folders[0]}{os.sep}"
    return f"outputs in {len(folders)} folders under {os.path.commonpath(folders)}{os.sep}"


def _report_failure(result: ImageResult) -> None:
    print_error(result.error or "failed")


def _plan_note(plan: dict) -> str:
    """What a user should hear about even without --verbose: the engine had to change its plan."""
    notes = []
    if plan["backoffs"]:
        notes.append(f"{plan['backoffs']} out-of-memory back-off(s)")
    if plan["fp32_fallbacks"]:
        notes.append(f"{plan['fp32_fallbacks']} batch(es) redone in fp32 after NaN/Inf")
    return ", ".join(notes)


def _plan_text(plan: dict) -> str:
    tiles = f"{plan['tiles']} tiles of {plan['tile']} px + {plan['tile_pad']} pad"
    if plan.get("tiling") == "approximate":
        tiles += ", approximate tiling (cross-faded: this network's tiles cannot be exact)"
    tile = "whole image" if plan["tiles"] == 1 else tiles
    if plan["tiles"] > 1:
        tile += f", overlap {plan['overlap']:.2f}x"
    text = f"{_engine_label(plan)}, {tile}, batch {plan['batch']}"
    note = _plan_note(plan)
    return f"{text}; [yellow]{note}[/]" if note else text


def _resize_note(scale: int, label: str) -> str:
    """Said whenever the final size is not the model's own: the user should know a resize was involved."""
    return "" if label == str(scale) else f"x{scale} model + resize to x{label}"


def _engine_label(plan: dict) -> str:
    return f"{plan['device']} {plan['precision']} {plan['backend']}"


def _report_single(result: ImageResult, model: str, verbose: bool, resize: str = "") -> None:
    if result.status == "written" and result.input_size and result.output_size:
        (w, h), (ow, oh) = result.input_size, result.output_size
        plan = result.plan or {}
        where = f" on {_engine_label(plan)}" if plan else ""
        resize = f", {resize}" if resize else ""
        console.print(
            f"wrote {escape(result.target)} ({w}x{h} -> {ow}x{oh}, {escape(model)}{where}{resize}, "
            f"{result.seconds:.1f} s)",
            soft_wrap=True,
        )
        if plan and (verbose or _plan_note(plan)):
            console.print(f"engine: {_plan_text(plan)}", soft_wrap=True)
    elif result.status == "skipped":
        console.print(f"skipped {escape(result.source)}: {escape(result.target)} exists", soft_wrap=True)


def _summary_table(summary: Summary) -> Table:
    table = Table(title="upscale summary", title_justify="left")
    for column in ("written", "skipped", "failed", "MP in", "MP out", "seconds", "MP out/s"):
        table.add_column(column, justify="right")
    rate = summary.megapixels_out / summary.seconds if summary.seconds else 0.0
    failed = summary.count("failed")
    table.add_row(
        str(summary.count("written")),
        str(summary.count("skipped")),
        f"[red]{failed}[/]" if failed else "0",
        f"{summary.megapixels_in:.2f}",
        f"{summary.megapixels_out:.2f}",
        f"{summary.seconds:.1f}",
        f"{rate:.2f}",
    )
    return table


def _json(summary: Summary, model: str, scale: int, label: str, upscaler: Upscaler, shard: Shard) -> dict:
    from srcli.engine import precision_name

    return {
        "model": model,
        "scale": scale,
        "output_scale": label,
        "device": str(upscaler.device),
        "precision": precision_name(upscaler.dtype),
        "backend": upscaler.backend,
        "ensemble": upscaler.options.ensemble,
        "processes": shard.world,
        "written": summary.count("written"),
        "skipped": summary.count("skipped"),
        "failed": summary.count("failed"),
        "megapixels_in": round(summary.megapixels_in, 6),
        "megapixels_out": round(summary.megapixels_out, 6),
        "seconds": round(summary.seconds, 3),
        "images": [result.to_json() for result in summary.results],
    }
