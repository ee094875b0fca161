"""Running a folded network (srcli.models.folding) fast: channels_last, fused oneDNN convs on CPU, and the
high-resolution tail in row strips so it never needs more memory than the trunk."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from srcli.engine.tiling import core_length
from srcli.models.folding import Composed, Conv, FoldedNetwork, Save, Step, exact_edges, walk

SAFETY = 1.3  # allocator slack and oneDNN workspace over the counted activations
# The tail's row strips on the CPU. 480x320 -> x4 EDSR-baseline (tail 8 KB per LR pixel): whole tail 6.1 s on the
# first run and 3.2 s warm (peak 1.56 GB), 40-row strips 2.7-3.1 s either way (0.59 GB); OpenVINO 4.8/1.8 s whole,
# 2.2/1.9 s in 40-80-row strips. The halo (2 rows each side at x4) costs at most 2 * 2 / 32 of the tail.
CPU_STRIP_BYTES = 192 * 2**20
CPU_MIN_STRIP_ROWS = 32


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


def _conv(step: Conv, x: torch.Tensor, saved: dict[str, torch.Tensor]) -> torch.Tensor:
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


def _run_steps(steps: list[Step], x: torch.Tensor) -> torch.Tensor:
    saved: dict[str, torch.Tensor] = {}
    for step in steps:
        if isinstance(step, Save):
            saved[step.key] = x
        elif isinstance(step, Conv):
            x = _conv(step, x, saved)
        elif isinstance(step, Composed):
            y = _pixel_shuffle(_conv(step.conv, x, saved), step.factor)
            x = exact_edges(step, x, y, _run_strip)
        else:
            x = _pixel_shuffle(x, step.factor)
    return x


def _run_strip(steps: list[Step], x: torch.Tensor) -> torch.Tensor:
    return _run_steps(steps, x.contiguous(memory_format=torch.channels_last))


def _moved(net: FoldedNetwork, device: torch.device, dtype: torch.dtype) -> FoldedNetwork:
    tried: dict[tuple, bool] = {}

    def move(step: Step) -> Step:
        if isinstance(step, Composed):
            conv = move(step.conv)
            assert isinstance(conv, Conv)
            return Composed(conv, step.factor, [move(s) for s in step.exact], step.ring, step.depth)
        if not isinstance(step, Conv):
            return step
        weight = step.weight.to(device, dtype).contiguous(memory_format=torch.channels_last)
        bias = None if step.bias is None else step.bias.to(device, dtype)
        moved = Conv(weight, bias, step.relu, step.residual)
        moved.fused = _fusion_works(moved, tried)
        return moved

    return FoldedNetwork(
        [move(s) for s in net.trunk], [move(s) for s in net.tail],
        net.input_scale.to(device), net.input_shift.to(device),
        None if net.input_matrix is None else net.input_matrix.to(device), net.adds_input,
    )


class FoldedRunner:
    """A folded network on one device, at any precision (converted once per precision, on first use)."""

    def __init__(self, net: FoldedNetwork, channels: int, device: torch.device):
        self.device = device
        self._master = net
        self._nets: dict[torch.dtype, FoldedNetwork] = {}
        trunk_radius, trunk_peak, features, factor = walk(net.trunk, 1.0, channels)
        tail_radius, tail_peak, _, self.output_factor = walk(net.tail, factor, features)
        self.receptive_radius = trunk_radius + tail_radius  # in network-input pixels
        self._tail_halo = math.ceil(tail_radius) if net.tail else 0
        self._trunk_elements = trunk_peak + channels
        self._tail_elements = tail_peak
        self._trunk_features = features if net.tail else 0  # held while the tail runs in strips

    def _network(self, dtype: torch.dtype) -> FoldedNetwork:
        if dtype not in self._nets:
            self._nets[dtype] = _moved(self._master, self.device, dtype)
        return self._nets[dtype]

    def bytes_per_pixel(self, dtype: torch.dtype) -> float:
        """Peak activation bytes per network-input pixel of a window (tail strips need no more than the trunk)."""
        return torch.finfo(dtype).bits // 8 * (self._trunk_elements + self._trunk_features)

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

    @property
    def tail_halo(self) -> int:
        return self._tail_halo

    @property
    def strips_tail(self) -> bool:
        """Whether the tail may run in row strips: only one that needs more memory than the trunk (a composed
        tail never does)."""
        return self._tail_elements > self._trunk_elements

    def strip_rows(self, height: int, pixels: int, dtype: torch.dtype, budget: int) -> int:
        """Rows per tail strip. Over budget: strips sized so the tail needs no more memory than the trunk. On the
        CPU, strips of about CPU_STRIP_BYTES anyway (at least CPU_MIN_STRIP_ROWS, so the halo costs little):
        fresh memory is slow to touch and a smaller tail stays warmer; GPUs run the tail whole when it fits."""
        if not self.strips_tail:
            return height
        element = torch.finfo(dtype).bits // 8
        rows = height
        if SAFETY * element * (self._trunk_features + self._tail_elements) * pixels > budget:
            rows = max(8, int(height * self._trunk_elements / self._tail_elements))
        if self.device.type == "cpu":
            row_bytes = element * self._tail_elements * pixels / height
            rows = min(rows, max(CPU_MIN_STRIP_ROWS, int(CPU_STRIP_BYTES / row_bytes)))
        return core_length(height, rows)  # evened out: a last strip of one height recomputes little

    def forward(self, x: torch.Tensor, dtype: torch.dtype, budget: int) -> torch.Tensor:
        """Normalised input -> float32 output (the global input added in float32 where the network has one)."""
        x = x.contiguous(memory_format=torch.channels_last)
        net = self._network(dtype)
        strip = self.strip_rows(x.shape[2], x.shape[0] * x.shape[2] * x.shape[3], dtype, budget)
        out = self._run(net, x.to(dtype), strip).float()
        if net.adds_input:
            out += x.float()
        return out

    def _run(self, net: FoldedNetwork, x: torch.Tensor, strip_rows: int) -> torch.Tensor:
        tail = (lambda features: _run_steps(net.tail, features)) if net.tail else None
        return run_in_strips(lambda window: _run_steps(net.trunk, window), tail, x, strip_rows, self._tail_halo)


Part = Callable[[torch.Tensor], torch.Tensor]


def run_in_strips(trunk: Part, tail: Part | None, x: torch.Tensor, strip_rows: int, halo: int) -> torch.Tensor:
    """Trunk on the whole window, then the tail over row strips that overlap by its receptive radius (`halo`
    rows): each strip's kept rows are exactly what the tail gives on the whole, in a strip's memory. Every strip
    has one height (the last shifts up rather than shrinks), so a runtime that specialises on shapes (OpenVINO,
    oneDNN's primitive cache) prepares one tail. A tail may return a buffer it reuses: the kept rows are copied
    out before its next call."""
    features = trunk(x)
    if tail is None:
        return features
    height = features.shape[2]
    rows = min(strip_rows + 2 * halo, height)
    out: torch.Tensor | None = None
    for top in range(0, height, min(strip_rows, height)):
        bottom = min(top + strip_rows, height)
        start = min(max(top - halo, 0), height - rows)
        piece = tail(features[:, :, start : start + rows])
        factor = piece.shape[2] // rows
        if out is None:
            shape = (piece.shape[0], piece.shape[1], height * factor, piece.shape[3])
            out = torch.empty(shape, dtype=piece.dtype, device=piece.device, memory_format=_layout(piece))
        out[:, :, top * factor : bottom * factor] = piece[:, :, (top - start) * factor : (bottom - start) * factor]
    assert out is not None
    return out


def _layout(x: torch.Tensor) -> torch.memory_format:
    return torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
