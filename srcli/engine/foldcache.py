"""A network's fold, kept in srcli's cache: folding (copies, the composed tail's impulse responses) costs a
cold start more than reading its result, so the folded steps are stored per weights, scale and folding code.

The entry holds tensors and plain values only (read with `weights_only=True`: nothing in a cache file can run
code), one file verified like every cache entry (srcli.engine.cache). The key covers the weights' digest, the
scale and the source of the folding code, so a changed fold never reads an old entry.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from srcli.engine import cache
from srcli.models import folding
from srcli.models.folding import Composed, Conv, FoldedNetwork, Save, Shuffle
from srcli.models.spec import ModelSpec

KIND = "folds"
FILE = "fold.pt"
FORMAT = 1  # bump when what is stored changes
_STEPS = {cls.__name__: cls for cls in (Conv, Save, Shuffle, Composed)}

folds = 0  # networks folded by this process (not read from the cache): what the cache tests count


def _encode(value: Any) -> Any:
    if isinstance(value, list):
        return [_encode(item) for item in value]
    if dataclasses.is_dataclass(value) and type(value).__name__ in _STEPS:
        fields = {f.name: _encode(getattr(value, f.name)) for f in dataclasses.fields(value)}
        return {"step": type(value).__name__, **fields}
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, list):
        return [_decode(item) for item in value]
    if isinstance(value, dict) and value.get("step") in _STEPS:
        fields = {name: _decode(item) for name, item in value.items() if name != "step"}
        return _STEPS[value["step"]](**fields)
    return value


def _code_digest(fold: Callable[..., FoldedNetwork]) -> str:
    """The folding code's own source and its architecture's: a change to either is another key."""
    digest = hashlib.sha256()
    for module in (folding, inspect.getmodule(fold)):
        source = inspect.getsourcefile(module) if module is not None else None
        digest.update(Path(source).read_bytes() if source else b"")
    return digest.hexdigest()


def fold_key(fold: Callable[..., FoldedNetwork], model: nn.Module, spec: ModelSpec, scale: int) -> str:
    from srcli.engine.openvino import weights_digest

    text = f"{FORMAT}|{spec.arch}|{sorted(spec.config.items())}|x{scale}|{_code_digest(fold)}|{weights_digest(model)}"
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def _read(folder: Path) -> FoldedNetwork | None:
    try:
        fields = torch.load(folder / FILE, map_location="cpu", weights_only=True)
        return FoldedNetwork(**{name: _decode(value) for name, value in fields.items()})
    except Exception:  # an entry from other code that passed its digest check: rebuilt, never fatal
        return None


def cached_fold(fold: Callable[[nn.Module, int], FoldedNetwork], model: nn.Module, spec: ModelSpec,
                scale: int) -> FoldedNetwork:
    """`fold(model, scale)`, read from the cache where this fold of these weights was stored before."""
    global folds
    key = fold_key(fold, model, spec, scale)
    folder = cache.find(KIND, key)
    if folder is not None:
        network = _read(folder)
        if network is not None:
            return network
        shutil.rmtree(folder, ignore_errors=True)
    network = fold(model, scale)
    folds += 1
    fields = {f.name: _encode(getattr(network, f.name)) for f in dataclasses.fields(network)}
    cache.store(KIND, key, lambda temp: torch.save(fields, temp / FILE))
    return network
