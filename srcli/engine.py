"""Upscaler: runs an EDSR, MDSR or VDSR network over an image, tiled, exactly and within a memory budget.

At load the network is copied and rewritten into a flat list of steps (convs, saves, pixel shuffles):
the residual scale is folded into each block's second conv, the output mean shift into the last conv,
the input mean shift becomes an elementwise subtract (folding it into the head conv would be wrong at
borders, where the conv's zero padding meets the unshifted zero), upsampler channels are reordered so a
pixel shuffle moves contiguous runs in channels_last memory, and on CPU the ReLUs and residual adds are
fused into the convs (oneDNN post-ops, bit-identical to the separate ops).

Tiles overlap by the network's receptive field, so each tile's cropped output holds exactly the values a
whole-image run gives; every tile window has one shape (edge windows are shifted inward, not shrunk),
so windows and the eight self-ensemble transforms batch into single forwards. The output is allocated
once in the image's integer dtype and tiles are written into it.
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from srcli.errors import DeviceError, ScaleError
from srcli.resize import imresize

ProgressCallback = Callable[[int, int], None]  # (done, total) windows; total restarts after a memory back-off

MIN_TILE = 16  # smallest tile core (LR px) the back-off goes down to before giving up
CPU_BUDGET_CAP = 1536 * 2**20  # bigger CPU tiles gain nothing measurable and cost peak memory
_SAFETY = 1.3  # allocator slack and oneDNN workspace over the counted activations

# BT.601 as MATLAB's rgb2ycbcr on 0..1 RGB: [Y, Cb, Cr] (0..255) = OFFSET + MATRIX @ rgb
YCBCR_OFFSET = np.array([16.0, 128.0, 128.0])
YCBCR_MATRIX = np.array([[65.481, 128.553, 24.966], [-37.797, -74.203, 112.0], [112.0, -93.786, -18.214]])
_YCBCR_INVERSE = np.linalg.inv(YCBCR_MATRIX)


@dataclass
class UpscaleOptions:
    """How to run: every field has a sensible automatic default."""

    device: str = "auto"  # auto (cuda, then mps, then cpu) | cpu | cuda | cuda:N | mps
    precision: str = "auto"  # auto (fp16 on CUDA, fp32 elsewhere) | fp32 | fp16 | bf16
    tile: int | None = None  # LR pixels per tile side, overlap excluded; None: from free memory; 0: whole image
    tile_pad: int | None = None  # overlap in LR pixels; None: the receptive field (result identical to tile=0)
    ensemble: bool = False  # geometric self-ensemble x8 (EDSR+)
    outscale: float | None = None  # final scale if different from the model's
    batch: int | None = None  # forwards batched at once; None: as many as the memory budget allows
    memory_budget: int | None = None  # bytes for activations; None: from free memory (also the OOM guard)


@dataclass
class Plan:
    """How one image is cut: what the last `upscale` used, after any back-off (for tests and the CLI)."""

    tile: int  # 0 = whole image
    pad: int
    batch: int
    backoffs: int = 0
    fallbacks: int = 0  # batches re-run in fp32 because fp16/bf16 gave NaN/Inf


class _OutOfMemory(Exception):
    """A forward did not fit: torch's OOM, or the estimate over an explicit budget."""


# --- the network as a list of steps --------------------------------------------------------------------


@dataclass
class _Conv:
    weight: torch.Tensor
    bias: torch.Tensor | None
    relu: bool = False
    residual: str | None = None  # add this saved tensor to the conv output
    fused: bool = False  # run as one oneDNN conv with ReLU / add post-op (set where a probe shows it works)

    @property
    def radius(self) -> int:
        return self.weight.shape[-1] // 2


@dataclass
class _Save:
    key: str


@dataclass
class _Shuffle:
    factor: int


_Step = _Conv | _Save | _Shuffle


@dataclass
class _Network:
    """A folded network: `trunk` runs at input resolution, `tail` (upsampling onward) in row strips."""

    trunk: list[_Step]
    tail: list[_Step]
    input_scale: torch.Tensor  # per channel: model input = x * scale + shift (the input mean shift)
    input_shift: torch.Tensor
    input_matrix: torch.Tensor | None = None  # non-diagonal input shift (never in official files)
    adds_input: bool = False  # VDSR: output = input + network, added in float32 by the caller (see fold)

    def to(self, device: torch.device, dtype: torch.dtype) -> _Network:
        def move(step: _Step) -> _Step:
            if not isinstance(step, _Conv):
                return step
            weight = step.weight.to(device, dtype).contiguous(memory_format=torch.channels_last)
            bias = None if step.bias is None else step.bias.to(device, dtype)
            moved = _Conv(weight, bias, step.relu, step.residual)
            moved.fused = _fusion_works(moved)
            return moved

        return _Network(
            [move(s) for s in self.trunk], [move(s) for s in self.tail],
            self.input_scale.to(device), self.input_shift.to(device),
            None if self.input_matrix is None else self.input_matrix.to(device), self.adds_input,
        )


def _conv_step(module: nn.Conv2d, relu: bool = False, residual: str | None = None) -> _Conv:
    bias = None if module.bias is None else module.bias.detach().clone().float()
    return _Conv(module.weight.detach().clone().float(), bias, relu, residual)


def _resblock_steps(block: nn.Module, key: str) -> list[_Step]:
    """conv-ReLU-conv + x, with the residual scale folded into the second conv."""
    first, second = _conv_step(block.body[0], relu=True), _conv_step(block.body[2], residual=key)
    if block.res_scale != 1.0:
        second.weight *= block.res_scale
        if second.bias is not None:
            second.bias *= block.res_scale
    return [_Save(key), first, second]


def _upsampler_steps(upsampler: nn.Sequential) -> list[_Step]:
    """Conv + PixelShuffle pairs, output channels reordered from (c, i, j) to (i, j, c) for the fast shuffle."""
    steps: list[_Step] = []
    for module in upsampler:
        if isinstance(module, nn.Conv2d):
            steps.append(_conv_step(module))
        elif isinstance(module, nn.PixelShuffle):
            conv, factor = steps[-1], module.upscale_factor
            assert isinstance(conv, _Conv)
            out = conv.weight.shape[0]
            order = torch.arange(out).view(out // factor**2, factor**2).t().reshape(-1)
            conv.weight = conv.weight[order]
            conv.bias = None if conv.bias is None else conv.bias[order]
            steps.append(_Shuffle(factor))
    return steps


def _mean_shift(module: nn.Conv2d) -> tuple[torch.Tensor, torch.Tensor]:
    return module.weight.detach()[:, :, 0, 0].float().clone(), module.bias.detach().float().clone()


def _fold_output_shift(last: _Conv, shift: nn.Conv2d) -> None:
    """A 1x1 conv after the last conv is exactly a change of that conv's weights and bias."""
    matrix, bias = _mean_shift(shift)
    last.weight = torch.einsum("oc,cikl->oikl", matrix, last.weight)
    last.bias = bias + (matrix @ last.bias if last.bias is not None else 0)


def _input_transform(model: nn.Module) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    if not hasattr(model, "sub_mean"):
        return torch.ones(model.channels), torch.zeros(model.channels), None
    matrix, bias = _mean_shift(model.sub_mean)
    diagonal = torch.diagonal(matrix).clone()
    if torch.equal(matrix, torch.diag(diagonal)):
        return diagonal, bias, None
    return torch.ones(3), bias, matrix


def fold(model: nn.Module, scale: int) -> _Network:
    """A folded copy of an EDSR, MDSR or VDSR model at one scale; the caller's model is left untouched."""
    model = copy.deepcopy(model).float().cpu().eval()
    arch = getattr(model, "arch", None)
    if arch == "vdsr":
        # The global skip is not a step: in fp16/bf16 the image plus its few-grey-level residual would be
        # rounded to the half type's step (1/256 near 1 in bf16), so `_forward` adds the float32 input.
        trunk: list[_Step] = [_conv_step(model.input, relu=True)]
        trunk += [_conv_step(layer.conv, relu=True) for layer in model.residual_layer]
        trunk.append(_conv_step(model.output))
        tail: list[_Step] = []
    elif arch in ("edsr", "mdsr"):
        trunk = [_conv_step(model.head[0])]
        if arch == "mdsr":
            index = model.scale_index(scale)
            for number, block in enumerate(model.pre_process[index]):
                trunk += _resblock_steps(block, f"pre{number}")
            upsampler, last = model.upsample[index], model.tail[0]
        else:
            upsampler, last = model.tail[0], model.tail[1]
        trunk.append(_Save("skip"))
        for block in model.body[:-1]:
            trunk += _resblock_steps(block, "block")
        trunk.append(_conv_step(model.body[-1], residual="skip"))
        tail = [*_upsampler_steps(upsampler), _conv_step(last)]
        _fold_output_shift(tail[-1], model.add_mean)
    else:
        raise TypeError(f"the engine runs EDSR, MDSR and VDSR models, not {type(model).__name__}")
    scale_in, shift_in, matrix_in = _input_transform(model)
    return _Network(trunk, tail, scale_in, shift_in, matrix_in, adds_input=arch == "vdsr")


def _walk(steps: list[_Step], factor: float, channels: int) -> tuple[float, float, int, float]:
    """(receptive radius in input px, peak live elements per input px, out channels, out factor)."""
    radius, peak, saved = 0.0, 0.0, {}
    for step in steps:
        here = channels * factor * factor
        if isinstance(step, _Save):
            saved[step.key] = here
        elif isinstance(step, _Conv):
            radius += step.radius / factor
            out = step.weight.shape[0]
            peak = max(peak, sum(saved.values()) + here + out * factor * factor)
            if step.residual:
                saved.pop(step.residual, None)
            channels = out
        else:
            peak = max(peak, sum(saved.values()) + 2 * here)
            factor *= step.factor
            channels //= step.factor**2
    return radius, peak, channels, factor


# --- running the steps ---------------------------------------------------------------------------------

def _fusion_works(step: _Conv) -> bool:
    """oneDNN conv+ReLU / conv+add fusion is CPU-only, and some builds or CPUs lack some variants
    (bf16 without AVX-512, odd channel counts in older releases): try this conv on a tiny input."""
    if step.weight.device.type != "cpu" or not torch.backends.mkldnn.is_available():
        return False
    generator = torch.Generator().manual_seed(0)
    shape = (1, step.weight.shape[1], 6, 6)
    x = torch.randn(shape, generator=generator).to(step.weight.dtype).contiguous(memory_format=torch.channels_last)
    residual = None
    if step.residual:
        residual = torch.randn(1, step.weight.shape[0], 6, 6, generator=generator).to(step.weight.dtype)
        residual = residual.contiguous(memory_format=torch.channels_last)
    try:
        with torch.inference_mode():
            fused = _fused_conv(x, step.weight, step.bias, step.radius, step.relu, residual)
            plain = F.conv2d(x, step.weight, step.bias, padding=step.radius)
            plain = plain.relu() if step.relu else plain
            plain = plain + residual if residual is not None else plain
    except (AttributeError, RuntimeError, NotImplementedError):
        return False
    return fused.shape == plain.shape and bool(torch.allclose(fused.float(), plain.float(), rtol=1e-3, atol=1e-3))


def _fused_conv(
    x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, pad: int, relu: bool, residual: torch.Tensor | None
) -> torch.Tensor:
    ops, geometry = torch.ops.mkldnn, ([pad, pad], [1, 1], [1, 1], 1)
    if residual is not None:
        return ops._convolution_pointwise.binary(x, residual, w, b, *geometry, "add", None, None, [], None)
    return ops._convolution_pointwise(x, w, b, *geometry, "relu" if relu else "none", [], "")


def _conv(step: _Conv, x: torch.Tensor, saved: dict[str, torch.Tensor]) -> torch.Tensor:
    residual = saved.pop(step.residual) if step.residual else None
    if step.fused:
        return _fused_conv(x, step.weight, step.bias, step.radius, step.relu, residual)
    y = F.conv2d(x, step.weight, step.bias, padding=step.radius)
    if step.relu:
        y.relu_()
    if residual is not None:
        y.add_(residual)
    return y


def _pixel_shuffle(x: torch.Tensor, factor: int) -> torch.Tensor:
    """PixelShuffle for channels ordered (i, j, c): in channels_last memory each move is one run of c values."""
    n, channels, height, width = x.shape
    c = channels // factor**2
    nhwc = x.permute(0, 2, 3, 1).reshape(n, height, width, factor, factor, c)
    out = nhwc.permute(0, 1, 3, 2, 4, 5).reshape(n, height * factor, width * factor, c)
    return out.permute(0, 3, 1, 2)


def _run_steps(steps: list[_Step], x: torch.Tensor) -> torch.Tensor:
    saved: dict[str, torch.Tensor] = {}
    for step in steps:
        if isinstance(step, _Save):
            saved[step.key] = x
        elif isinstance(step, _Conv):
            x = _conv(step, x, saved)
        else:
            x = _pixel_shuffle(x, step.factor)
    return x


def _run_network(net: _Network, x: torch.Tensor, strip_rows: int, halo: int) -> torch.Tensor:
    """Trunk on the whole window, then the tail over row strips that overlap by its receptive radius."""
    features = _run_steps(net.trunk, x)
    if not net.tail:
        return features
    height = features.shape[2]
    if strip_rows >= height:
        return _run_steps(net.tail, features)
    pieces = []
    for top in range(0, height, strip_rows):
        bottom = min(top + strip_rows, height)
        start, stop = max(top - halo, 0), min(bottom + halo, height)
        out = _run_steps(net.tail, features[:, :, start:stop])
        factor = out.shape[2] // (stop - start)
        pieces.append(out[:, :, (top - start) * factor : (bottom - start) * factor])
    return torch.cat(pieces, dim=2)


# --- devices, precision, memory ------------------------------------------------------------------------


def choose_device(name: str = "auto") -> torch.device:
    """auto: cuda, then mps, then cpu. An explicit device that is absent is the user's error."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise DeviceError(f"unknown device {name!r}: use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(f"device {name!r} asked for, but this torch sees no CUDA GPU; use --device cpu")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise DeviceError(f"device {name!r} asked for, but only {torch.cuda.device_count()} CUDA GPU(s) exist")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise DeviceError("device 'mps' asked for, but Metal is not available here; use --device cpu")
    if device.type not in ("cpu", "cuda", "mps"):
        raise DeviceError(f"device {name!r} is not supported: use auto, cpu, cuda, cuda:N or mps")
    return device


_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def choose_dtype(precision: str, device: torch.device) -> torch.dtype:
    """auto: fp16 on CUDA (tensor cores; 3 more mantissa bits than bf16, and any overflow falls back to
    fp32 per batch), fp32 elsewhere (half precision on CPU is slower and is what breaks other tools)."""
    if precision == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    if precision not in _DTYPES:
        raise DeviceError(f"unknown precision {precision!r}: use auto, fp32, fp16 or bf16")
    return _DTYPES[precision]


def available_memory(device: torch.device) -> int:
    """Bytes free for activations now: CUDA's free memory, or the machine's available RAM."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    if device.type == "mps":
        return int(torch.mps.recommended_max_memory() - torch.mps.current_allocated_memory())
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 4 * 2**30


# --- tiling --------------------------------------------------------------------------------------------


def _core_length(length: int, tile: int) -> int:
    """Cores evened out over the axis (no sliver at the end); the whole axis when the tile covers it."""
    if tile <= 0 or tile >= length:
        return length
    return math.ceil(length / math.ceil(length / tile))


def window_size(length: int, tile: int, pad: int) -> int:
    """Every window along an axis has this one length: core + 2 pad, at most the axis."""
    return min(_core_length(length, tile) + 2 * pad, length)


def _spans(length: int, tile: int, pad: int) -> list[tuple[int, int, int]]:
    """(core start, core stop, window start) along one axis; edge windows shift inward rather than shrink."""
    core, window = _core_length(length, tile), window_size(length, tile, pad)
    return [
        (start, min(start + core, length), min(max(start - pad, 0), length - window))
        for start in range(0, length, core)
    ]


@dataclass
class _Window:
    top: int  # core, in LR pixels
    bottom: int
    left: int
    right: int
    y0: int  # window origin
    x0: int


def _windows(height: int, width: int, tile: int, pad: int) -> list[_Window]:
    return [
        _Window(top, bottom, left, right, y0, x0)
        for top, bottom, y0 in _spans(height, tile, pad)
        for left, right, x0 in _spans(width, tile, pad)
    ]


def _dihedral(x: torch.Tensor, k: int, flip: bool) -> torch.Tensor:
    return torch.rot90(x.flip(-1) if flip else x, k, dims=(-2, -1))


def _undo_dihedral(y: torch.Tensor, k: int, flip: bool) -> torch.Tensor:
    y = torch.rot90(y, -k, dims=(-2, -1))
    return y.flip(-1) if flip else y


# --- the engine ----------------------------------------------------------------------------------------


@dataclass
class _Batch:
    windows: list[_Window]
    inputs: torch.Tensor  # network input, NCHW on the device (float32)
    chroma: list[np.ndarray] = field(default_factory=list)  # Cb, Cr (0..255) per window, Y-channel VDSR


class Upscaler:
    """A network made ready for inference at one scale; `upscale` maps HxWx3 uint8/uint16 to the same dtype.

    The model is deep-copied and folded; the caller's module is never changed.
    """

    def __init__(self, model: nn.Module, scale: int, options: UpscaleOptions | None = None):
        self.options = options or UpscaleOptions()
        self.scale = int(scale)
        self.upscales_inside = bool(getattr(model, "upscales_inside", True))
        scales = tuple(getattr(model, "scales", (self.scale,)))
        if self.upscales_inside and self.scale not in scales:
            raise ScaleError(f"this {model.arch} model is x{'/x'.join(map(str, scales))}; it cannot upscale x{scale}")
        if not self.upscales_inside and self.scale < 1:
            raise ScaleError(f"scale must be at least 1, not {scale}")
        if self.options.outscale is not None and not self.options.outscale > 0:
            raise ScaleError(f"outscale must be positive, not {self.options.outscale}")
        self.device = choose_device(self.options.device)
        self.dtype = choose_dtype(self.options.precision, self.device)
        self.pixel_max = float(model.pixel_max)
        self.channels = int(model.channels)
        self.luma_model = not self.upscales_inside and self.channels == 1
        self._master = fold(model, self.scale)
        self._nets: dict[torch.dtype, _Network] = {}
        self.input_factor = 1 if self.upscales_inside else self.scale  # network input px per LR px, per side
        trunk_radius, trunk_peak, channels, factor = _walk(self._master.trunk, 1.0, self.channels)
        tail_radius, tail_peak, _, out_factor = _walk(self._master.tail, factor, channels)
        self._tail_halo = math.ceil(tail_radius) if self._master.tail else 0
        self._trunk_elements = trunk_peak + self.channels
        self._tail_elements = tail_peak
        self._trunk_features = channels if self._master.tail else 0  # held while the tail runs in strips
        self._out_elements = 3 * out_factor * out_factor
        radius = trunk_radius + tail_radius  # in network-input pixels
        if self.upscales_inside:
            self.receptive_field = math.ceil(radius)
        else:  # the bicubic window edge (mirrored, +-2 LR px of kernel) plus the network's reach, in LR px
            self.receptive_field = math.ceil(radius / self.scale) + 3
        self.last_plan: Plan | None = None
        self._budget: int | None = None  # the run's memory budget, read once per image

    # -- the network at a precision -------------------------------------------------------------------

    def _network(self, dtype: torch.dtype) -> _Network:
        if dtype not in self._nets:
            self._nets[dtype] = self._master.to(self.device, dtype)
        return self._nets[dtype]

    def _normalise(self, x: torch.Tensor) -> torch.Tensor:
        """Model-space input (0..pixel_max) -> the folded network's input: the exact mean subtraction."""
        net = self._network(torch.float32)
        if net.input_matrix is not None:
            x = torch.einsum("oc,nchw->nohw", net.input_matrix, x)
        return x * net.input_scale.view(1, -1, 1, 1) + net.input_shift.view(1, -1, 1, 1)

    def _strip_rows(self, height: int, pixels: int) -> int:
        """Rows per tail strip: all of them when the high-resolution tail fits the budget whole (GPUs),
        else strips sized so the tail needs no more memory than the trunk."""
        if not self._tail_elements:
            return height
        element = torch.finfo(self.dtype).bits // 8
        whole_tail = _SAFETY * element * (self._trunk_features + self._tail_elements) * pixels
        if whole_tail <= (self._budget if self._budget is not None else self.memory_budget()):
            return height
        return max(8, int(height * self._trunk_elements / self._tail_elements))

    def _forward(self, x: torch.Tensor, plan: Plan) -> torch.Tensor:
        """Normalised input -> float32 output; NaN/Inf in half precision re-runs the batch in fp32."""
        self._check_budget(x.shape[0], x.shape[2] * x.shape[3])
        x = x.contiguous(memory_format=torch.channels_last)
        strip, halo = self._strip_rows(x.shape[2], x.shape[0] * x.shape[2] * x.shape[3]), self._tail_halo
        try:
            out = _run_network(self._network(self.dtype), x.to(self.dtype), strip, halo).float()
            if self.dtype != torch.float32 and not torch.isfinite(out).all():
                plan.fallbacks += 1
                out = _run_network(self._network(torch.float32), x.float(), strip, halo)
            if self._master.adds_input:
                out += x.float()
        except torch.cuda.OutOfMemoryError:
            raise _OutOfMemory from None
        except RuntimeError as error:  # MPS and CPU allocators raise plain RuntimeErrors
            if "out of memory" in str(error).lower():
                raise _OutOfMemory from None
            raise
        return out

    def network_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The folded network on the model's own input (NCHW, 0..pixel_max): equals `model(x, scale)`."""
        with torch.inference_mode():
            x = self._normalise(x.to(self.device, torch.float32))
            return self._forward(x, Plan(0, 0, 1))

    def _forward_batched(self, inputs: torch.Tensor, plan: Plan) -> torch.Tensor:
        """Forwards in groups of at most `plan.batch`, self-ensembled when asked."""
        if not self.options.ensemble:
            outputs = [self._forward(chunk, plan) for chunk in inputs.split(plan.batch)]
            return outputs[0] if len(outputs) == 1 else torch.cat(outputs)
        transforms = [(k, flip) for flip in (False, True) for k in range(4)]
        same_shape = inputs.shape[2] == inputs.shape[3]
        groups = [transforms] if same_shape else [transforms[0::2], transforms[1::2]]  # even k keep the shape
        count, total = inputs.shape[0], None
        for group in groups:
            items = torch.cat([_dihedral(inputs, k, flip) for k, flip in group])  # one shape: batchable
            for start in range(0, items.shape[0], plan.batch):
                outputs = self._forward(items[start : start + plan.batch], plan)
                for offset, out in enumerate(outputs):
                    k, flip = group[(start + offset) // count]
                    out = _undo_dihedral(out, k, flip)
                    if total is None:
                        total = out.new_zeros((count, *out.shape))
                    total[(start + offset) % count] += out
        assert total is not None
        return total / 8

    # -- memory ---------------------------------------------------------------------------------------

    def bytes_per_window(self, pixels: int) -> int:
        """Estimated peak bytes of one forward over a window of `pixels` network-input pixels."""
        element = torch.finfo(self.dtype).bits // 8
        activations = element * (self._trunk_elements + self._trunk_features) * pixels  # tail strips <= trunk
        outputs = 4 * self._out_elements * pixels * (3 if self.options.ensemble else 2)
        bicubic = 0 if self.upscales_inside else 8 * 3 * 4 * pixels  # float64 RGB, YCbCr and copies
        return int(_SAFETY * (activations + outputs + bicubic))

    def memory_budget(self) -> int:
        """Bytes the engine plans to use: the explicit budget, else a share of free device memory."""
        if self.options.memory_budget is not None:
            return int(self.options.memory_budget)
        free = available_memory(self.device)
        if self.device.type == "cpu":
            return int(min(free // 2, CPU_BUDGET_CAP))
        return int(free * 0.8)

    def _check_budget(self, batch: int, pixels: int) -> None:
        """The back-off trigger where torch raises none: over the explicit budget, or the CPU's free RAM."""
        needed = batch * self.bytes_per_window(pixels)
        if self.options.memory_budget is not None:
            limit = self.options.memory_budget
        elif self.device.type == "cpu":
            limit = int(available_memory(self.device) * 0.9)
        else:
            return
        if needed > limit:
            raise _OutOfMemory

    def choose_tile(self, height: int, width: int, pad: int, budget: int) -> int:
        """The largest tile (LR px per side, overlap excluded) whose window fits the budget; 0 = whole image."""
        factor = self.input_factor
        if self.bytes_per_window(height * width * factor * factor) <= budget:
            return 0
        per_lr_pixel = self.bytes_per_window(factor * factor * 1024) / 1024
        side = int(math.sqrt(budget / per_lr_pixel))
        tile = (side - 2 * pad) // 8 * 8
        return max(tile, MIN_TILE)

    def plan(self, height: int, width: int) -> Plan:
        pad = self.receptive_field if self.options.tile_pad is None else max(0, int(self.options.tile_pad))
        budget = self._budget if self._budget is not None else self.memory_budget()
        tile = self.options.tile
        if tile is None:
            tile = self.choose_tile(height, width, pad, budget)
        window = window_size(height, tile, pad) * window_size(width, tile, pad) * self.input_factor**2
        # Batching windows (and the 8 ensemble transforms) pays on GPUs; on CPU one window per forward keeps the
        # activations in cache and was faster (384x384 x2 at tile 96: 8.2 s vs 9.9 s; ensemble 7.3x vs 8.7x plain).
        if self.options.batch:
            batch = self.options.batch
        elif self.device.type == "cpu":
            batch = 1
        else:
            batch = max(1, budget // max(1, self.bytes_per_window(window)))
        return Plan(max(0, int(tile)), pad, int(batch))

    @staticmethod
    def _smaller(plan: Plan, height: int, width: int) -> Plan | None:
        """Halve the batch first, then the tile; None when already at the smallest tile."""
        if plan.batch > 1:
            return Plan(plan.tile, plan.pad, plan.batch // 2, plan.backoffs + 1, plan.fallbacks)
        current = plan.tile if plan.tile > 0 else max(height, width)
        if current <= MIN_TILE:
            return None
        return Plan(max(current // 2, MIN_TILE), plan.pad, 1, plan.backoffs + 1, plan.fallbacks)

    # -- pixels in, pixels out ------------------------------------------------------------------------

    def _batches(self, image: np.ndarray, plan: Plan) -> Iterator[_Batch]:
        windows = _windows(image.shape[0], image.shape[1], plan.tile, plan.pad)
        window_h = window_size(image.shape[0], plan.tile, plan.pad)
        window_w = window_size(image.shape[1], plan.tile, plan.pad)
        peak = float(np.iinfo(image.dtype).max)
        per_forward = plan.batch if not self.options.ensemble else max(1, plan.batch // 8)
        for first in range(0, len(windows), per_forward):
            group = windows[first : first + per_forward]
            crops = [image[w.y0 : w.y0 + window_h, w.x0 : w.x0 + window_w] for w in group]
            if self.upscales_inside:
                stacked = torch.from_numpy(np.stack(crops)).to(self.device)
                x = stacked.permute(0, 3, 1, 2).float() * (self.pixel_max / peak)
                yield _Batch(group, self._normalise(x))
                continue
            planes, chroma = [], []
            for crop in crops:
                bicubic = imresize(crop.astype(np.float64) / peak, scale=self.scale)  # MATLAB double path
                if self.luma_model:
                    ycbcr = YCBCR_OFFSET + bicubic @ YCBCR_MATRIX.T
                    planes.append(ycbcr[:, :, :1] / 255.0)
                    chroma.append(ycbcr[:, :, 1:])
                else:
                    planes.append(bicubic)
            x = torch.from_numpy(np.stack(planes)).to(self.device, torch.float32).permute(0, 3, 1, 2)
            yield _Batch(group, self._normalise(x * self.pixel_max), chroma)

    def _write(self, batch: _Batch, index: int, output: torch.Tensor, out: np.ndarray) -> None:
        """Crop one window's output to its core and store it: quantized RGB, or float Y (clipped) for scoring."""
        w, s = batch.windows[index], self.scale
        top, left = (w.top - w.y0) * s, (w.left - w.x0) * s
        rows, cols = slice(top, top + (w.bottom - w.top) * s), slice(left, left + (w.right - w.left) * s)
        target = out[w.top * s : w.bottom * s, w.left * s : w.right * s]
        core = output[index][:, rows, cols]
        if out.dtype != np.float64 and not self.luma_model:  # quantize on the device: only bytes travel
            peak = float(np.iinfo(out.dtype).max)
            factor = peak / self.pixel_max
            quantized = (core.mul(factor) if factor != 1.0 else core.clone()).round_().clamp_(0, peak)
            quantized = quantized.to(torch.uint8 if out.dtype == np.uint8 else torch.int32)
            target[...] = quantized.permute(1, 2, 0).cpu().numpy()
            return
        values = core.permute(1, 2, 0).double().cpu().numpy() * (255.0 / self.pixel_max)
        if out.dtype == np.float64:
            if values.shape[2] == 1:
                target[...] = np.clip(values[:, :, 0], 0.0, 255.0)
            else:
                target[...] = YCBCR_OFFSET[0] + np.clip(values, 0.0, 255.0) @ YCBCR_MATRIX[0] / 255.0
            return
        ycbcr = np.concatenate([values, batch.chroma[index][rows, cols]], axis=2)
        rgb = (ycbcr - YCBCR_OFFSET) @ _YCBCR_INVERSE.T * 255.0
        peak = float(np.iinfo(out.dtype).max)
        target[...] = np.clip(np.round(rgb * (peak / 255.0)), 0, peak)

    def _run(self, image: np.ndarray, out: np.ndarray, progress: ProgressCallback | None) -> None:
        """Fill `out` (integer RGB, or float64 HxW luma) window by window, backing off on out-of-memory."""
        height, width = image.shape[:2]
        self._budget = self.memory_budget()
        plan = self.plan(height, width)
        while True:
            try:
                self._run_plan(image, out, plan, progress)
                self.last_plan = plan
                return
            except _OutOfMemory:
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                smaller = self._smaller(plan, height, width)
                if smaller is None:
                    raise DeviceError(
                        f"not enough memory on {self.device} even for {MIN_TILE}px tiles; "
                        "close other programs or use --device cpu"
                    ) from None
                plan = smaller

    def _run_plan(self, image: np.ndarray, out: np.ndarray, plan: Plan, progress: ProgressCallback | None) -> None:
        total = len(_windows(image.shape[0], image.shape[1], plan.tile, plan.pad))
        done = 0
        with torch.inference_mode():
            for batch in self._batches(image, plan):
                output = self._forward_batched(batch.inputs, plan)
                for index in range(len(batch.windows)):
                    self._write(batch, index, output, out)
                done += len(batch.windows)
                if progress:
                    progress(done, total)

    def _check_image(self, image: np.ndarray) -> None:
        if not isinstance(image, np.ndarray) or image.dtype not in (np.uint8, np.uint16):
            raise TypeError("the engine takes a uint8 or uint16 numpy image")
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"the engine takes RGB images (HxWx3), not shape {image.shape}")

    def upscale(self, image: np.ndarray, progress: ProgressCallback | None = None) -> np.ndarray:
        """Super-resolve an RGB (HxWx3) uint8 or uint16 image; returns the same dtype at the model's scale
        (or at `outscale`: the model's scale, then INTER_AREA to shrink or INTER_CUBIC to enlarge)."""
        self._check_image(image)
        height, width = image.shape[:2]
        out = np.empty((height * self.scale, width * self.scale, 3), dtype=image.dtype)
        self._run(image, out, progress)
        outscale = self.options.outscale
        if outscale is None or outscale == self.scale:
            return out
        size = (max(1, round(width * outscale)), max(1, round(height * outscale)))
        interpolation = cv2.INTER_AREA if outscale < self.scale else cv2.INTER_CUBIC
        return cv2.resize(out, size, interpolation=interpolation)

    def upscale_luma(self, image: np.ndarray, progress: ProgressCallback | None = None) -> np.ndarray:
        """Float Y (BT.601, 0..255, clipped, not rounded) of the super-resolved image, at the model's scale.

        For a Y-channel VDSR this is the network's own output, the quantity its published PSNRs score;
        for RGB models it is the luma of the unquantized RGB output. `outscale` does not apply.
        """
        self._check_image(image)
        height, width = image.shape[:2]
        out = np.empty((height * self.scale, width * self.scale), dtype=np.float64)
        self._run(image, out, progress)
        return out
