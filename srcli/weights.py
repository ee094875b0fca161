"""Pretrained catalogue and model resolution (INTERFACE STUB: only local checkpoint files).

The weights helper fills in the catalogue, cache and downloads; keep the public signatures.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from srcli.errors import CheckpointError, ScaleError
from srcli.models import ModelSpec, normalise_state_dict


@dataclass
class ResolvedModel:
    """A loaded network with what is known about where it came from."""

    model: nn.Module
    spec: ModelSpec
    name: str  # catalogue name, or the file path


def load_checkpoint(path: Path) -> tuple[nn.Module, ModelSpec]:
    """Load any supported checkpoint safely (weights_only=True) and build its network."""
    from srcli.models import build

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such checkpoint file") from None
    except Exception as error:
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({type(error).__name__})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: holds a {type(state).__name__}, not a state dict")
    spec, tensors = normalise_state_dict(state)
    model = build(spec.arch, **spec.config)
    model.load_state_dict(tensors, strict=False)
    return model, spec


def resolve(name_or_path: str, scale: int) -> ResolvedModel:
    """A catalogue name or a checkpoint path -> a ready network that serves `scale`."""
    model, spec = load_checkpoint(Path(name_or_path))
    if spec.arch != "vdsr" and scale not in spec.scales:
        raise ScaleError(f"{name_or_path} is x{'/x'.join(map(str, spec.scales))}; it cannot upscale x{scale}")
    return ResolvedModel(model, spec, str(name_or_path))
