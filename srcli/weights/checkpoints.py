"""Reading a checkpoint file safely into a ready network: tensors only, every tensor present, fitting and finite.

srcli's own records recognise a file first; one none of them knows goes to spandrel's detector (the
`srcli[zoo]` extra). Every way a file can be wrong is one CheckpointError naming it.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch
from torch import nn

from srcli import zoo
from srcli.errors import CheckpointError, UnknownArchitectureError
from srcli.files import require_regular_file
from srcli.models import ModelSpec, load_tensors, normalise_state_dict

CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".safetensors")


def _describe_load_error(error: Exception) -> str:
    text = str(error)
    if isinstance(error, pickle.UnpicklingError) and "unsupported global" in text.lower():
        return ("it holds Python objects beyond tensors, and loading them could run code; "
                "re-save it as a plain state dict (torch.save(model.state_dict(), path))")
    if isinstance(error, EOFError):
        return "the file is empty"
    if "central directory" in text or "EOF" in text or "corrupt" in text.lower():
        return "the file is truncated or corrupted"
    return "not a PyTorch checkpoint"


def read_state_dict(path: Path) -> dict[str, Any]:
    """torch.load with weights_only=True; every way a file can be wrong becomes one CheckpointError."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint file")
    require_regular_file(path, "a checkpoint file", CheckpointError)  # a FIFO or a device would hang torch.load
    if path.suffix.lower() == ".safetensors":
        return _read_safetensors(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise CheckpointError(f"{path}: {_describe_load_error(error)}") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: holds a {type(state).__name__}, not a state dict")
    return state


def _read_safetensors(path: Path) -> dict[str, Any]:
    """A .safetensors file (tensors only, by design: nothing in it can run code)."""
    try:
        from safetensors.torch import load_file
    except ImportError:
        raise CheckpointError(f"{path}: .safetensors files need the safetensors package: {zoo.INSTALL_HINT}") from None
    try:
        return load_file(str(path), device="cpu")
    except Exception as error:  # SafetensorError and friends: a damaged or foreign file
        raise CheckpointError(f"{path}: not a readable safetensors file ({str(error).splitlines()[0]})") from None


def _build_checkpoint(path: Path, state: dict[str, Any]) -> tuple[nn.Module, ModelSpec]:
    """srcli's records first (the file recognised once), then spandrel's detector; every failure is one
    CheckpointError naming the file."""
    try:
        spec, tensors = normalise_state_dict(state)
    except UnknownArchitectureError as unknown:
        return _build_foreign(path, state, unknown)
    except CheckpointError as error:
        raise CheckpointError(f"{path}: {error}") from None
    try:
        return load_tensors(spec, tensors), spec
    except CheckpointError as error:
        raise CheckpointError(f"{path}: {error}") from None
    except RuntimeError as error:  # shape mismatches from load_state_dict
        first = str(error).strip().splitlines()[-1].strip()
        raise CheckpointError(f"{path}: tensors do not fit the detected {spec.arch} ({first})") from None


def _build_foreign(path: Path, state: dict[str, Any], unknown: UnknownArchitectureError) -> tuple[nn.Module, ModelSpec]:
    try:
        return zoo.load(state)
    except zoo.ZooMissing:
        raise CheckpointError(f"{path}: {unknown}; foreign architectures (ESRGAN, SwinIR, ...) need "
                              f"{zoo.INSTALL_HINT}") from None
    except CheckpointError as error:
        raise CheckpointError(f"{path}: {error}") from None


def load_checkpoint(path: Path) -> tuple[nn.Module, ModelSpec]:
    """Load any supported checkpoint safely and strictly: every network tensor must be present and fit.

    srcli's own architectures are tried first; a file none of them recognises goes to spandrel's detector
    (the `srcli[zoo]` extra), and without spandrel the error says which extra to install.
    """
    model, spec = _build_checkpoint(path, read_state_dict(path))
    damaged = next((name for name, tensor in model.state_dict().items()
                    if tensor.is_floating_point() and not torch.isfinite(tensor).all()), None)
    if damaged is not None:  # such weights turn every image black (NaN) or white (Inf)
        raise CheckpointError(f"{path}: tensor {damaged} holds NaN or infinite values; these weights are damaged "
                              "(a diverged training run?)")
    model.eval()
    return model, spec
