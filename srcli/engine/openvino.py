"""Running a network with OpenVINO on the CPU: the optional `srcli[openvino]` backend.

What runs is what the torch backend runs: a folded network as one model, or any other nn.Module whole.
OpenVINO's PyTorch frontend converts it once with a dynamic batch, height and width; the IR (xml + bin, float32
weights) is cached in srcli's cache folder, keyed by a hash of the weights, the scale and the OpenVINO version:
converting takes seconds, reading a cached IR a fraction of one. It is then compiled for the static window
shapes it meets, with NHWC arrays at both ends. Inference runs in f32 (outputs within one level of torch) unless
the engine runs bf16 (`compile_config`); the tile overlap and memory estimate are the torch runner's.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import shutil
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from srcli.engine import cache
from srcli.engine.folded import FoldedRunner
from srcli.engine.module import ModuleRunner, weights_digest
from srcli.errors import BackendError
from srcli.files import write_atomic
from srcli.models.folding import Step, run_reference
from srcli.models.spec import ModelSpec

INSTALL_HINT = 'the OpenVINO backend is not installed: pip install "srcli[openvino]" (or use --backend torch)'
CACHE_FORMAT = 6  # bump when what is stored under a key changes
CACHE_KIND = "openvino"  # entries under srcli's cache folder (srcli.engine.cache)
# One stream over all cores (LATENCY): the engine runs one window at a time. f32 inference keeps outputs within
# one level of torch. bf16 (2.6x faster on a 2-core EPYC) runs only when the engine asks for it (the precision
# probe in srcli.engine.speed measured it faster, or the user asked).
COMPILE_CONFIG = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32", "NUM_STREAMS": "1"}


def compile_config(dtype: torch.dtype) -> dict[str, str]:
    """The CPU plugin's settings for an engine precision: bf16 where asked, f32 otherwise (never the plugin's
    own pick, which would be bf16 wherever the CPU has it)."""
    return {**COMPILE_CONFIG, "INFERENCE_PRECISION_HINT": "bf16" if dtype == torch.bfloat16 else "f32"}


# Compiled for each input shape it meets (one window shape; two with the self-ensemble on oblong windows) rather
# than once for any shape: OpenVINO's CPU plugin then plans its kernels and buffers ahead, and a static compile
# is quick. Only the shape in use holds its buffers (the others release theirs), so a window costs one shape's
# memory.
SHAPES_KEPT = 2

# Window sizing, as a factor over the torch runner's estimate for the same window: a folded network converted as
# one model stays inside torch's estimate; a module converted as it is gets OpenVINO's own buffers, which can take
# about twice what torch's activations do.
FOLDED_MEMORY_FACTOR = 1.0
MODULE_MEMORY_FACTOR = 2.0

conversions = 0  # networks converted by this process (not read from the cache): what the cache tests count


def load_openvino() -> Any:
    """The openvino module, or the one-line install hint as a BackendError."""
    try:
        import openvino
    except ImportError:
        raise BackendError(INSTALL_HINT) from None
    return openvino


def openvino_available() -> bool:
    """Whether `import openvino` can find the package, asked without importing it: the import costs about 0.1 s
    of a cold start, wasted when `auto` runs torch anyway (small jobs, before the conversion pays). A broken
    install is still caught where the conversion imports it, and `auto` then stays on torch."""
    from importlib.util import find_spec

    try:
        return find_spec("openvino") is not None
    except (ImportError, ValueError):
        return False


def openvino_version() -> str:
    """The installed OpenVINO's version, for cache keys: from its package record where there is one (no import)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("openvino")
    except PackageNotFoundError:  # not installed by pip: ask the module itself
        return str(load_openvino().get_version())


class _AtScale(nn.Module):
    """A multi-scale network's forward at one scale, as a one-input module the converter can trace."""

    def __init__(self, model: nn.Module, scale: int | None):
        super().__init__()
        self.model, self.scale = model, scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x) if self.scale is None else self.model(x, self.scale)


class _Steps(nn.Module):
    """A folded network's steps (srcli.models.folding) as a module the converter can trace, in NCHW: the pixel
    shuffle reads the fold's (i, j, c) channel order."""

    def __init__(self, steps: list[Step]):
        super().__init__()
        self.steps = steps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return run_reference(self.steps, x)


def cache_key(model: nn.Module, spec: ModelSpec, call_scale: int | None, scale: int, version: str) -> str:
    text = f"{CACHE_FORMAT}|{spec.arch}|{sorted(spec.config.items())}|{call_scale}|x{scale}|{version}|"
    return hashlib.sha256((text + weights_digest(model)).encode()).hexdigest()[:24]


def _convert(ov: Any, module: nn.Module, channels: int, pixel_max: float,
             shape: tuple[int, int, int] | None = None) -> Any:
    """Convert with a dynamic batch, height and width, or for one (batch, height, width) where `shape` is given;
    a network the converter cannot take is one BackendError line."""
    module = module.float().cpu().eval()
    batch, height, width = shape or (1, 24, 24)
    example = torch.rand(batch, channels, height, width, generator=torch.Generator().manual_seed(0)) * pixel_max
    dimensions = [batch, channels, height, width] if shape else [-1, channels, -1, -1]
    try:
        with torch.inference_mode(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the frontend traces with torch.jit, which warns that it is deprecated
            return ov.convert_model(module, example_input=example, input=[ov.PartialShape(dimensions)])
    except Exception as error:  # the converter raises many types (OpConversionFailure, RuntimeError, ...)
        raise BackendError(f"OpenVINO cannot convert this network ({_first_line(error)}); "
                           "use --backend torch") from None


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[0][:160]}" if lines else type(error).__name__


def _reshapes(model: Any, spec: ModelSpec) -> bool:
    """Does a dynamically converted model take another size (one the network accepts)? Networks that read their
    input's size as Python ints (DITN's patch views) are traced with the example's sizes frozen into reshapes."""
    try:
        model.clone().reshape([2, spec.channels, *spec.architecture.size.padded(40, 56)])
    except RuntimeError:
        return False
    return True


def openvino_key(model: nn.Module, spec: ModelSpec, scale: int) -> str:
    """The cache key of this network's conversion at this scale (the installed OpenVINO's)."""
    call_scale = scale if spec.architecture.multi_scale else None
    return cache_key(model, spec, call_scale, scale, openvino_version())


def openvino_cached(key: str) -> bool:
    """Whether this conversion is in the cache (verified), so OpenVINO starts without converting."""
    return key in _converted or cache.find(CACHE_KIND, key) is not None


def _work_files(key: str) -> list[Path]:
    return [root / f"{key}.torch-work" for root in cache.roots(CACHE_KIND)]


def torch_work(key: str) -> float:
    """Multiply-adds torch has run for this network in earlier runs while its conversion waited (auto)."""
    for path in _work_files(key):
        try:
            return max(0.0, float(path.read_text(encoding="ascii")))
        except (OSError, ValueError):
            continue
    return 0.0


def record_torch_work(key: str, total: float) -> None:
    """Keep the running total for later runs (a lost update between two processes only delays a conversion)."""
    for path in _work_files(key):
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(path, f"{total:.6g}".encode())
            return
        except OSError:
            continue


def _read(ov: Any, folder: Path, names: list[str]) -> list[Any] | None:
    """The entry's models, or None where OpenVINO cannot read them (the caller rebuilds the entry)."""
    core = ov.Core()
    try:
        return [core.read_model(str(folder / f"{name}.xml")) for name in names]
    except RuntimeError:
        return None


_converted: dict[str, list[Any]] = {}  # this process's conversions by key: where no cache folder can be written


def cached_models(ov: Any, key: str, parts: dict[str, tuple[nn.Module, int, float]]) -> list[Any]:
    """The converted parts (name -> module, input channels, input range) from the cache entry `key` (verified
    against the digests recorded when it was written: srcli.engine.cache), else converted now and stored. A
    changed or unreadable entry is rebuilt; where no cache folder can be written, a conversion serves the rest
    of this process."""
    names = list(parts)
    folder = cache.find(CACHE_KIND, key)
    if folder is not None:
        models = _read(ov, folder, names)
        if models is not None:
            return models
        shutil.rmtree(folder, ignore_errors=True)
    if key in _converted:
        return [model.clone() for model in _converted[key]]
    global conversions
    models = [_convert(ov, *parts[name]) for name in names]
    conversions += 1

    def write(temp: Path) -> None:
        for name, converted in zip(names, models, strict=True):
            ov.save_model(converted, str(temp / f"{name}.xml"), compress_to_fp16=False)

    if cache.store(CACHE_KIND, key, write) is None:
        _converted[key] = [model.clone() for model in models]
    for path in _work_files(key):
        with contextlib.suppress(OSError):  # a cache folder that cannot be reached holds none
            path.unlink(missing_ok=True)
    return models


def _channels_last(ov: Any, model: Any) -> Any:
    """The model taking and giving NHWC arrays: OpenVINO folds the layout change into the reorders it does anyway
    (it computes in blocked layouts), and torch's channels_last tensors pass without a copy."""
    from openvino.preprocess import PrePostProcessor

    steps = PrePostProcessor(model)
    for end in (steps.input(), steps.output()):
        end.tensor().set_layout(ov.Layout("NHWC"))
        end.model().set_layout(ov.Layout("NCHW"))
    return steps.build()


class OpenVINORunner:
    """A network compiled by OpenVINO for the CPU, with the geometry (receptive field, input normalisation, memory
    estimate) of its torch runner."""

    def __init__(self, model: nn.Module, spec: ModelSpec, scale: int, geometry: FoldedRunner | ModuleRunner,
                 ready: Any = None):
        """`ready`: a network already converted from `model`'s fold, taking NHWC input of any size (a shipped
        int8 one), run instead of converting `model`."""
        ov = load_openvino()
        call_scale = scale if spec.architecture.multi_scale else None
        self.geometry = geometry
        self.receptive_radius = geometry.receptive_radius
        parts: dict[str, tuple[nn.Module, int, float]]
        if isinstance(geometry, FoldedRunner):
            net = geometry.network
            parts = {"network": (_Steps(net.trunk + net.tail), spec.channels, spec.pixel_max)}
            self._adds_input = net.adds_input
            self._memory_factor = FOLDED_MEMORY_FACTOR
        else:
            parts = {"model": (_AtScale(copy.deepcopy(model), call_scale), spec.channels, spec.pixel_max)}
            self._adds_input = False
            self._memory_factor = MODULE_MEMORY_FACTOR
        self._core = ov.Core()
        self._compiled: OrderedDict[tuple, Any] = OrderedDict()  # (*shape, dtype) -> (compiled, request)
        if ready is not None:
            self._per_shape, self._model = None, ready
            return
        key = openvino_key(model, spec, scale)
        [converted] = cached_models(ov, key, parts)
        # Where sizes were frozen, each window shape (batch, height, width) gets its own static conversion.
        self._per_shape = None if _reshapes(converted, spec) else (ov, key, parts)
        self._model = _channels_last(ov, converted)

    @property
    def model(self) -> Any:
        """The converted network (an ov.Model taking NHWC input of any size) that each window shape compiles."""
        return self._model

    def use_model(self, model: Any) -> None:
        """Run `model` (same inputs and outputs, e.g. a quantised copy of `model`) from the next window on."""
        self._model, self._per_shape = model, None
        self._compiled.clear()

    def bytes_per_pixel(self, dtype: torch.dtype) -> float:
        return self._memory_factor * self.geometry.bytes_per_pixel(torch.float32)  # f32 whatever the engine's dtype

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        return self.geometry.normalise(x)

    def _request(self, shape: tuple[int, ...], dtype: torch.dtype) -> Any:
        """An infer request compiled for this one input shape and precision (the last SHAPES_KEPT are kept; only
        the one in use holds its buffers, so a window costs the memory of one shape)."""
        compiled, key = self._compiled, (*shape, dtype)
        if key not in compiled:
            while len(compiled) >= SHAPES_KEPT:
                compiled.popitem(last=False)
            try:
                model = self._shaped(shape)
                network = self._core.compile_model(model, "CPU", compile_config(dtype))
            except RuntimeError as error:
                raise BackendError(f"OpenVINO cannot run this network at {shape[1]}x{shape[2]} "
                                   f"({_first_line(error)}); use --backend torch") from None
            compiled[key] = (network, network.create_infer_request())
        elif next(reversed(compiled)) != key:
            compiled.move_to_end(key)
        else:
            return compiled[key][1]
        for other, (network, _) in compiled.items():
            if other != key:
                network.release_memory()
        return compiled[key][1]

    def _shaped(self, shape: tuple[int, ...]) -> Any:
        """The model for one NHWC input shape: the dynamic one reshaped, or a static conversion for that shape."""
        if self._per_shape is None:
            model = self._model.clone()
            model.reshape(list(shape))
            return model
        ov, key, parts = self._per_shape
        batch, height, width = shape[:3]
        sized = {name: (*part, (batch, height, width)) for name, part in parts.items()}
        [converted] = cached_models(ov, f"{key}-{batch}x{height}x{width}", sized)
        return _channels_last(ov, converted)

    def forward(self, x: torch.Tensor, dtype: torch.dtype, budget: int) -> torch.Tensor:
        """Normalised input -> float32 output (the global input added in float32 where the network has one); one
        inference, NHWC arrays both ways."""
        x = x.detach().cpu().float()
        array = np.ascontiguousarray(x.permute(0, 2, 3, 1).numpy())
        out = self._request(array.shape, dtype).infer({0: array}, share_inputs=True)[0]
        out = torch.from_numpy(np.array(out, dtype=np.float32, copy=True)).permute(0, 3, 1, 2)
        if self._adds_input:
            out += x
        return out
