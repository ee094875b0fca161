"""`srcli models` (the pretrained catalogue) and `srcli download NAME...` (pre-fetch weights, later datasets)."""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich import box
from rich.markup import escape
from rich.table import Table

from srcli import download
from srcli.cli.common import console, download_progress
from srcli.errors import SrcliError

if TYPE_CHECKING:  # the catalogue imports torch: loaded when a command runs, never for --help
    from srcli import weights

# Modules that register downloadable things with srcli.download.register() when imported.
PROVIDERS: tuple[str, ...] = ("srcli.weights", "srcli.datasets")

_STATUS_STYLE = {"cached": "green", "embedded": "cyan", "built-in": "cyan", "remote": "dim", "missing": "red"}


def _megabytes(size: int | None) -> str:
    return "?" if size is None else f"{size / 1e6:.1f} MB"


_TABLE_SCALES = (2, 3, 4)


def _psnr_cell(entry: weights.Weights, scale: int) -> str:
    """Set5 PSNR at one scale; '—' where the model has the scale but no published Set5 score, blank without it."""
    if scale not in entry.scales:
        return ""
    value = entry.psnr("Set5", scale)
    return "—" if value is None else f"{value:.2f}"


def _as_record(entry: weights.Weights) -> dict[str, Any]:
    """What scripts get from `srcli models --json`: the entry's meta plus where it stands locally."""
    record = entry.meta
    record["metrics"] = {dataset: {str(s): score for s, score in per_scale.items()}
                         for dataset, per_scale in record["metrics"].items()}
    from srcli.engine import int8

    record.update(status=entry.status(), path=str(entry.local_path()) if entry.has_file else None)
    record["int8"] = [
        {"scale": network.scale, "set5_psnr": network.psnr_int8, "set5_cost_db": round(network.cost_db, 4)}
        for network in int8.shipped() if network.model == entry.name
    ]
    return record


def _catalogue_table(entries: list[weights.Weights]) -> Table:
    """Fits 80 columns (CI logs, pipes): the name says the architecture; DIV2K and Set14 scores are in --json."""
    from srcli import weights
    from srcli.engine import int8

    table = Table(title="srcli pretrained models, bicubic-trained (Set5 PSNR, Y channel)", title_justify="left",
                  box=box.SIMPLE_HEAD, show_edge=False, header_style="bold", caption_justify="left")
    table.add_column("name", no_wrap=True)
    for scale in _TABLE_SCALES:
        table.add_column(f"x{scale}", justify="right", no_wrap=True)
    for header in ("params", "size", "status"):
        table.add_column(header, justify="left" if header == "status" else "right", no_wrap=True)
    defaults = {name for name in map(weights.default_model, _TABLE_SCALES) if name}
    for entry in entries:
        status = entry.status()
        name = f"[bold]{entry.name}[/]" if entry.name in defaults else entry.name
        sizes = (f"{entry.parameters / 1e6:.2f}M", _megabytes(entry.bytes)) if entry.has_file else ("-", "-")
        table.add_row(
            name, *(_psnr_cell(entry, scale) for scale in _TABLE_SCALES), *sizes,
            f"[{_STATUS_STYLE.get(status, 'white')}]{status}[/]",
        )
    lines = []
    if defaults:
        lines.append(f"default (no --model or --weights): {', '.join(sorted(defaults))}")
    lines.append("—: no published Set5 score; DIV2K and Set14 scores: srcli models --json")
    if int8.shipped():
        lines.append(f"--precision int8 (CPU): {int8.describe_shipped()} (Set5)")
    lines.append(f"cache: {weights.cache_dir()}   mirror: ${download.MIRROR_ENV} or --mirror")
    table.caption = "\n".join(lines)
    return table


_GROUP_ORDER = ("photo", "anime", "jpeg", "denoise", "1x", "other")
_UNDOES = {"jpeg": "JPEG", "denoise": "noise", "deblur": "blur"}  # tags that say what damage a model removes


def _zoo_table(entries: list[weights.Weights], hidden: int) -> Table:
    """Third-party models by what they are for: one row each, in its group, with licence and size."""
    from srcli import zoo_catalogue

    table = Table(title=escape('real-world models, third-party (read by spandrel: pip install "srcli[zoo]")'),
                  title_justify="left", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, header_style="bold",
                  caption_justify="left")
    for header in ("name", "undoes", "licence", "size", "status"):  # the scale is in every name (and --json)
        table.add_column(header, justify="right" if header == "size" else "left", no_wrap=True)
    groups = {group: [e for e in entries if zoo_catalogue.purpose(e.tags) == group] for group in _GROUP_ORDER}
    for group, members in ((g, m) for g, m in groups.items() if m):
        table.add_row(f"[bold underline]{escape(zoo_catalogue.PURPOSES.get(group, group))}[/]")
        for entry in members:
            status = entry.status()
            undoes = " ".join(word for tag, word in _UNDOES.items() if tag in entry.tags)
            table.add_row(entry.name, undoes, escape(entry.license),
                          _megabytes(entry.bytes), f"[{_STATUS_STYLE.get(status, 'white')}]{status}[/]")
    lines = ["srcli's own models above undo bicubic downscaling only; these were trained on real damage"]
    if hidden:
        lines.append(f"{hidden} test fixture(s) not shown: srcli models --all")
    table.caption = "\n".join(lines)
    return table


def _import_providers() -> None:
    for module in PROVIDERS:
        importlib.import_module(module)


def models_command(
    as_json: bool = typer.Option(False, "--json", help="Print the catalogue as JSON on stdout."),
    inspect: Path | None = typer.Option(
        None, "--inspect", metavar="FILE",
        help="Describe a weights file instead: architecture, scale, parameters, tiling, precisions.",
    ),
    show_all: bool = typer.Option(False, "--all", help="Also list the test fixtures among third-party models."),
) -> None:
    """List the pretrained models: srcli's own and the official EDSR-PyTorch files (trained to undo bicubic
    downscaling), then third-party real-world models by what they are for (photos, anime, JPEG, noise, 1x).

    Status: [cyan]embedded[/] ships with srcli, [green]cached[/] is downloaded, remote downloads on first use;
    bicubic (built-in) is the MATLAB-exact resize, a method with no weights.

    PSNR is what each model's source reports; --json has every set, scale and the protocol.
    The default model (used without --model or --weights) is shown in bold.

    Examples:

      srcli models

      srcli models --json | jq -r '.[] | select(.status != "remote") | .name'

      srcli models --inspect RealESRGAN_x4plus.pth     (any file --weights takes)
    """
    from srcli import weights

    if inspect is not None:
        record = inspect_file(inspect)
        if as_json:
            typer.echo(json.dumps(record, indent=2))
        else:
            console.print(_inspect_table(record))
        return
    entries = list(weights.catalogue().values())
    if as_json:
        typer.echo(json.dumps([_as_record(entry) for entry in entries], indent=2))
        return
    console.print(_catalogue_table([e for e in entries if e.source != weights.entries.ZOO]))
    third_party = [e for e in entries if e.source == weights.entries.ZOO]
    shown = [e for e in third_party if show_all or "users" in e.audience]
    if shown:
        console.print()
        console.print(_zoo_table(shown, len(third_party) - len(shown)))

def download_command(
    names: list[str] = typer.Argument(
        ..., metavar="NAME", help="What to fetch: a model (see `srcli models`), div2k, benchmark, or an archive."
    ),
    parts: list[str] = typer.Option(
        None, "--part", "-p", metavar="PART", help="Parts of div2k to fetch (repeatable; default: paper)."
    ),
    mirror: str | None = typer.Option(
        None, "--mirror", metavar="URL",
        help=f"Base address of a mirror that holds the files under their official names "
        f"(default ${download.MIRROR_ENV}).",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print what was fetched as JSON on stdout."),
) -> None:
    """Fetch pretrained weights or datasets now (resumable, verified), so later runs work offline.

    Weights are sha256-verified and re-verified (repaired if damaged) when cached.

    Dataset archives are md5-verified, extracted safely into srcli's data folder, then deleted.

    `srcli eval SET` and `srcli train --data div2k --val-set SET` find them there.

    div2k default (--part paper): train and valid HR with bicubic LR x2/x3/x4, the EDSR paper's data, 5.8 GB.

    Groups: train (5.1 GB), valid (0.65 GB), hr (4.0 GB), unknown (unknown-degradation LR, 1.5 GB), all (7.3 GB).

    Single parts: train-hr, valid-hr, {train,valid}-lr-bicubic-x{2,3,4}, {train,valid}-lr-unknown-x{2,3,4}.

    benchmark: Set5, Set14, B100 and Urban100 in one archive.

    Examples:

      srcli download edsr-baseline-x2 edsr-baseline-x4

      srcli download div2k

      srcli download div2k --part valid-hr --part valid-lr-bicubic-x4

      srcli download benchmark --mirror https://example.org/sr-data/
    """
    from srcli.datasets import expand_download_names

    _import_providers()
    items = download.lookup(expand_download_names(names, parts or ()))
    results: list[dict[str, Any]] = []
    failures: list[SrcliError] = []
    try:
        with download_progress() as track:
            for item in items:
                was_present = item.present()
                try:
                    path = item.fetch(mirror, track(item.name))
                except SrcliError as error:
                    error = type(error)(f"{error}{offline_advice(item, str(error))}")
                    failures.append(error)
                    results.append({"name": item.name, "kind": item.kind, "status": "failed", "error": str(error)})
                    continue
                status = "present" if was_present else "downloaded"
                results.append({"name": item.name, "kind": item.kind, "status": status, "path": str(path),
                                "bytes": _size_on_disk(path)})
    except KeyboardInterrupt:
        console.print(f"[yellow]interrupted[/]: {escape(item.name)} is partly downloaded; the partial file is "
                      "kept and running the same command again resumes it", soft_wrap=True)
        raise SystemExit(130) from None
    if as_json:
        typer.echo(json.dumps(results, indent=2))
    else:
        console.print(_summary_table(results))
    if failures:  # raised, not fail(): the exit code must survive any runner
        first = failures[0]
        prefix = f"{len(failures)} of {len(items)} failed; first: " if len(failures) > 1 else ""
        raise type(first)(prefix + str(first))


def offline_advice(item: download.Downloadable, message: str) -> str:
    """The one offline advice line, added where a failure does not already say where else the file can come from."""
    if "--mirror" in message:
        return ""
    from srcli import datasets

    env = datasets.MIRROR_ENV if item.kind == "dataset" else download.MIRROR_ENV
    return f"; offline? set ${env} or --mirror to a base address that holds its files"


def register(app: typer.Typer) -> None:
    """Add this module's command(s) to the app."""
    app.command("models")(models_command)
    app.command("download")(download_command)


def inspect_file(path: Path) -> dict[str, Any]:
    """What srcli makes of a weights file: the record that read it and what the engine measured at load."""
    from srcli import weights
    from srcli.engine import UpscaleOptions, Upscaler

    model, spec = weights.load_checkpoint(path)
    record = spec.architecture
    upscaler = Upscaler(model, spec.scales[0], UpscaleOptions(device="cpu"), spec=spec)
    size = record.size
    return {
        "file": str(path), "architecture": spec.arch, "read_by": record.source, "layout": spec.layout,
        "scales": list(spec.scales), "any_scale": spec.any_scale, "channels": spec.channels,
        "parameters": sum(p.numel() for p in model.parameters()),
        "config": {k: v for k, v in spec.config.items() if isinstance(v, (int, float, str, bool, list))},
        "tiling": "exact" if upscaler.exact else "approximate", "tile_pad": upscaler.receptive_field,
        "fast_path": "folded" if record.fold is not None else "module",
        "fp16": record.half_precision, "bf16": record.bf16_precision,
        "size": {"minimum": size.minimum, "multiple_of": size.multiple_of, "square": size.square},
    }


def _inspect_table(record: dict[str, Any]) -> Table:
    table = Table(title=escape(record["file"]), title_justify="left", box=box.SIMPLE_HEAD, show_header=False,
                  show_edge=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    scales = "any (bicubic-upscaled input)" if record["any_scale"] else "/".join(f"x{s}" for s in record["scales"])
    size = record["size"]
    rows = {
        "architecture": f"{record['architecture']} (read by {record['read_by']})",
        "scale": scales,
        "parameters": f"{record['parameters'] / 1e6:.3f}M",
        "tiling": f"{record['tiling']}, overlap {record['tile_pad']} px"
                  + (" (tiles cross-faded: the network is not translation-equivariant)"
                     if record["tiling"] == "approximate" else " (tiled output equals whole-image output)"),
        "runs as": record["fast_path"],
        "half precision": ", ".join(name for name in ("fp16", "bf16") if record[name]) or "no (fp32 only)",
        "input size": f"min {size['minimum']}, multiple of {size['multiple_of']}" + (", square" if size["square"]
                                                                                    else ""),
    }
    for field, value in rows.items():
        table.add_row(field, escape(value))
    return table


def _size_on_disk(path: Path) -> int:
    """A file's size, or the total of the files in a folder (an extracted dataset part)."""
    if path.is_dir():
        return sum(entry.stat().st_size for entry in path.rglob("*") if entry.is_file())
    return path.stat().st_size


def _summary_table(results: list[dict[str, Any]]) -> Table:
    table = Table(title="download summary", title_justify="left")
    for header in ("name", "status", "size", "path"):
        table.add_column(header, justify="right" if header == "size" else "left")
    styles = {"downloaded": "green", "present": "cyan", "failed": "red"}
    for row in results:
        table.add_row(escape(row["name"]), f"[{styles[row['status']]}]{row['status']}[/]",
                      _megabytes(row.get("bytes")) if row.get("bytes") is not None else "-",
                      escape(row.get("path", "-")))
    return table

