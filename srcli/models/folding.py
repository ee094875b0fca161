"""The folded form of a network: a flat list of steps (convs, saves, pixel shuffles) an architecture may declare.

Folding is exact algebra done once at load: the residual scale goes into each block's second conv, the
output mean shift into the last conv, upsampler channels are reordered so a pixel shuffle moves contiguous
runs in channels_last memory, and a linear tail (upsampler + last conv) becomes one conv. The input mean
shift stays an elementwise subtract: folding it into the head conv would be wrong at borders, where the
conv's zero padding meets the unshifted zero.
Each step type carries its behaviour (run, walk, prepared), so `run_steps` is the one interpreter: the reference
here and `srcli.engine.folded`'s fast path differ only in the `Ops` they give it; nothing here touches a device.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn


@dataclass
class Ops:
    """How a runner computes a step's arithmetic: the steps own the order, a runner only the two operations
    (and the layout an edge strip needs); the reference below and srcli.engine.folded's fast path each give one."""

    conv: Callable[[Conv, torch.Tensor, torch.Tensor | None], torch.Tensor]  # (step, x, residual or None)
    shuffle: Callable[[torch.Tensor, int], torch.Tensor]
    strip: Callable[[torch.Tensor], torch.Tensor] = lambda x: x  # an edge strip's input before the exact tail


@dataclass
class Walk:
    """What a pass over the steps counts, per input pixel: `walk` and `multiply_adds_per_pixel` read it."""

    channels: int
    factor: float = 1.0  # resolution relative to the input, per side
    radius: float = 0.0  # receptive radius in input px
    peak: float = 0.0  # most live elements
    multiply_adds: float = 0.0  # a composed tail's edge strips not counted
    saved: dict[str, float] = field(default_factory=dict)

    def live(self, extra: float) -> None:
        self.peak = max(self.peak, sum(self.saved.values()) + extra)

    @property
    def here(self) -> float:
        return self.channels * self.factor * self.factor

    def upsampled(self, factor: int) -> None:
        self.factor *= factor
        self.channels //= factor**2


@dataclass
class Conv:
    weight: torch.Tensor
    bias: torch.Tensor | None
    relu: bool = False
    residual: str | None = None  # add this saved tensor to the conv output
    fused: bool = False  # run as one oneDNN conv with ReLU / add post-op (set where a probe shows it works)

    @property
    def radius(self) -> int:
        return self.weight.shape[-1] // 2

    @property
    def linear(self) -> bool:
        return not self.relu and not self.residual

    def run(self, x: torch.Tensor, saved: dict[str, torch.Tensor], ops: Ops) -> torch.Tensor:
        return ops.conv(self, x, saved.pop(self.residual) if self.residual else None)

    def count(self, walk: Walk, outputs: int = 1) -> None:
        """Radius, multiply-adds and peak of this conv at the walk's resolution (`outputs` buffers of its output
        live at once: 2 where a shuffle follows in place)."""
        out, _, k, _ = self.weight.shape
        area = walk.factor * walk.factor
        walk.radius += self.radius / walk.factor
        walk.multiply_adds += area * out * walk.channels * k * k
        walk.live(walk.here + outputs * out * area)
        walk.channels = out

    def walk(self, walk: Walk) -> None:
        self.count(walk)
        if self.residual:
            walk.saved.pop(self.residual, None)

    def prepared(self, prepare: Callable[[Conv], Conv]) -> Conv:
        return prepare(self)


@dataclass
class Save:
    """Keep the current tensor under `key`, for a later conv's residual."""

    key: str
    linear = False

    def run(self, x: torch.Tensor, saved: dict[str, torch.Tensor], ops: Ops) -> torch.Tensor:
        saved[self.key] = x
        return x

    def walk(self, walk: Walk) -> None:
        walk.saved[self.key] = walk.here

    def prepared(self, prepare: Callable[[Conv], Conv]) -> Save:
        return self


@dataclass
class Shuffle:
    """A pixel shuffle reading the channels in the fold's (i, j, c) order."""

    factor: int
    linear = True

    def run(self, x: torch.Tensor, saved: dict[str, torch.Tensor], ops: Ops) -> torch.Tensor:
        return ops.shuffle(x, self.factor)

    def walk(self, walk: Walk) -> None:
        walk.live(2 * walk.here)
        walk.upsampled(self.factor)

    def prepared(self, prepare: Callable[[Conv], Conv]) -> Shuffle:
        return self


@dataclass
class Composed:
    """A linear tail (convs without ReLU or residual, and pixel shuffles) as one conv at its input resolution
    and one shuffle: the same sums, regrouped. Each conv of the tail zero-pads its own input, which one conv
    cannot; so the outer `ring` output pixels on each side are taken from `exact` (the tail as it was) run on
    edge strips `depth` input pixels deep: the result is the tail's own, border included."""

    conv: Conv
    factor: int
    exact: list[Step]
    ring: int
    depth: int
    linear = False  # already composed

    def run(self, x: torch.Tensor, saved: dict[str, torch.Tensor], ops: Ops) -> torch.Tensor:
        y = ops.shuffle(ops.conv(self.conv, x, None), self.factor)
        return exact_edges(self, x, y, lambda steps, part: run_steps(steps, ops.strip(part), ops))

    def walk(self, walk: Walk) -> None:
        self.conv.count(walk, outputs=2)  # the conv's output and its shuffled copy
        walk.upsampled(self.factor)

    def prepared(self, prepare: Callable[[Conv], Conv]) -> Composed:
        return Composed(prepare(self.conv), self.factor, [s.prepared(prepare) for s in self.exact], self.ring,
                        self.depth)


Step = Conv | Save | Shuffle | Composed


def run_steps(steps: list[Step], x: torch.Tensor, ops: Ops) -> torch.Tensor:
    """The one interpreter of folded steps: each step runs itself with the runner's `ops`."""
    saved: dict[str, torch.Tensor] = {}
    for step in steps:
        x = step.run(x, saved, ops)
    return x


@dataclass
class FoldedNetwork:
    """A folded network: `trunk` runs at input resolution, `tail` is the upsampling onward (composed where linear)."""

    trunk: list[Step]
    tail: list[Step]
    input_scale: torch.Tensor  # per channel: network input = x * scale + shift (the input mean shift)
    input_shift: torch.Tensor
    input_matrix: torch.Tensor | None = None  # non-diagonal input shift (never in official files)
    adds_input: bool = False  # output = input + network, added in float32 by the runner (VDSR)


def working_copy(model: nn.Module) -> nn.Module:
    """The caller's module is never changed: folds work on a float32 CPU copy."""
    return copy.deepcopy(model).float().cpu().eval()


def conv_step(module: nn.Conv2d, relu: bool = False, residual: str | None = None) -> Conv:
    bias = None if module.bias is None else module.bias.detach().clone().float()
    return Conv(module.weight.detach().clone().float(), bias, relu, residual)


def resblock_steps(block: nn.Module, key: str) -> list[Step]:
    """conv-ReLU-conv + x (srcli.models.blocks.ResBlock), with the residual scale folded into the second conv."""
    first, second = conv_step(block.body[0], relu=True), conv_step(block.body[2], residual=key)
    if block.res_scale != 1.0:
        second.weight *= block.res_scale
        if second.bias is not None:
            second.bias *= block.res_scale
    return [Save(key), first, second]


def upsampler_steps(upsampler: nn.Sequential) -> list[Step]:
    """Conv + PixelShuffle pairs, output channels reordered from (c, i, j) to (i, j, c) for the fast shuffle."""
    steps: list[Step] = []
    for module in upsampler:
        if isinstance(module, nn.Conv2d):
            steps.append(conv_step(module))
        elif isinstance(module, nn.PixelShuffle):
            conv, factor = steps[-1], module.upscale_factor
            assert isinstance(conv, Conv)
            out = conv.weight.shape[0]
            order = torch.arange(out).view(out // factor**2, factor**2).t().reshape(-1)
            conv.weight = conv.weight[order]
            conv.bias = None if conv.bias is None else conv.bias[order]
            steps.append(Shuffle(factor))
    return steps


def shuffle(x: torch.Tensor, factor: int) -> torch.Tensor:
    """PixelShuffle reading channels in the fold's (i, j, c) order (NCHW): the reference the runners match."""
    n, channels, height, width = x.shape
    x = x.reshape(n, factor, factor, channels // factor**2, height, width).permute(0, 3, 4, 1, 5, 2)
    return x.reshape(n, channels // factor**2, height * factor, width * factor)


def _reference_conv(biases: bool) -> Callable[[Conv, torch.Tensor, torch.Tensor | None], torch.Tensor]:
    def conv(step: Conv, x: torch.Tensor, residual: torch.Tensor | None) -> torch.Tensor:
        bias = step.bias.to(x.dtype) if biases and step.bias is not None else None
        y = torch.nn.functional.conv2d(x, step.weight.to(x.dtype), bias, padding=step.radius)
        y = y.relu() if step.relu else y
        return y + residual if residual is not None else y

    return conv


_REFERENCE = {biases: Ops(_reference_conv(biases), shuffle) for biases in (True, False)}


def run_reference(steps: list[Step], x: torch.Tensor, biases: bool = True) -> torch.Tensor:
    """The steps as plain NCHW torch ops, zero padding at every conv: what they mean, which the fast runner
    matches and the OpenVINO converter traces. `biases=False` gives a composed tail's kernel."""
    return run_steps(steps, x, _REFERENCE[biases])


def exact_edges(step: Composed, x: torch.Tensor, y: torch.Tensor,
                run: Callable[[list[Step], torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """A composed tail's output `y` with its outer ring, on each side, from the tail as written (`run`) on an
    edge strip of its input `x`: a strip holding the edge computes the edge's zero padding exactly."""
    ring, depth = step.ring, step.depth
    y[:, :, :ring] = run(step.exact, x[:, :, :depth])[:, :, :ring]
    y[:, :, -ring:] = run(step.exact, x[:, :, -depth:])[:, :, -ring:]
    y[:, :, :, :ring] = run(step.exact, x[:, :, :, :depth])[:, :, :, :ring]
    y[:, :, :, -ring:] = run(step.exact, x[:, :, :, -depth:])[:, :, :, -ring:]
    return y


def walk_steps(steps: list[Step], channels: int, factor: float = 1.0) -> Walk:
    counted = Walk(channels, factor)
    for step in steps:
        step.walk(counted)
    return counted


def multiply_adds_per_pixel(steps: list[Step], channels: int) -> float:
    """Multiply-adds per input pixel of a run of steps (a composed tail's edge strips not counted)."""
    return walk_steps(steps, channels).multiply_adds


def compose_linear_tail(tail: list[Step]) -> list[Step]:
    """The upsampler and last conv of EDSR/MDSR have no nonlinearity between them: one conv from the features
    to factor^2 x 3 channels (5x5 at any scale) computes them. EDSR-baseline x4 on 480x320: 235 GFLOP of the
    609 become 24. The kernel is read off the tail itself: its response to one unit input per channel, which is
    the kernel, flipped; the bias, its response to zero input (float32: within 1e-6 of float64, in a tenth of
    the time)."""
    if not tail or not isinstance(tail[0], Conv) or not all(step.linear for step in tail):
        return tail
    channels = tail[0].weight.shape[1]
    counted = walk_steps(tail, channels)
    factor, radius = int(counted.factor), counted.radius
    if factor == 1:
        return tail
    after_first = walk_steps(tail[1:], tail[0].weight.shape[0]).radius  # the reach after the first conv
    half = math.ceil(radius)  # the composed kernel's radius, in input pixels
    size, centre = 2 * half + 1, half  # the impulse's whole response lies inside this grid
    impulses = torch.zeros(channels, channels, size, size)
    impulses[torch.arange(channels), torch.arange(channels), centre, centre] = 1.0
    response = run_reference(tail, impulses, biases=False)  # (in channel, out channel, size * f, size * f)
    out = response.shape[1]
    taps = torch.arange(2 * half + 1)
    rows = (factor * (centre + half - taps)).view(-1, 1) + torch.arange(factor).view(1, -1)  # (tap, sub-pixel)
    # weight[(i, j, o), c, ky, kx] = response[c, o, f * (centre + half - ky) + i, f * (centre + half - kx) + j]
    picked = response[:, :, rows][:, :, :, :, rows]  # (c, o, ky, i, kx, j)
    weight = picked.permute(3, 5, 1, 0, 2, 4).reshape(factor * factor * out, channels, 2 * half + 1, 2 * half + 1)
    constant = run_reference(tail, torch.zeros(1, channels, size, size, dtype=torch.float64))  # interior at centre
    bias = constant[0, :, factor * centre : factor * (centre + 1), factor * centre : factor * (centre + 1)]
    bias = bias.permute(1, 2, 0).reshape(-1)
    composed = Conv(weight.contiguous(), bias.float())
    if multiply_adds_per_pixel([composed], channels) >= multiply_adds_per_pixel(tail, channels):
        return tail
    ring = math.ceil(after_first * factor)  # output pixels the inner convs' zero padding reaches
    depth = math.ceil(ring / factor + radius) + 1
    return [Composed(composed, factor, tail, ring, depth)]


def _mean_shift(module: nn.Conv2d) -> tuple[torch.Tensor, torch.Tensor]:
    return module.weight.detach()[:, :, 0, 0].float().clone(), module.bias.detach().float().clone()


def fold_output_shift(last: Conv, shift: nn.Conv2d) -> None:
    """A 1x1 conv after the last conv is exactly a change of that conv's weights and bias."""
    matrix, bias = _mean_shift(shift)
    last.weight = torch.einsum("oc,cikl->oikl", matrix, last.weight)
    last.bias = bias + (matrix @ last.bias if last.bias is not None else 0)


def input_transform(shift: nn.Conv2d | None, channels: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(scale, shift, matrix) of the input mean shift; identity without one."""
    if shift is None:
        return torch.ones(channels), torch.zeros(channels), None
    matrix, bias = _mean_shift(shift)
    diagonal = torch.diagonal(matrix).clone()
    if torch.equal(matrix, torch.diag(diagonal)):
        return diagonal, bias, None
    return torch.ones(matrix.shape[0]), bias, matrix


def fold_residual_network(
    model: nn.Module, pre_blocks: list[nn.Module], upsampler: nn.Sequential, last: nn.Conv2d
) -> FoldedNetwork:
    """EDSR and MDSR: sub_mean, head, [pre-blocks], residual body + global skip, upsampler, last conv, add_mean."""
    trunk: list[Step] = [conv_step(model.head[0])]
    for number, block in enumerate(pre_blocks):
        trunk += resblock_steps(block, f"pre{number}")
    trunk.append(Save("skip"))
    for block in model.body[:-1]:
        trunk += resblock_steps(block, "block")
    trunk.append(conv_step(model.body[-1], residual="skip"))
    tail = [*upsampler_steps(upsampler), conv_step(last)]
    fold_output_shift(tail[-1], model.add_mean)
    return FoldedNetwork(trunk, compose_linear_tail(tail), *input_transform(model.sub_mean, model.channels))


def walk(steps: list[Step], factor: float, channels: int) -> tuple[float, float, int, float]:
    """(receptive radius in input px, peak live elements per input px, out channels, out factor)."""
    counted = walk_steps(steps, channels, factor)
    return counted.radius, counted.peak, counted.channels, counted.factor
