"""Training state on disk: atomic writes, weights_only loads, RNG states as plain types, weight export."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from srcli.errors import CheckpointError, TrainingError
from srcli.files import atomic_path, sha256_file, write_atomic
from srcli.weights import read_state_dict


def atomic_torch_save(payload: Any, path: Path) -> None:
    """torch.save through the atomic writer: a kill at any moment leaves the old file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as temp:
        torch.save(payload, temp)


def atomic_write_text(text: str, path: Path) -> None:
    write_atomic(path, text.encode("utf-8"))


def rng_state() -> dict[str, Any]:
    """Python, numpy, torch and CUDA generator states in types that weights_only=True loads."""
    kind, keys, position, has_gauss, gauss = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(position),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    numpy_state = state["numpy"]
    np.random.set_state((numpy_state["kind"], numpy_state["keys"].numpy().astype(np.uint32), numpy_state["pos"],
                         numpy_state["has_gauss"], numpy_state["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def load_state(path: Path) -> dict[str, Any]:
    """A training checkpoint (latest.pt/best.pt) or a plain state dict, loaded safely by the weights loader."""
    try:
        return read_state_dict(path)
    except CheckpointError as error:
        raise TrainingError(str(error)) from None


def plain_state_dict(model: nn.Module, fp16: bool = False) -> dict[str, torch.Tensor]:
    """The model's tensors in the official layout (no DDP/compile prefixes), on the CPU."""
    state = {}
    for key, value in model.state_dict().items():
        for prefix in ("module.", "_orig_mod."):
            key = key.removeprefix(prefix)
        value = value.detach().cpu()
        state[key] = value.half() if fp16 and value.is_floating_point() else value.clone()
    return state


def export_weights(state: dict[str, torch.Tensor], run_dir: Path, metadata: dict[str, Any]) -> Path:
    """model.pt (plain state dict that srcli.weights.load_checkpoint takes as it is) + model.json."""
    weights = run_dir / "model.pt"
    atomic_torch_save(state, weights)
    record = {**metadata, "file": weights.name, "bytes": weights.stat().st_size, "sha256": sha256_file(weights)}
    atomic_write_text(json.dumps(record, indent=2) + "\n", run_dir / "model.json")
    return weights
