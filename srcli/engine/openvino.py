"""Running a network with OpenVINO on the CPU: the optional `srcli[openvino]` backend.

The nn.Module is converted once by OpenVINO's PyTorch frontend with a dynamic batch, height and width, and the
converted model (IR: xml + bin, float32 weights) is cached in srcli's cache folder, keyed by a hash of the
weights, the scale and the OpenVINO version: converting takes seconds, compiling a cached IR a fraction of one.
Inference is pinned to f32 so outputs stay within one level of the torch backend; the exact tile overlap and
the memory estimate come from the torch runner's geometry (the fold's walk or the module probe).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from srcli.errors import BackendError
from srcli.models.spec import ModelSpec

INSTALL_HINT = 'the OpenVINO backend is not installed: pip install "srcli[openvino]" (or use --backend torch)'
CACHE_FORMAT = 1  # bump when what is stored under a key changes
# Measured on a 2-core EPYC (see benchmarks/bench_upscale.py): one stream over all cores is what a tile-by-tile
# run needs; f32 keeps outputs within one level of torch (bf16 is faster where the CPU has it, but moves ~20%
# of the pixels by a level on a trained EDSR-baseline).
COMPILE_CONFIG = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32", "NUM_STREAMS": "1"}

conversions = 0  # networks converted by this process (not read from the cache): what the cache tests count


def load_openvino() -> Any:
    """The openvino module, or the one-line install hint as a BackendError."""
    try:
        import openvino
    except ImportError:
        raise BackendError(INSTALL_HINT) from None
    return openvino


def openvino_available() -> bool:
    try:
        load_openvino()
    except BackendError:
        return False
    return True


class _AtScale(nn.Module):
    """A multi-scale network's forward at one scale, as a one-input module the converter can trace."""

    def __init__(self, model: nn.Module, scale: int | None):
        super().__init__()
        self.model, self.scale = model, scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x) if self.scale is None else self.model(x, self.scale)


def weights_digest(model: nn.Module) -> str:
    """sha256 over every tensor of the state dict (names, dtypes, shapes, bytes): the same weights, the same key,
    wherever they were loaded from."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        value = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{value.dtype}|{tuple(value.shape)}|".encode())
        digest.update(value.view(torch.uint8).numpy().tobytes() if value.numel() else b"")
    return digest.hexdigest()


def cache_key(model: nn.Module, spec: ModelSpec, call_scale: int | None, scale: int, version: str) -> str:
    text = f"{CACHE_FORMAT}|{spec.arch}|{sorted(spec.config.items())}|{call_scale}|x{scale}|{version}|"
    return hashlib.sha256((text + weights_digest(model)).encode()).hexdigest()[:24]


def _convert(ov: Any, model: nn.Module, channels: int, pixel_max: float, call_scale: int | None) -> Any:
    global conversions
    module = _AtScale(model, call_scale).float().cpu().eval()
    example = torch.rand(1, channels, 24, 24, generator=torch.Generator().manual_seed(0)) * pixel_max
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the frontend traces with torch.jit, which warns that it is deprecated
        converted = ov.convert_model(module, example_input=example, input=[ov.PartialShape([-1, channels, -1, -1])])
    conversions += 1
    return converted


def cached_model(ov: Any, model: nn.Module, spec: ModelSpec, scale: int, call_scale: int | None, cache: Path) -> Any:
    """The converted model from the cache, else converted now and stored (temp folder, then one rename, so a
    reader never sees half an IR and two processes converting at once both end with a whole one)."""
    folder = cache / cache_key(model, spec, call_scale, scale, ov.get_version())
    xml = folder / "model.xml"
    core = ov.Core()
    if xml.is_file() and xml.with_suffix(".bin").is_file():
        try:
            return core.read_model(str(xml))
        except RuntimeError:
            shutil.rmtree(folder, ignore_errors=True)  # a damaged entry: convert again
    converted = _convert(ov, model, spec.channels, spec.pixel_max, call_scale)
    try:
        cache.mkdir(parents=True, exist_ok=True)
        temp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=cache))
        ov.save_model(converted, str(temp / "model.xml"), compress_to_fp16=False)
        try:
            os.rename(temp, folder)
        except OSError:  # another process stored it first
            shutil.rmtree(temp, ignore_errors=True)
    except OSError:
        pass  # an unwritable cache costs a conversion next time, never the run
    return converted


class OpenVINORunner:
    """A network compiled by OpenVINO for the CPU; geometry (receptive field, tile memory) from a torch runner."""

    def __init__(self, model: nn.Module, spec: ModelSpec, scale: int, geometry: Any, cache: Path):
        ov = load_openvino()
        call_scale = scale if spec.architecture.multi_scale else None
        self.receptive_radius = geometry.receptive_radius
        self._elements = geometry.whole_elements_per_pixel  # OpenVINO runs the tail whole, not in strips
        compiled = ov.Core().compile_model(cached_model(ov, model, spec, scale, call_scale, cache), "CPU",
                                           COMPILE_CONFIG)
        self._request = compiled.create_infer_request()

    def bytes_per_pixel(self, dtype: torch.dtype) -> float:
        return 4 * self._elements  # f32 whatever the engine's dtype: OpenVINO keeps its own precision

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        return x  # the converted module does its own input normalisation

    def forward(self, x: torch.Tensor, dtype: torch.dtype, budget: int) -> torch.Tensor:
        array = np.ascontiguousarray(x.detach().cpu().float().numpy())
        out = self._request.infer({0: array}, share_inputs=True)[0]
        return torch.from_numpy(np.array(out, dtype=np.float32, copy=True))
