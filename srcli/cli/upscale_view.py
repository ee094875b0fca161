"""How `srcli upscale` shows a run: progress bars, per-image lines, the plan, the summary table and --json."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

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

from srcli.cli.common import console, print_error

if TYPE_CHECKING:
    from srcli.batch import ImageResult, Job, Shard, Summary
    from srcli.engine import Plan
    from srcli.pipeline import ImagePipeline


def progress_bars(total: int) -> Progress:
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


START_LINE_PIXELS = 1_000_000  # inputs from here on take seconds or more: logs say when one begins


def start_line(job: Job, size: tuple[int, int] | None, scale: int) -> None:
    """Logs and pipes have no bar: a large image gets a line when it starts, so a long silence is explained. Only
    an image that was read (`size`, width x height): one that cannot be read gets its one error line instead."""
    if size is None or size[0] * size[1] < START_LINE_PIXELS:
        return
    console.print(f"upscaling {job.source} ({size[0]}x{size[1]}, x{scale} model)...", soft_wrap=True, markup=False)


def report_line(result: ImageResult) -> None:
    """One finished image, for logs: name, sizes and seconds (failures have their own error line)."""
    if result.status == "written" and result.input_size and result.output_size:
        (w, h), (ow, oh) = result.input_size, result.output_size
        console.print(f"{result.source} -> {result.target} ({w}x{h} -> {ow}x{oh}, {result.seconds:.1f} s)",
                      soft_wrap=True, markup=False)
    elif result.status == "skipped":
        console.print(f"skipped {result.source}: {result.target} exists", soft_wrap=True, markup=False)


def outputs_went(summary: Summary) -> str:
    """Where the outputs went: one folder, or how many under which common folder."""
    folders = sorted({str(Path(r.target).parent) for r in summary.results if r.status == "written"})
    if not folders:
        return ""
    if len(folders) == 1:
        return f"outputs in {folders[0]}{os.sep}"
    return f"outputs in {len(folders)} folders under {os.path.commonpath(folders)}{os.sep}"


def report_failure(result: ImageResult) -> None:
    print_error(result.error or "failed")


def plan_note(plan: Plan) -> str:
    """What a user should hear about even without --verbose: the engine had to change its plan."""
    notes = []
    if plan.backoffs:
        notes.append(f"{plan.backoffs} out-of-memory back-off(s)")
    if plan.fallbacks:
        notes.append(f"{plan.fallbacks} batch(es) redone in fp32 after NaN/Inf")
    if plan.backend_fallback:
        notes.append(f"ran on torch: {plan.backend_fallback}")
    return ", ".join(notes)


def plan_text(plan: Plan) -> str:
    """How the engine ran: the upscaler's plan, or each stage's in turn for a chain (--pre)."""
    stages = getattr(plan, "stages", None)
    if not stages:
        return stage_text(plan)
    return " -> ".join(f"{escape(stage.label)}: {stage_text(each)}" for stage, each in stages)  # own notes each


def stage_text(plan: Plan) -> str:
    tiles = f"{plan.tiles} tiles of {plan.tile} px + {plan.pad} pad"
    if plan.tiling == "approximate":
        tiles += ", approximate tiling (cross-faded: this network's tiles cannot be exact)"
        if plan.measured_pad is not None and plan.measured_levels is not None:
            tiles += f", pad measured: probe tiles within {plan.measured_levels:g} levels of whole"
    tile = "whole image" if plan.tiles == 1 else tiles
    if plan.tiles > 1:
        tile += f", overlap {round(plan.overlap, 3):.2f}x"
    text = f"{engine_label(plan)}, {tile}, batch {plan.forward_batch}"
    if plan.precision_reason:
        text += f", {plan.precision_reason}"
    note = plan_note(plan)
    return f"{text}; [yellow]{note}[/]" if note else text


def resize_note(scale: int, label: str) -> str:
    """Said whenever the final size is not the model's own: the user should know a resize was involved."""
    return "" if label == str(scale) else f"x{scale} model + resize to x{label}"


def engine_label(plan: Plan) -> str:
    return f"{plan.device} {plan.precision} {plan.backend}"


def report_single(result: ImageResult, model: str, verbose: bool, resize: str = "") -> None:
    if result.status == "written" and result.input_size and result.output_size:
        (w, h), (ow, oh) = result.input_size, result.output_size
        plan = result.plan
        # bicubic is a resize, whatever device and backend carried it: naming them would suggest a network ran
        where = f" on {engine_label(plan)}" if plan and not model.startswith("bicubic") else ""
        resize = f", {resize}" if resize else ""
        console.print(
            f"wrote {escape(result.target)} ({w}x{h} -> {ow}x{oh}, {escape(model)}{where}{resize}, "
            f"{result.seconds:.1f} s)",
            soft_wrap=True,
        )
        if plan and (verbose or plan_note(plan)):
            console.print(f"engine: {plan_text(plan)}", soft_wrap=True)
    elif result.status == "skipped":
        console.print(f"skipped {escape(result.source)}: {escape(result.target)} exists", soft_wrap=True)


def summary_table(summary: Summary) -> Table:
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


def json_report(summary: Summary, model: str, scale: int, label: str, pipeline: ImagePipeline, shard: Shard) -> dict:

    upscaler = pipeline.upscaler
    return {
        "model": model,
        "stages": [stage.to_dict() for stage in pipeline.chain.stages],
        "scale": scale,
        "output_scale": float(label) if "." in label else int(label),
        "device": str(upscaler.device),
        "precision": upscaler.placement.precision,
        "precision_reason": upscaler.placement.reason,
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
