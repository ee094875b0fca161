"""`srcli eval`: score a model or bicubic on benchmark sets, with the paper's numbers beside the results."""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich import box
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from srcli.cli.common import Border, Device, Precision, check_placement, console, fail, parse_scales, stdout
from srcli.errors import DownloadError
from srcli.options import UpscaleOptions

if TYPE_CHECKING:
    from srcli.datasets import DatasetSpec
    from srcli.evaluate import SetResult
    from srcli.pipeline import Stage
    from srcli.weights import ResolvedModel


class ProtocolChoice(str, Enum):
    paper = "paper"
    div2k_rgb = "div2k-rgb"


def _resolve_models(
    model: str | None, weights: Path | None, scales: list[int] | None
) -> dict[int, ResolvedModel | None]:
    """One ready network per scale (None for bicubic), all checked before any image is scored.

    No --scale: the model's own scales (x2/x3/x4 for bicubic, MDSR, VDSR and the default model)."""
    from srcli.evaluate import BICUBIC
    from srcli.weights import DEFAULT_SCALES, select_scales

    if model is not None and model.lower() == BICUBIC:
        return dict.fromkeys(scales or DEFAULT_SCALES)
    return dict(select_scales(model, weights, scales))


_RUN_FILES = {"model.pt", "best.pt", "latest.pt"}  # what every `srcli train` run folder holds


def method_label(method: str) -> str:
    """A catalogue name as it is; a file by its name, and a training run's export by its run folder
    (`x2/model.pt`), since every run exports the same `model.pt`."""
    path = Path(method)
    if path.name in _RUN_FILES and path.parent.name:
        return f"{path.parent.name}/{path.name}"
    return path.name


def _results_table(results: list) -> Table:
    columns = sorted({r.reference.column for r in results if r.reference} - {CATALOGUE_COLUMN})
    notes = [f"EDSR paper Table 3, column {', '.join(columns)}"] if columns else []
    if any(r.reference and r.reference.column == CATALOGUE_COLUMN for r in results):
        notes.append("srcli's catalogue (its own measured score, `srcli models`)")
    caption = f"paper: {'; '.join(notes)}" if notes else None
    table = Table(title="srcli eval", caption=caption, box=box.SIMPLE_HEAD, header_style="bold", show_edge=False,
                  collapse_padding=True)
    for title in ("set", "scale", "method", "PSNR", "SSIM", "paper", "Δ PSNR", "s/img"):
        # Only the method (a model name or file) may wrap, so the numbers stay whole in 80 columns.
        table.add_column(title, justify="left" if title in ("set", "method") else "right", no_wrap=title != "method",
                         overflow="fold")
    for result in results:
        ref = result.reference
        method = escape(method_label(result.method)) + (" +ens" if result.ensemble else "")
        table.add_row(
            escape(result.dataset), f"x{result.scale}", method, f"{result.psnr:.3f}", f"{result.ssim:.4f}",
            f"{ref.psnr:.2f}/{ref.ssim:.4f}" if ref else "-",
            f"{result.psnr - ref.psnr:+.3f}" if ref else "-",
            f"{result.seconds / max(len(result.rows), 1):.3f}",
        )
    return table


def _per_image_table(result) -> Table:
    table = Table(title=escape(f"{result.dataset} x{result.scale} {result.method}"), header_style="bold")
    for title in ("image", "PSNR", "SSIM", "seconds"):
        table.add_column(title, justify="left" if title == "image" else "right")
    for row in result.rows:
        name = escape(row.name) + (" (LR made here)" if row.lr_generated else "")
        table.add_row(name, f"{row.psnr:.3f}", f"{row.ssim:.4f}", f"{row.seconds:.3f}")
    return table


_DEFAULTS = UpscaleOptions.for_scoring()

_Sets = Annotated[list[str], typer.Argument(
    metavar="SET", help="Datasets: set5 set14 b100 urban100 div2k-valid div2k-valid10."
)]
_Model = Annotated[str, typer.Option(
    "--model", "-m", help="Catalogue name, checkpoint path or 'bicubic'. Default: srcli's default model."
)]
_Weights = Annotated[Path, typer.Option("--weights", "-w", help="A checkpoint file (any supported layout).")]
_Scale = Annotated[str, typer.Option(
    "--scale", "-s", metavar="2,3,4", help="Scales, comma-separated. Default: the model's own (x2,x3,x4 for most)."
)]
_Pre = Annotated[list[str], typer.Option(
    "--pre", metavar="MODEL_OR_FILE",
    help="A 1x restorer run on each LR image before the model (repeatable); a grey-only one runs on luma.",
)]
_Ensemble = Annotated[bool, typer.Option("--ensemble", help="Geometric self-ensemble x8 (the paper's '+').")]
_PerImage = Annotated[bool, typer.Option("--per-image", help="Also show (and put in --json) every image.")]
_SaveDir = Annotated[Path, typer.Option("--save-dir", help="Save SR images as <dir>/<set>/x<s>/<name>.png.")]
_DataDir = Annotated[Path, typer.Option(
    "--data-dir", help="An existing copy in the benchmark layout (else $SRCLI_DATA, else download)."
)]
_Protocol = Annotated[ProtocolChoice, typer.Option(
    "--protocol", help="paper: Y, shave=scale. div2k-rgb: RGB, shave=scale+6."
)]
_BorderOption = Annotated[Border, typer.Option(
    "--border", help="zero: the papers' padding (published numbers). reflect / replicate: as `srcli upscale` runs.",
)]
_Backend = Annotated[str, typer.Option(
    "--backend", metavar="torch|openvino|auto",
    help="torch (default: scores as published, whatever is installed), openvino (CPU, faster) or auto.",
)]
_Mirror = Annotated[str, typer.Option(
    "--mirror", help="Base URL holding the dataset archives by file name ($SRCLI_DATASET_MIRROR)."
)]
_Json = Annotated[bool, typer.Option("--json", help="Print results as JSON on stdout.")]


def eval_command(
    sets: _Sets,
    model: _Model = None,
    weights: _Weights = None,
    scale: _Scale = None,
    pre: _Pre = None,
    ensemble: _Ensemble = _DEFAULTS.ensemble,
    per_image: _PerImage = False,
    save_dir: _SaveDir = None,
    data_dir: _DataDir = None,
    protocol: _Protocol = ProtocolChoice.paper,
    border: _BorderOption = Border(_DEFAULTS.border),
    device: Device = _DEFAULTS.device,
    precision: Precision = _DEFAULTS.precision,
    backend: _Backend = _DEFAULTS.backend,
    mirror: _Mirror = None,
    as_json: _Json = False,
) -> None:
    """Score super-resolution on benchmark sets exactly as the EDSR paper did (Y channel, shave = scale).

    Several sets and scales in one call; the paper's Table 3 number beside each mean.
    Without --model or --weights: srcli's default model (the one `srcli upscale` uses);
    without --scale: the model's own scales.

    Datasets: --data-dir, $SRCLI_DATA, or downloaded once into srcli's data folder.

    [bold]Examples[/]

      srcli eval set5                        (the default model, x2/x3/x4)

      srcli eval set5 set14 --model bicubic --scale 2,3,4

      srcli eval set5 --weights vdsr.pth --data-dir ~/datasets/benchmark

      srcli eval urban100 --model edsr-x4 --scale 4 --ensemble --json > edsr.json

      srcli eval div2k-valid10 --model edsr-baseline -s 2 --protocol div2k-rgb

      srcli eval set5 --precision bf16     (its cost against the fp32 default)
    """
    from srcli.datasets import dataset_spec
    from srcli.evaluate import BICUBIC
    from srcli.files import check_writable_folder
    from srcli.pipeline import load_restorers

    options = UpscaleOptions.for_scoring(device=device, precision=precision, ensemble=ensemble, border=border.value,
                                         backend=backend)
    check_placement(options)
    if model is not None and weights is not None:
        raise fail("give --model NAME (or 'bicubic') or --weights PATH, not both")
    if ensemble and model is not None and model.lower() == BICUBIC:
        raise fail("--ensemble needs a network; bicubic has nothing to ensemble")
    if pre and model is not None and model.lower() == BICUBIC:
        raise fail("--pre needs a network to upscale after the restorers; bicubic is scored on HR luma alone")
    if save_dir is not None:
        check_writable_folder(save_dir, "--save-dir")
    specs = [dataset_spec(name) for name in dict.fromkeys(sets)]
    stages = load_restorers(pre or [], options)
    networks = _resolve_models(model, weights, parse_scales(scale) if scale else None)
    results = _score(specs, (networks, stages), options, protocol.value, data_dir, save_dir, mirror)
    _render(results, options, protocol, per_image, as_json)


def register(app: typer.Typer) -> None:
    """Add this module's command(s) to the app."""
    app.command("eval")(eval_command)


def _score(specs: list[DatasetSpec], models: tuple[dict[int, ResolvedModel | None], list[Stage]],
           options: UpscaleOptions, protocol: str, data_dir: Path | None, save_dir: Path | None,
           mirror: str | None) -> list[SetResult]:
    """Every set at every scale, with a download bar and a bar per (set, scale); every set checked first."""
    from srcli.datasets import prepare
    from srcli.evaluate import evaluate

    networks, stages = models
    scales = list(networks)
    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[detail]}"),
               TimeElapsedColumn())
    results = []
    with Progress(*columns, console=console, transient=True, disable=not console.is_terminal) as bar:
        download_task = None

        def on_bytes(done: int, total: int | None) -> None:
            nonlocal download_task
            if download_task is None:
                download_task = bar.add_task("downloading", total=total, detail="")
            size = f"/{total / 1e6:.1f}" if total else ""
            bar.update(download_task, completed=done, total=total, detail=f"{done / 1e6:.1f}{size} MB")

        try:
            datasets = [prepare(spec.name, data_dir, on_bytes, scales=tuple(scales), mirror=mirror) for spec in specs]
        except DownloadError as error:
            raise DownloadError(
                f"{error}; pass --data-dir DIR (a copy of the sets) or --mirror URL (a server with the archives)"
            ) from None
        for dataset in datasets:  # every LR folder complete and every size right, before any scoring
            for each_scale in scales:
                dataset.check_scale(each_scale)
        for dataset in datasets:
            for each_scale in scales:
                task = bar.add_task(f"{dataset.name} x{each_scale}", total=len(dataset), detail="")

                def on_image(done: int, total: int, task=task) -> None:
                    bar.update(task, completed=done, total=total, detail=f"{done}/{total} images")

                resolved = networks[each_scale]
                results.append(_with_catalogue_score(evaluate(
                    dataset, each_scale, resolved.model if resolved else None, resolved.spec if resolved else None,
                    method=resolved.name if resolved else None, protocol=protocol, options=options,
                    save_dir=save_dir, progress=on_image, pre=stages,
                ), None if stages else resolved, protocol))  # a chain is not the catalogued model
    return results


CATALOGUE_COLUMN = "srcli"


def _with_catalogue_score(result: SetResult, resolved: ResolvedModel | None, protocol: str) -> SetResult:
    """Where the paper has no number (srcli's own models), the catalogue's measured one, so `paper` is not `-`."""
    from srcli.evaluate import Reference

    entry = resolved.entry if resolved is not None else None
    if result.reference is not None or entry is None or protocol != "paper" or result.ensemble:
        return result
    score = entry.metrics.get(result.dataset, {}).get(result.scale)
    if score is not None and score.ssim is not None:
        result.reference = Reference(CATALOGUE_COLUMN, score.psnr, score.ssim, source="srcli catalogue")
    return result


def _render(results: list[SetResult], options: UpscaleOptions, protocol: ProtocolChoice, per_image: bool,
            as_json: bool) -> None:
    """--json on stdout, or the tables and their notes on stderr."""
    from srcli.evaluate import BICUBIC

    if as_json:
        stdout.print_json(json.dumps({"border": options.border, "results": [r.to_dict(per_image) for r in results]}))
        return
    if per_image:
        for result in results:
            console.print(_per_image_table(result))
    console.print(_results_table(results))
    for reason in dict.fromkeys(r.precision_reason for r in results if r.method != BICUBIC):
        console.print(f"[dim]precision {escape(reason)}[/]", soft_wrap=True)
    if options.border != "zero" and any(r.method != BICUBIC for r in results):
        console.print(f"[dim]border {options.border}: networks saw the image extended past its edges, "
                      "not the papers' zero padding[/]", soft_wrap=True)
    if protocol is ProtocolChoice.paper and any(r.method == BICUBIC for r in results):
        console.print("[dim]bicubic: the classic MATLAB luma pipeline that the published Bicubic column used[/]")
