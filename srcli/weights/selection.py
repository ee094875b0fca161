"""What a name, a path and a scale mean together: a catalogue entry or a checkpoint file, resolved to a ready
network that serves the scale (downloading a catalogue file on first use), and the scale to run it at."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from srcli import download, zoo
from srcli.errors import CheckpointError, DownloadError, ScaleError, SrcliError, UnknownModelError
from srcli.files import sha256_file
from srcli.models import ModelSpec
from srcli.weights.checkpoints import CHECKPOINT_SUFFIXES, load_checkpoint
from srcli.weights.entries import DEFAULT_SCALES, ZOO, Weights, catalogue, default_model, embedded, find


@dataclass
class ResolvedModel:
    """A loaded network with what is known about where it came from."""

    model: nn.Module
    spec: ModelSpec
    name: str  # catalogue name, or the file path
    path: Path | None = None
    entry: Weights | None = None


def _offline_hint(entry: Weights) -> str:
    shipped = [e.name for e in embedded()]
    local = f"an embedded model ({', '.join(shipped)})" if shipped else "an embedded model (`srcli models`)"
    return (f"to proceed: set {download.MIRROR_ENV} or --mirror to a base address that holds {entry.filename}, "
            f"pass --weights PATH to a local copy, or use {local}")


def ensure_local(
    entry: Weights,
    *,
    mirror: str | None = None,
    progress: download.Progress | None = None,
    offline: bool = False,
    verify: bool = False,
) -> Path:
    """The entry's file on disk: embedded (verified) or cached, downloading it first if needed.

    A cached file is sha256-checked before every use (0.13-0.2 s for the 172 MB EDSR file, less than
    loading it) and refused in one line when it differs; `verify=True` (`srcli download`) downloads a damaged one again.
    """
    if entry.source == "embedded":
        path = entry.local_path()
        if not path.is_file():
            raise CheckpointError(f"embedded model {entry.name}: {path} is missing from this installation")
        if sha256_file(path) != entry.sha256:
            raise CheckpointError(f"embedded model {entry.name}: {path} fails its sha256 check (reinstall srcli)")
        return path
    if entry.status() == "cached" and not verify:
        path = entry.local_path()
        if sha256_file(path) != entry.sha256:
            raise CheckpointError(f"{path}: the cached {entry.name} fails its sha256 check (damaged or replaced); "
                                  f"`srcli download {entry.name}` fetches it again")
        return path
    if offline:
        raise DownloadError(f"{entry.name} is not downloaded and srcli is offline; {_offline_hint(entry)}")
    assert entry.url is not None
    urls = list(dict.fromkeys([*download.candidate_urls(entry.url, mirror), *entry.alternates]))
    try:
        return download.fetch_first(
            urls, entry.local_path(),
            sha256=entry.sha256, size=entry.bytes, progress=progress,
        )
    except DownloadError as error:
        raise DownloadError(f"{entry.name} could not be downloaded ({error}); {_offline_hint(entry)}") from None


def resolve(
    name_or_path: str,
    scale: int | None,
    *,
    mirror: str | None = None,
    progress: download.Progress | None = None,
    offline: bool = False,
) -> ResolvedModel:
    """A catalogue name or a checkpoint path -> a ready network (eval mode, CPU) that serves `scale`.

    Catalogue names download on first use (`mirror` or $SRCLI_MIRROR first); the scale is checked
    before anything is fetched. `offline=True` never touches the network.
    """
    entry = find(str(name_or_path), scale)
    if entry is not None and not entry.has_file:
        entry.spec.check_scale(scale, entry.name)
        return ResolvedModel(entry.build().eval(), entry.spec, entry.name, None, entry)
    if entry is not None:
        entry.spec.check_scale(scale, entry.name)
        if entry.source == ZOO and not zoo.available():  # said before a download, not after it
            raise zoo.ZooMissing(f"{entry.name} is a third-party {entry.arch} model read by spandrel: "
                                 f"{zoo.INSTALL_HINT}")
        path = ensure_local(entry, mirror=mirror, progress=progress, offline=offline)
        model, spec = load_checkpoint(path, verified=True)
        if spec.arch.lower() != entry.arch.lower() or (not spec.any_scale and spec.scales != entry.scales):
            raise CheckpointError(f"{path}: holds {spec.arch} x{spec.scales}, not the catalogue's {entry.name}")
        return ResolvedModel(model, spec, entry.name, path, entry)
    path = Path(name_or_path).expanduser()
    if not path.exists() and not _looks_like_path(str(name_or_path)):
        raise UnknownModelError(_unknown_message(str(name_or_path)))
    model, spec = load_checkpoint(path)
    spec.check_scale(scale, str(name_or_path))
    return ResolvedModel(model, spec, str(name_or_path), path)


def own_scales(spec: ModelSpec) -> tuple[int, ...]:
    """The scales a network is scored at when none is asked for: its own, or x2/x3/x4 if it serves any scale."""
    return DEFAULT_SCALES if spec.any_scale else spec.scales


def nearest_scale(outscale: float, scales: tuple[int, ...] | list[int]) -> int:
    """The model scale to run for a final `outscale`: the smallest at or above it (a native one when it exists,
    and never an enlarging resize when one can shrink), else the largest."""
    above = [s for s in sorted(scales) if s >= outscale]
    return above[0] if above else max(scales)


def select(
    model: str | None = None,
    path: Path | str | None = None,
    scale: int | None = None,
    *,
    outscale: float | None = None,
    mirror: str | None = None,
    progress: download.Progress | None = None,
) -> tuple[ResolvedModel, int]:
    """What `--model`, `--weights`, `--scale` and `--outscale` (each optional) mean together: a ready network
    and the scale to run it at.

    Neither model nor path: srcli's embedded model for the scale. No scale: the network's own when it has
    one; with `outscale`, the served scale nearest above it (`--outscale 2` runs a native x2 model); else x4.
    """
    if model and path:
        raise SrcliError("give --model NAME or --weights PATH, not both")
    name = model or (str(path) if path is not None else None)
    if name is None:
        if scale is None:
            served = [s for s in DEFAULT_SCALES if default_model(s)] or [4]
            scale = nearest_scale(outscale, served) if outscale else 4
        name = default_model(scale)
        if name is None and scale in DEFAULT_SCALES:
            raise SrcliError(
                f"srcli's embedded x{scale} model is missing from this install: pass --weights PATH or --model NAME"
            )
        if name is None:
            raise ScaleError(
                f"srcli's built-in models upscale x2, x3 or x4, not x{scale}: use --scale 4 --outscale {scale} "
                "(the x4 model, then a resize), or --weights PATH / --model NAME for a model of that scale"
            )
    resolved = resolve(name, scale, mirror=mirror, progress=progress)
    if scale is None:  # the checkpoint's own scale when it has one, else the one nearest the outscale, else x4
        scales = resolved.spec.scales
        scale = scales[0] if len(scales) == 1 else nearest_scale(outscale, scales) if outscale else 4
    return resolved, scale


def select_scales(
    model: str | None = None,
    path: Path | str | None = None,
    scales: list[int] | tuple[int, ...] | None = None,
    *,
    mirror: str | None = None,
    progress: download.Progress | None = None,
) -> dict[int, ResolvedModel]:
    """`select` for several scales at once (what `srcli eval` scores): one ready network per scale, every scale
    checked before anything is downloaded. No scales: the model's own (a x2 export scores x2, an MDSR or the
    default model x2/x3/x4)."""
    if model and path:
        raise SrcliError("give --model NAME or --weights PATH, not both")
    name = model or (str(path) if path is not None else None)
    if name is None:
        return {s: select(None, None, s, mirror=mirror, progress=progress)[0] for s in scales or DEFAULT_SCALES}
    entry = find(name)
    family = [s for s in DEFAULT_SCALES if find(name, s) is not None]
    if entry is None and not family:  # a checkpoint file: load it once, it serves what it serves
        resolved = resolve(name, None, mirror=mirror, progress=progress)
        wanted = list(scales or own_scales(resolved.spec))
        for each in wanted:
            resolved.spec.check_scale(each, resolved.name)
        return dict.fromkeys(wanted, resolved)
    wanted = list(scales or (own_scales(entry.spec) if entry is not None else family))
    entries = {}
    for each in wanted:
        found = find(name, each)
        if found is None:
            raise ScaleError(f"{name} has no x{each} model ({', '.join(f'{name}-x{s}' for s in family)})")
        found.spec.check_scale(each, found.name)
        entries[each] = found
    ready: dict[str, ResolvedModel] = {}
    for each, found in entries.items():
        if found.name not in ready:
            ready[found.name] = resolve(found.name, each, mirror=mirror, progress=progress)
    return {each: ready[found.name] for each, found in entries.items()}


def _looks_like_path(text: str) -> bool:
    return os.sep in text or "/" in text or Path(text).suffix.lower() in CHECKPOINT_SUFFIXES


def _unknown_message(name: str) -> str:
    import difflib

    entries = catalogue()
    names = sorted(entries)
    # A file's own name ('RealESRGAN_x4plus', what other tools call it) first; then a prefix ('srcli-mdsr' for
    # 'srcli-mdsr-baseline'), what a user half-remembers; edit distance comes last.
    wanted = name.lower().replace("_", "-")
    by_file = [e.name for e in entries.values() if e.has_file and Path(e.filename).stem.lower() == name.lower()]
    prefixed = [n for n in names if n.startswith(wanted)]
    close = by_file[:1] or prefixed[:3] or difflib.get_close_matches(name, names, n=1)
    hint = f"did you mean {' or '.join(close)}? " if close else ""
    return f"unknown model {name!r}: {hint}`srcli models` lists them; or pass a checkpoint file path"


# --- `srcli download` registration ----------------------------------------------------------------


def _downloadable(entry: Weights) -> download.Downloadable:
    return download.Downloadable(
        name=entry.name,
        kind="weights",
        size=entry.bytes,
        describe=f"{entry.preset} x{'/x'.join(map(str, entry.scales))} ({entry.source})",
        present=lambda: entry.status() in ("cached", "embedded"),
        fetch=lambda mirror, progress: ensure_local(entry, mirror=mirror, progress=progress, verify=True),
        shipped=entry.source == "embedded",
    )


download.register("weights", lambda: [_downloadable(entry) for entry in catalogue().values() if entry.has_file])
