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
    return FoldedNetwork(trunk, tail, *input_transform(model.sub_mean, model.channels))


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
