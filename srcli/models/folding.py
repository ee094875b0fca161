"""The folded form of a network: a flat list of steps (convs, saves, pixel shuffles) an architecture may declare.

Folding is exact algebra done once at load: the residual scale goes into each block's second conv, the
output mean shift into the last conv, and upsampler channels are reordered so a pixel shuffle moves
contiguous runs in channels_last memory. The input mean shift stays an elementwise subtract: folding it
into the head conv would be wrong at borders, where the conv's zero padding meets the unshifted zero.
`srcli.engine.folded` runs these steps; nothing here touches a device.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn


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


@dataclass
class Save:
    key: str


@dataclass
class Shuffle:
    factor: int


Step = Conv | Save | Shuffle


@dataclass
class FoldedNetwork:
    """A folded network: `trunk` runs at input resolution, `tail` (upsampling onward) may run in row strips."""

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


def conv_before_shuffle(tail: list[Step]) -> list[Step]:
    """A last shuffle x2 and a 3x3 conv to few channels, swapped: the conv moves to the low-resolution side as a
    3x3 conv to 4x the channels (the same sums, regrouped), and the shuffle then moves those few channels
    instead of all the features. EDSR-baseline x4 on 480x320: the 64->3 conv ran at a quarter of the body's
    throughput, and the shuffle of 64 features at the output size cost as much again."""
    if len(tail) < 2 or not isinstance(tail[-2], Shuffle) or tail[-2].factor != 2 or not isinstance(tail[-1], Conv):
        return tail
    conv = tail[-1]
    out, channels, size, _ = conv.weight.shape
    if size != 3 or out > 4 or conv.residual:
        return tail
    weight = conv.weight.new_zeros(4 * out, 4 * channels, 3, 3)
    # output (a, b) of a 2x2 block at low-res offset (ky, kx) - 1 reads high-res sub-pixel (i, j) at conv tap
    # (dy, dx) = 2 * (k - 1) + (i, j) - (a, b); taps outside the 3x3 kernel are zero.
    for a in range(2):
        for b in range(2):
            for i in range(2):
                for j in range(2):
                    for ky in range(3):
                        for kx in range(3):
                            dy, dx = 2 * (ky - 1) + i - a, 2 * (kx - 1) + j - b
                            if abs(dy) <= 1 and abs(dx) <= 1:
                                rows = slice((2 * a + b) * out, (2 * a + b + 1) * out)
                                cols = slice((2 * i + j) * channels, (2 * i + j + 1) * channels)
                                weight[rows, cols, ky, kx] = conv.weight[:, :, dy + 1, dx + 1]
    bias = None if conv.bias is None else conv.bias.repeat(4)
    return [*tail[:-2], Conv(weight, bias, conv.relu), Shuffle(2)]


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
    return FoldedNetwork(trunk, conv_before_shuffle(tail), *input_transform(model.sub_mean, model.channels))


def walk(steps: list[Step], factor: float, channels: int) -> tuple[float, float, int, float]:
    """(receptive radius in input px, peak live elements per input px, out channels, out factor)."""
    radius, peak, saved = 0.0, 0.0, {}
    for step in steps:
        here = channels * factor * factor
        if isinstance(step, Save):
            saved[step.key] = here
        elif isinstance(step, Conv):
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
