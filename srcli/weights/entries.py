"""The pretrained catalogue: one frozen `Weights` entry per file, the official list and the embedded manifest.

One entry holds everything known about a file (address, sha256, size, the preset that loads it, the
scores it reaches), in the spirit of torchvision's weights API, so `srcli models` prints the catalogue
and a test checks every entry. The sources:

- "official": the EDSR-PyTorch files, downloaded on first use into `data_home()/weights`
  (mirror first when $SRCLI_MIRROR or `mirror=` is set), verified by sha256;
- "embedded": models this project trained, shipped inside the package (`weights/manifest.json`
  in the repository, `srcli/_weights/manifest.json` in a wheel), usable with no network;
- "zoo": public third-party files (srcli/zoo_catalogue.json: Real-ESRGAN, BSRGAN, SwinIR, ...), downloaded and
  verified like the official ones, read by spandrel (the `srcli[zoo]` extra).
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from srcli import download, zoo_catalogue
from srcli.errors import CheckpointError
from srcli.files import write_atomic
from srcli.models import (
    ARCHITECTURES,
    METHODS,
    PRESETS,
    ModelSpec,
    architecture,
    bicubic,
    build,
    load_tensors,
    normalise_state_dict,
    parameter_count,
)
from srcli.models.spec import Architecture, KeyCondition
from srcli.paths import shipped_dirs
from srcli.weights.checkpoints import read_state_dict

BICUBIC = "bicubic"
ZOO = "zoo"
DEFAULT_SCALES = (2, 3, 4)  # what srcli's own models serve, and what eval scores when no scale is given
OFFICIAL_BASE = "https://cv.snu.ac.kr/research/EDSR/models/"
MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1


@dataclass(frozen=True)
class Score:
    """One reported quality figure (PSNR in dB; SSIM when known)."""

    psnr: float
    ssim: float | None = None


@dataclass(frozen=True, eq=False)
class Weights:
    """One pretrained file and everything known about it."""

    name: str
    preset: str  # a models.PRESETS key or an architecture name; `config` completes it
    config: dict[str, Any]
    scales: tuple[int, ...]
    filename: str
    sha256: str
    bytes: int
    parameters: int | None  # trainable, as the papers count them (a test rebuilds every preset); None: not known
    source: str  # "official", "embedded", "zoo" or "builtin" (a method with no file: bicubic)
    url: str | None = None  # official address (a mirror holds the file under its last path segment)
    path: Path | None = None  # embedded file
    metrics: dict[str, dict[int, Score]] = field(default_factory=dict)  # set -> scale -> score
    metrics_note: str = ""
    recipe: str | None = None
    steps: int | None = None
    data: str | None = None
    description: str = ""
    degradation: str = BICUBIC  # what it was trained to undo: "bicubic" (the papers' LR), "real" (blur, noise,
    # JPEG...), "none" (a method), "unknown"; the upscale note about JPEG inputs reads it
    alternates: tuple[str, ...] = ()  # further addresses of the same bytes, tried after `url`
    license: str = ""
    author: str = ""
    tags: tuple[str, ...] = ()  # zoo_catalogue.TAGS: what a third-party model is for
    audience: tuple[str, ...] = ("users",)  # ("tests",) alone: a shared test fixture, left out of listings
    origin: str = ""  # where the facts come from (an OpenModelDB record, or repository@commit:path)

    @property
    def arch(self) -> str:
        return PRESETS[self.preset][0] if self.preset in PRESETS else self.preset

    @property
    def bicubic_trained(self) -> bool:
        return self.degradation == BICUBIC

    @property
    def spec(self) -> ModelSpec:
        """What the file holds, as known before it is read (its preset completed by its config)."""
        if self.source == ZOO:
            return ModelSpec(_listed_architecture(self.preset), dict(self.config), layout="spandrel")
        preset = PRESETS[self.preset][1] if self.preset in PRESETS else {}
        return ModelSpec(architecture(self.preset), {**preset, **self.config})

    def build(self) -> nn.Module:
        return build(self.preset, **self.config)

    @property
    def has_file(self) -> bool:
        """False for a built-in method (bicubic): nothing to download, verify or load."""
        return self.source != BUILTIN

    def local_path(self) -> Path:
        """Where the file is (embedded) or will be once downloaded (official)."""
        return self.path if self.path is not None else cache_dir() / self.filename

    def status(self) -> str:
        """'embedded', 'cached' (downloaded, right size), 'remote' (needs a download) or 'built-in'."""
        if not self.has_file:
            return "built-in"
        if self.source == "embedded":
            return "embedded" if self.local_path().is_file() else "missing"
        local = self.local_path()
        return "cached" if local.is_file() and local.stat().st_size == self.bytes else "remote"

    @property
    def meta(self) -> dict[str, Any]:
        """Everything known about the file, torchvision-style: scores (set -> scale -> psnr/ssim), parameters,
        sha256, size, recipe, steps, data, source and address. Plain data: `srcli models --json` prints it."""
        return {
            "name": self.name, "source": self.source, "arch": self.arch, "preset": self.preset, "config": self.config,
            "scales": list(self.scales), "parameters": self.parameters, "filename": self.filename or None,
            "url": self.url, "sha256": self.sha256 or None, "bytes": self.bytes,
            "metrics": {
                dataset: {s: {"psnr": score.psnr, "ssim": score.ssim} for s, score in per_scale.items()}
                for dataset, per_scale in self.metrics.items()
            },
            "metrics_note": self.metrics_note, "recipe": self.recipe, "steps": self.steps, "data": self.data,
            "description": self.description, "degradation": self.degradation, "alternates": list(self.alternates),
            "license": self.license or None, "author": self.author or None, "tags": list(self.tags),
            "audience": list(self.audience), "origin": self.origin or None,
        }

    def psnr(self, dataset: str, scale: int) -> float | None:
        score = self.metrics.get(dataset, {}).get(scale)
        return score.psnr if score else None


def cache_dir() -> Path:
    """Downloaded weights live here: `$SRCLI_HOME/weights`, else the user data dir's `weights`."""
    return download.data_home() / "weights"


# --- the official EDSR-PyTorch files (sources.md) ---------------------------------------------------

_OFFICIAL_FILES = (
    # name, preset, config, scales, filename, bytes, sha256, parameters
    ("edsr-baseline-x2", "edsr-baseline", {"scale": 2}, (2,), "edsr_baseline_x2-1bc95232.pt", 5490680,
     "1bc9523228fdc3b0a5ddb0d7062001e22b31bbb398ae09cfdefb97e8ee06e171", 1369859),
    ("edsr-baseline-x3", "edsr-baseline", {"scale": 3}, (3,), "edsr_baseline_x3-abf2a44e.pt", 6229240,
     "abf2a44e7a137228efa42a4264a23e12603168d43ac7596b1adef40c649b9240", 1554499),
    ("edsr-baseline-x4", "edsr-baseline", {"scale": 4}, (4,), "edsr_baseline_x4-6b446fab.pt", 6081831,
     "6b446fab734f4de74448d2fd1f3f990f5bae726e49dc7eff2ae9cefe444a1723", 1517571),
    ("edsr-x2", "edsr", {"scale": 2}, (2,), "edsr_x2-0edfb8a3.pt", 162939971,
     "0edfb8a3772c94485c939f81a8aeefe02cccdfbf45243c6d22b39c29eb7d46de", 40729603),
    ("edsr-x3", "edsr", {"scale": 3}, (3,), "edsr_x3-ea3ef2c6.pt", 174741571,
     "ea3ef2c6449845ac3bda7290480af76a53e5006beff60bf89c84ca62f986eeca", 43680003),
    ("edsr-x4", "edsr", {"scale": 4}, (4,), "edsr_x4-4f62e9ef.pt", 172381555,
     "4f62e9ef1a4ec6a7d3da4ed837116cec641e4e1566f98187151d813e83a0c1c8", 43089923),
    ("mdsr-baseline", "mdsr-baseline", {}, (2, 3, 4), "mdsr_baseline-a00cab12.pt", 12924933,
     "a00cab12f80c2a7cf0a15c3b9fcae3cfe9273121e8942692303e5010d1dca5ef", 3227203),
    ("mdsr", "mdsr", {}, (2, 3, 4), "mdsr-4a78bedf.pt", 31869146,
     "4a78bedfdb8fb1ad81b4bce9e13a907c0355a2ab52adafe2da868f9bb9096311", 7953987),
)

# Y channel, shave = scale, measured by torchSR on its copies of these files (x2, x3, x4).
_BENCHMARK_PSNR = {
    "edsr-baseline": {"Set5": (37.98, 34.37, 32.09), "Set14": (33.57, 30.28, 28.58),
                      "B100": (32.15, 29.08, 27.56), "Urban100": (31.98, 28.15, 26.03)},
    "edsr": {"Set5": (38.19, 34.68, 32.48), "Set14": (33.95, 30.53, 28.81),
             "B100": (32.35, 29.26, 27.72), "Urban100": (32.97, 28.81, 26.65)},
}
# RGB PSNR on DIV2K 0801-0900, from EDSR-PyTorch's README (x2, x3, x4).
DIV2K_RGB = "DIV2K-val (RGB)"
_DIV2K_PSNR = {
    "edsr-baseline": (34.61, 30.92, 28.95), "edsr": (35.03, 31.26, 29.25),
    "mdsr-baseline": (34.63, 30.94, 28.97), "mdsr": (34.92, 31.22, 29.24),
}
_OFFICIAL_NOTE = "Set5/Set14/B100/Urban100: Y channel, shave=scale (torchSR); DIV2K-val: RGB (EDSR-PyTorch README)"


def _official_metrics(preset: str, scales: tuple[int, ...]) -> dict[str, dict[int, Score]]:
    tables = {**_BENCHMARK_PSNR.get(preset, {}), DIV2K_RGB: _DIV2K_PSNR[preset]}
    return {
        dataset: {s: Score(row[s - 2]) for s in scales}
        for dataset, row in tables.items()
    }


OFFICIAL: tuple[Weights, ...] = tuple(
    Weights(
        name=name, preset=preset, config=config, scales=scales, filename=filename, sha256=sha256,
        bytes=size, parameters=parameters, source="official", url=OFFICIAL_BASE + filename,
        metrics=_official_metrics(preset, scales), metrics_note=_OFFICIAL_NOTE,
        description=f"EDSR-PyTorch official {preset} weights (Lim et al. 2017), DIV2K-trained",
    )
    for name, preset, config, scales, filename, size, sha256, parameters in _OFFICIAL_FILES
)


# --- built-in methods (no file) -----------------------------------------------------------------------

BUILTIN = "builtin"
# `srcli eval --model bicubic` on Set5/Set14 (the classic MATLAB luma pipeline behind the paper's Bicubic column).
_BICUBIC_SCORES = {"Set5": ((33.661, 0.9299), (30.392, 0.8682), (28.421, 0.8104)),
                   "Set14": ((30.232, 0.8687), (27.541, 0.7736), (26.000, 0.7019))}
BUILTINS: tuple[Weights, ...] = (
    Weights(
        name=bicubic.NAME, preset=bicubic.NAME, config={}, scales=DEFAULT_SCALES, filename="", sha256="", bytes=0,
        parameters=0, source=BUILTIN, degradation="none",
        metrics={dataset: {s: Score(*row[s - 2]) for s in DEFAULT_SCALES} for dataset, row in _BICUBIC_SCORES.items()},
        metrics_note="srcli eval --model bicubic: Y of the HR, MATLAB bicubic down and up (the paper's Bicubic column)",
        description="MATLAB-exact bicubic (srcli.resize.imresize, double precision); any scale; no weights",
    ),
)


# --- public third-party files (srcli/zoo_catalogue.json), read by spandrel -----------------------------

_REAL_TAGS = frozenset({"real-world", "jpeg", "denoise", "deblur"})


def _listed_architecture(name: str) -> Architecture:
    """What is known of a third-party architecture before spandrel reads the file: its name and scale, enough
    to check a scale before anything is downloaded. The file itself is read by srcli.zoo."""

    def unread(*args: Any, **kwargs: Any) -> Any:
        raise CheckpointError(f"{name} files are read by spandrel once downloaded")

    return Architecture(name=name, module=unread, presets={}, recognise=KeyCondition.has_any(), detect=unread,
                        scales=lambda config: (int(config["scale"]),), pixel_max=1.0, source="spandrel")


def _zoo_entry(listed: zoo_catalogue.CatalogueEntry) -> Weights:
    primary, *others = listed.url
    return Weights(
        name=listed.name, preset=listed.architecture, config={"scale": listed.scale}, scales=(listed.scale,),
        filename=primary.rsplit("/", 1)[-1], sha256=listed.sha256, bytes=listed.bytes, parameters=None,
        source=ZOO, url=primary, alternates=tuple(others), description=f"{listed.title}: {listed.purpose}",
        degradation="real" if _REAL_TAGS & set(listed.tags) else "unknown", license=listed.license,
        author=listed.author, tags=listed.tags, audience=listed.audience, origin=listed.source,
    )


ZOO_ENTRIES: tuple[Weights, ...] = tuple(_zoo_entry(listed) for listed in zoo_catalogue.entries())


def real_world_choices(tag: str, scale: int) -> tuple[Weights | None, Weights | None]:
    """What to suggest for an input with `tag` damage (jpeg, denoise) that a bicubic-trained model would keep:
    the smallest offered upscaler trained on it, at `scale` when one is (else any), and the smallest 1x restorer
    for it (to run first). Smallest: the quickest download and run, for a first try."""
    offered = [e for e in ZOO_ENTRIES if "users" in e.audience and tag in e.tags]
    upscalers = [e for e in offered if e.scales != (1,)]
    native = [e for e in upscalers if scale in e.scales]
    model = min(native or upscalers, key=lambda e: e.bytes, default=None)
    restorer = min((e for e in offered if e.scales == (1,)), key=lambda e: e.bytes, default=None)
    return model, restorer


# --- the project's own embedded models (weights/manifest.json) -------------------------------------


def embedded_dirs() -> list[Path]:
    """Where a manifest may be: inside the installed package first, then the source checkout."""
    return shipped_dirs()


def _manifest_dir() -> Path | None:
    return next((d for d in embedded_dirs() if (d / MANIFEST).is_file()), None)


def _manifest_entry(raw: dict[str, Any], folder: Path) -> Weights:
    """One manifest record -> a catalogue entry (KeyError/TypeError/ValueError on a malformed one)."""
    preset = raw["preset"]
    if preset not in PRESETS and preset not in ARCHITECTURES and preset not in METHODS:
        raise ValueError(f"unknown preset {preset!r}")
    metrics = {
        dataset: {int(s): Score(float(v["psnr"]), v.get("ssim")) for s, v in per_scale.items()}
        for dataset, per_scale in raw.get("metrics", {}).items()
    }
    return Weights(
        name=str(raw["name"]), preset=preset, config=dict(raw.get("config", {})),
        scales=tuple(int(s) for s in raw["scales"]), filename=str(raw["file"]), sha256=str(raw["sha256"]).lower(),
        bytes=int(raw["bytes"]), parameters=int(raw["parameters"]), source="embedded", path=folder / raw["file"],
        metrics=metrics,
        metrics_note=str(raw.get("metrics_note", "measured by `srcli eval` (Y channel, shave=scale)")),
        recipe=raw.get("recipe"), steps=raw.get("steps"), data=raw.get("data"),
        description=str(raw.get("description", "")), degradation=str(raw.get("degradation", BICUBIC)),
    )


def read_manifest(folder: Path) -> list[Weights]:
    """The entries of `folder/manifest.json`; a malformed manifest is one clear CheckpointError."""
    path = folder / MANIFEST
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        if document.get("format") != MANIFEST_FORMAT:
            raise ValueError(f"format {document.get('format')!r} is not {MANIFEST_FORMAT}")
        return [_manifest_entry(raw, folder) for raw in document["models"]]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise CheckpointError(f"{path}: malformed weights manifest ({type(error).__name__}: {error})") from None


def embedded() -> list[Weights]:
    folder = _manifest_dir()
    return read_manifest(folder) if folder else []


def catalogue() -> dict[str, Weights]:
    """Every known pretrained file by name: embedded (project-trained) first, then official, built-in and zoo."""
    entries: dict[str, Weights] = {}
    for entry in (*embedded(), *OFFICIAL, *BUILTINS, *ZOO_ENTRIES):
        if entry.name in entries:
            raise CheckpointError(f"weights manifest: the name {entry.name!r} is used twice")
        entries[entry.name] = entry
    return entries


def default_model(scale: int) -> str | None:
    """The embedded model to use for `scale` when the user names none: the best Set5 PSNR wins."""
    candidates = [entry for entry in embedded() if scale in entry.scales and entry.local_path().is_file()]
    if not candidates:
        return None
    return max(candidates, key=lambda entry: entry.psnr("Set5", scale) or 0.0).name


def find(name: str, scale: int | None = None) -> Weights | None:
    """A catalogue entry by exact name, or by family name plus scale ('edsr-baseline' at x4)."""
    entries = catalogue()
    if name in entries:
        return entries[name]
    if scale is not None:
        return entries.get(f"{name}-x{scale}")
    return None


# --- adding a trained model to the manifest ----------------------------------------------------------


def embed(
    checkpoint: Path,
    name: str,
    folder: Path,
    *,
    scales: tuple[int, ...] | None = None,
    recipe: str | None = None,
    steps: int | None = None,
    data: str | None = None,
    metrics: dict[str, dict[int, dict[str, float]]] | None = None,
    description: str = "",
    degradation: str = BICUBIC,
) -> Weights:
    """Add a trained checkpoint to `folder`'s manifest as a plain, official-layout state dict.

    The file is saved as `<name>-<sha256[:8]>.pt` (torch.hub naming); an entry with the same name
    is replaced. Manifest and file are written atomically. `degradation` is what the model was trained to undo
    ("bicubic", or "real" for a real-degradation recipe): `srcli upscale`'s note about JPEG inputs reads it.
    """
    state = read_state_dict(checkpoint)
    spec, tensors = normalise_state_dict(state)
    model = load_tensors(spec, tensors)  # proves the tensors load strictly before anything is written
    folder.mkdir(parents=True, exist_ok=True)
    stem = name.replace("-", "_")
    buffer = io.BytesIO()  # embedded models are a few MB: name the file by its hash before writing it
    torch.save(tensors, buffer)
    serialised = buffer.getvalue()
    sha256 = hashlib.sha256(serialised).hexdigest()
    filename = f"{stem}-{sha256[:8]}.pt"
    write_atomic(folder / filename, serialised)
    preset = next(
        (p for p, (arch, cfg) in PRESETS.items() if arch == spec.arch and all(spec.config.get(k) == v
                                                                            for k, v in cfg.items())),
        spec.arch,
    )
    record = {
        "name": name, "file": filename, "preset": preset, "config": spec.config,
        "scales": list(scales or spec.scales), "sha256": sha256, "bytes": len(serialised),
        "parameters": parameter_count(model),
        "recipe": recipe, "steps": steps, "data": data, "description": description, "degradation": degradation,
        "metrics": {
            dataset: {str(s): dict(score) for s, score in per_scale.items()}
            for dataset, per_scale in (metrics or {}).items()
        },
    }
    manifest = folder / MANIFEST
    document = json.loads(manifest.read_text()) if manifest.is_file() else {"format": MANIFEST_FORMAT, "models": []}
    document["models"] = [m for m in document["models"] if m["name"] != name] + [record]
    write_atomic(manifest, (json.dumps(document, indent=2) + "\n").encode("utf-8"))
    return _manifest_entry(record, folder)
