"""Running a folded network (srcli.models.folding) fast: channels_last memory and fused oneDNN convs on the CPU."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from srcli.models.folding import Conv, FoldedNetwork, Ops, Step, run_steps, walk

SAFETY = 1.3  # allocator slack and oneDNN workspace over the counted activations


def _fusion_works(step: Conv, tried: dict[tuple, bool]) -> bool:
    """oneDNN conv+ReLU / conv+add fusion is CPU-only, and some builds or CPUs lack some variants
    (bf16 without AVX-512, odd channel counts in older releases): try this conv on a tiny input, once per kind
    of conv (`tried`: EDSR-baseline's 34 convs are 6 kinds; each try costs ~10 ms)."""
    if step.weight.device.type != "cpu" or not torch.backends.mkldnn.is_available():
        return False
    kind = (tuple(step.weight.shape), step.weight.dtype, step.bias is not None, step.relu, step.residual is not None)
    if kind not in tried:
        tried[kind] = _try_fusion(step)
    return tried[kind]


def _try_fusion(step: Conv) -> bool:
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


def _conv(step: Conv, x: torch.Tensor, residual: torch.Tensor | None) -> torch.Tensor:
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


_FAST = Ops(_conv, _pixel_shuffle, lambda x: x.contiguous(memory_format=torch.channels_last))


def output_side(net: FoldedNetwork) -> tuple[list[Step], list[Step]]:
    """(steps run at the engine's precision, steps always run in fp32): the tail, or where a network has none its
    last conv. The output side computes pixel values: in bf16 (8 significant bits) a value near 200 would be
    rounded to a whole level before the final clamp and rounding, and a composed tail is a small share of the work."""
    if net.tail:
        return net.trunk, net.tail
    last = net.trunk[-1] if net.trunk else None
    if isinstance(last, Conv) and not last.residual:
        return net.trunk[:-1], net.trunk[-1:]
    return net.trunk, []


def _moved(net: FoldedNetwork, device: torch.device, dtype: torch.dtype) -> FoldedNetwork:
    """The network on `device` in `dtype`; in bf16 its output side in float32 (the moved copy's `tail`). fp16 keeps
    3 more significant bits (a level's eighth near 255), and runs whole on the GPUs it is for."""
    tried: dict[tuple, bool] = {}

    def mover(to: torch.dtype) -> Callable[[Conv], Conv]:
        def move(step: Conv) -> Conv:
            weight = step.weight.to(device, to).contiguous(memory_format=torch.channels_last)
            bias = None if step.bias is None else step.bias.to(device, to)
            moved = Conv(weight, bias, step.relu, step.residual)
            moved.fused = _fusion_works(moved, tried)
            return moved

        return move

    low, high = output_side(net) if dtype == torch.bfloat16 else (net.trunk + net.tail, [])
    return FoldedNetwork(
        [s.prepared(mover(dtype)) for s in low], [s.prepared(mover(torch.float32)) for s in high],
        net.input_scale.to(device), net.input_shift.to(device),
        None if net.input_matrix is None else net.input_matrix.to(device), net.adds_input,
    )


class FoldedRunner:
    """A folded network on one device, at any precision (converted once per precision, on first use); in bf16 the
    trunk runs in it and the output side in float32 (`output_side`)."""

    def __init__(self, net: FoldedNetwork, channels: int, device: torch.device):
        self.device = device
        self._master = net
        self._nets: dict[torch.dtype, FoldedNetwork] = {}
        trunk_radius, trunk_peak, features, factor = walk(net.trunk, 1.0, channels)
        tail_radius, tail_peak, _, self.output_factor = walk(net.tail, factor, features)
        self.receptive_radius = trunk_radius + tail_radius  # in network-input pixels
        # live elements per input pixel: the input, the larger part's peak and, beside a tail, one feature map of
        # margin (a composed tail's peak is below the trunk's; a tail that is not composed may be above it)
        self._elements = channels + max(trunk_peak, tail_peak) + (features if net.tail else 0)
        # in bf16 the float32 tail: its peak plus the half-precision features it was given (a network
        # without a tail, whose last conv runs in float32, is counted whole in float32)
        self._float_elements = tail_peak + features if net.tail else self._elements

    def _network(self, dtype: torch.dtype) -> FoldedNetwork:
        if dtype not in self._nets:
            self._nets[dtype] = _moved(self._master, self.device, dtype)
        return self._nets[dtype]

    def bytes_per_pixel(self, dtype: torch.dtype) -> float:
        """Peak activation bytes per network-input pixel of a window (the output side counted in float32)."""
        size = torch.finfo(dtype).bits // 8
        if dtype != torch.bfloat16:
            return size * self._elements
        return max(size * self._elements, 4 * self._float_elements)

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """Model-space input (0..pixel_max) -> the folded network's input: the exact mean subtraction (from the
        float32 master: no precision's network is prepared just for this)."""
        net = self._master
        if net.input_matrix is not None:
            x = torch.einsum("oc,nchw->nohw", net.input_matrix.to(x.device), x)
        scale, shift = net.input_scale.to(x.device), net.input_shift.to(x.device)
        return x * scale.view(1, -1, 1, 1) + shift.view(1, -1, 1, 1)

    @property
    def network(self) -> FoldedNetwork:
        """The folded network as folded (float32, CPU)."""
        return self._master

    def forward(self, x: torch.Tensor, dtype: torch.dtype, budget: int) -> torch.Tensor:
        """Normalised input -> float32 output (the global input added in float32 where the network has one);
        `budget` is unused: a window the planner sized runs whole."""
        x = x.contiguous(memory_format=torch.channels_last)
        net = self._network(dtype)
        out = run_steps(net.tail, run_steps(net.trunk, x.to(dtype), _FAST).float(), _FAST)
        if net.adds_input:
            out += x.float()
        return out
