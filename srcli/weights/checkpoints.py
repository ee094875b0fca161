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
from srcli.models import WRAPPER_KEYS, ModelSpec, load_tensors, normalise_state_dict

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
    _check_contents(path, state)
    return state


def _check_contents(path: Path, state: dict[str, Any]) -> None:
    """What a file declares, checked before anything is built from it: tensor names are text, weights are real
    numbers, and no tensor claims more elements than the bytes behind it (a stride-0 or shared view
    declares gigabytes from a few bytes; building the network it describes would allocate them). The containers
    checked are the file itself and those the network's tensors may come in (an optimiser's state, with its
    integer keys, is not one)."""
    declared = held = 0
    storages: set[int] = set()
    for key, value in state.items():
        if not isinstance(key, str):
            raise CheckpointError(f"{path}: holds the key {key!r} ({type(key).__name__}) where tensor names are "
                                  "text: not a state dict")
        if isinstance(value, dict) and key in WRAPPER_KEYS:
            _check_contents(path, value)
        if not isinstance(value, torch.Tensor):
            continue
        if value.is_complex():
            raise CheckpointError(f"{path}: tensor {key} is {str(value.dtype).removeprefix('torch.')}: network "
                                  "weights are real numbers")
        declared += value.numel() * value.element_size()
        storage = value.untyped_storage()
        if storage.data_ptr() not in storages:
            storages.add(storage.data_ptr())
            held += storage.nbytes()
    if declared > 2 * held + _SHARED_SLACK:
        raise CheckpointError(f"{path}: its tensors declare {_mib(declared)} of weights from {_mib(held)} of data "
                              "(stride-0 or shared views): damaged or hostile, refused before building anything")


# Tied weights may share storage; no real checkpoint declares more than twice its data plus this.
_SHARED_SLACK = 256 * 2**20


def _mib(count: int) -> str:
    return f"{count / 2**20:,.1f} MiB"


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


def _build_checkpoint(path: Path, state: dict[str, Any], verified: bool = False) -> tuple[nn.Module, ModelSpec]:
    """srcli's records first (the file recognised once), then spandrel's detector; every failure is one
    CheckpointError naming the file. A `verified` file (a catalogue sha256) skips the declared-size check: its
    layout is known, and the meta-device skeleton costs more than a second of a small job's cold start."""
    try:
        spec, tensors = normalise_state_dict(state)
    except UnknownArchitectureError as unknown:
        return _build_foreign(path, state, unknown)
    except CheckpointError as error:
        raise CheckpointError(f"{path}: {error}") from None
    try:
        if not verified:
            _check_declared(spec, tensors)
        return load_tensors(spec, tensors), spec
    except CheckpointError as error:
        raise CheckpointError(f"{path}: {error}") from None
    except RuntimeError as error:  # shape mismatches from load_state_dict
        first = str(error).strip().splitlines()[-1].strip()
        raise CheckpointError(f"{path}: tensors do not fit the detected {spec.arch} ({first})") from None


def _check_declared(spec: ModelSpec, tensors: dict[str, torch.Tensor]) -> None:
    """Keys, shapes and dtypes against the network's skeleton built on the meta device (no memory, no init), so
    a file declaring 60,000 blocks or 3000-feature convs is refused before the real network is allocated."""
    with torch.device("meta"):
        expected = spec.build().state_dict()
    missing = [k for k in expected if k not in tensors and not k.startswith(spec.architecture.optional_keys)]
    unexpected = [k for k in tensors if k not in expected]
    if missing or unexpected:
        raise CheckpointError(f"checkpoint does not fit {spec.arch} {spec.config}: "
                              f"missing {missing[:3]}, unexpected {unexpected[:3]}")
    for key, tensor in tensors.items():
        if tensor.shape != expected[key].shape:
            raise CheckpointError(f"tensors do not fit the detected {spec.arch} ({key}: {tuple(tensor.shape)} in "
                                  f"the file, {tuple(expected[key].shape)} in the network)")
        if expected[key].is_floating_point() and not tensor.is_floating_point():
            raise CheckpointError(f"tensor {key} is {str(tensor.dtype).removeprefix('torch.')}, where weights are "
                                  "floating point")


def _build_foreign(path: Path, state: dict[str, Any], unknown: UnknownArchitectureError) -> tuple[nn.Module, ModelSpec]:
    try:
        return zoo.load(state)
    except zoo.ZooMissing:
        raise CheckpointError(f"{path}: {unknown}; foreign architectures (ESRGAN, SwinIR, ...) need "
                              f"{zoo.INSTALL_HINT}") from None
    except CheckpointError as error:
        raise CheckpointError(f"{path}: {error}") from None


def non_finite_tensor(tensors: dict[str, torch.Tensor]) -> str | None:
    """The name of a floating tensor holding NaN or Inf, else None. The weights are flattened together (in chunks of
    at most _CHUNK elements, so a big model is not copied whole) and each chunk is one reduction, instead of a
    parallel region per tensor: a sum is NaN or Inf when any element is. Only a suspect sum (which a huge finite
    tensor could also give) looks at each tensor."""
    floats = [tensor.detach().reshape(-1) for tensor in tensors.values() if tensor.is_floating_point()]
    chunks: list[list[torch.Tensor]] = [[]]
    size = 0
    for tensor in floats:
        if size + tensor.numel() > _CHUNK and chunks[-1]:
            chunks.append([])
            size = 0
        chunks[-1].append(tensor)
        size += tensor.numel()
    if all(torch.isfinite(torch.cat(chunk).sum(dtype=torch.float64)) for chunk in chunks if chunk):
        return None
    return next((name for name, tensor in tensors.items()
                 if tensor.is_floating_point() and not torch.isfinite(tensor).all()), None)


_CHUNK = 1 << 24  # elements flattened at once: 64 MB of float32


def load_checkpoint(path: Path, *, verified: bool = False) -> tuple[nn.Module, ModelSpec]:
    """Load any supported checkpoint safely and strictly: every network tensor must be present and fit.

    srcli's own architectures are tried first; a file none of them recognises goes to spandrel's detector
    (the `srcli[zoo]` extra), and without spandrel the error says which extra to install. `verified`: the file
    matched a catalogue sha256 just now, so its weights are known finite and are not scanned again.
    """
    model, spec = _build_checkpoint(path, read_state_dict(path), verified)
    damaged = None if verified else non_finite_tensor(model.state_dict())
    if damaged is not None:  # such weights turn every image black (NaN) or white (Inf)
        raise CheckpointError(f"{path}: tensor {damaged} holds NaN or infinite values; these weights are damaged "
                              "(a diverged training run?)")
    model.eval()
    return model, spec
