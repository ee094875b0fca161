"""The architectures srcli knows, one record each, and recognition of any checkpoint from its tensors.

Each architecture module (edsr.py, mdsr.py, vdsr.py) defines its nn.Module and an `ARCHITECTURE` record
(srcli.models.spec.Architecture); this registry finds every module of the package that has one. To add an
architecture: write its module with its record, and test it.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

import torch
from torch import nn

from srcli.errors import CheckpointError, UnknownArchitectureError
from srcli.models import bicubic
from srcli.models.edsr import EDSR
from srcli.models.mdsr import MDSR
from srcli.models.spec import Architecture, ModelSpec
from srcli.models.vdsr import VDSR


def _discover() -> dict[str, Architecture]:
    """Every `ARCHITECTURE` record defined by a module of this package, by name."""
    records = {}
    for module in sorted(info.name for info in pkgutil.iter_modules(__path__)):
        record = getattr(importlib.import_module(f"{__name__}.{module}"), "ARCHITECTURE", None)
        if isinstance(record, Architecture):
            records[record.name] = record
    return records


# Methods with no weights file (plain bicubic): built by name, never detected in a state dict.
METHODS: dict[str, Architecture] = {bicubic.ARCHITECTURE.name: bicubic.ARCHITECTURE}

# Architectures whose files srcli reads (recognisers are exclusive, so their order does not matter).
ARCHITECTURES: dict[str, Architecture] = {name: record for name, record in _discover().items() if name not in METHODS}

# Named sizes ('edsr-baseline', 'mdsr', 'vdsr-rgb', ...) -> (architecture name, config).
PRESETS: dict[str, tuple[str, dict[str, Any]]] = {
    preset: (record.name, dict(config))
    for record in ARCHITECTURES.values()
    for preset, config in record.presets.items()
}

__all__ = [
    "ARCHITECTURES", "EDSR", "MDSR", "METHODS", "PRESETS", "VDSR", "Architecture", "ModelSpec", "architecture", "build",
    "detect", "load_state_dict", "load_tensors", "normalise_state_dict", "parameter_count", "spec_of",
]


def architecture(name: str) -> Architecture:
    """The record of an architecture or preset name."""
    arch = PRESETS[name][0] if name in PRESETS else name
    known = {**ARCHITECTURES, **METHODS}
    if arch not in known:
        raise ValueError(f"unknown architecture {name!r}; known: {', '.join(sorted(known))}")
    return known[arch]


def build(arch: str, **config: Any) -> nn.Module:
    """Build a network by architecture name (`edsr`, `mdsr`, `vdsr`) or preset (`edsr-baseline`, ...)."""
    preset = PRESETS[arch][1] if arch in PRESETS else {}
    return architecture(arch).build(**{**preset, **config})


def spec_of(model: nn.Module) -> ModelSpec:
    """The spec of a network srcli built (its modules carry `arch` and `config`)."""
    name = getattr(model, "arch", None)
    known = {**ARCHITECTURES, **METHODS}
    if name not in known:
        raise TypeError(f"{type(model).__name__} is not one of srcli's architectures; pass its spec")
    return ModelSpec(known[name], dict(model.config))


def parameter_count(model: nn.Module) -> int:
    """Trainable parameters, as the papers count them (the fixed mean shifts excluded)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


WRAPPER_KEYS = ("params_ema", "params", "state_dict", "model")  # containers a checkpoint's tensors come in


def _strip_wrappers(state: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Unwrap the containers checkpoints come in: {'params': ...}, {'state_dict': ...}, DDP's 'module.'."""
    for key in WRAPPER_KEYS:
        if isinstance(state.get(key), dict):
            state = state[key]
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if tensors and all(k.startswith("module.") for k in tensors):
        tensors = {k[len("module."):]: v for k, v in tensors.items()}
    return tensors


def normalise_state_dict(state: dict[str, Any]) -> tuple[ModelSpec, dict[str, torch.Tensor]]:
    """Recognise a checkpoint and return its spec with the state dict in srcli's (the official) layout."""
    tensors = _strip_wrappers(state)
    if not tensors:
        raise CheckpointError("the file holds no tensors: not a model checkpoint")
    for record in ARCHITECTURES.values():
        if not record.recognise(tensors):
            continue
        try:
            config, converted, layout = record.detect(tensors)
        except (KeyError, ValueError, IndexError) as error:
            raise CheckpointError(f"checkpoint looks like a known layout but is incomplete ({error})") from error
        return ModelSpec(record, config, layout), converted
    sample = ", ".join(sorted(tensors)[:4])
    names = ", ".join(name.upper() for name in ARCHITECTURES)
    raise UnknownArchitectureError(f"unknown architecture: keys like {sample} match no {names} layout")


def detect(state: dict[str, Any]) -> ModelSpec:
    """Recognise any known architecture's state dict (official and other layouts) from its tensor shapes."""
    return normalise_state_dict(state)[0]


def load_state_dict(state: dict[str, Any]) -> nn.Module:
    """Build the network a state dict describes and load it strictly (keys the record lists as optional aside)."""
    return load_tensors(*normalise_state_dict(state))


def load_tensors(spec: ModelSpec, tensors: dict[str, torch.Tensor]) -> nn.Module:
    """Build `spec`'s network and load tensors already in srcli's layout strictly, so a caller that has
    recognised a file once (normalise_state_dict) does not recognise it again."""
    model = spec.build()
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    missing = [k for k in missing if not k.startswith(spec.architecture.optional_keys)]
    if missing or unexpected:
        raise CheckpointError(
            f"checkpoint does not fit {spec.arch} {spec.config}: "
            f"missing {missing[:3]}, unexpected {unexpected[:3]}"
        )
    return model
