"""Building blocks shared by EDSR and MDSR, laid out so official EDSR-PyTorch state dicts load unchanged."""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch
from torch import nn

from srcli.errors import CheckpointError

# DIV2K RGB mean used by every official EDSR/MDSR file (EDSR-PyTorch's rgb_mean).
DIV2K_RGB_MEAN = (0.4488, 0.4371, 0.4040)


def conv(in_channels: int, out_channels: int, kernel_size: int, bias: bool = True) -> nn.Conv2d:
    """A 'same' convolution, the only kind these networks use."""
    return nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=bias)


class MeanShift(nn.Conv2d):
    """A fixed 1x1 conv that subtracts (sign=-1) or adds (sign=+1) the dataset mean on 0..255 pixels.

    Kept as a conv rather than a buffer so its weights sit in the state dict where official files put them.
    """

    def __init__(self, pixel_max: float = 255.0, mean: tuple[float, ...] = DIV2K_RGB_MEAN, sign: int = -1):
        super().__init__(3, 3, kernel_size=1)
        with torch.no_grad():
            self.weight.copy_(torch.eye(3).view(3, 3, 1, 1))
            self.bias.copy_(sign * pixel_max * torch.tensor(mean))
        for parameter in self.parameters():
            parameter.requires_grad = False


class ResBlock(nn.Module):
    """conv-ReLU-conv, scaled and added to the input; no batch norm (the EDSR paper's key change)."""

    def __init__(self, features: int, kernel_size: int = 3, res_scale: float = 1.0):
        super().__init__()
        self.body = nn.Sequential(
            conv(features, features, kernel_size), nn.ReLU(inplace=True), conv(features, features, kernel_size)
        )
        self.res_scale = res_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = self.body(x)
        if self.res_scale != 1.0:
            residual = residual * self.res_scale
        return residual + x


def upsampler_factors(scale: int) -> list[int]:
    """The PixelShuffle steps for a scale: x2 -> [2], x3 -> [3], x4 -> [2, 2], x8 -> [2, 2, 2]."""
    if scale == 3:
        return [3]
    if scale >= 2 and scale & (scale - 1) == 0:
        return [2] * (scale.bit_length() - 1)
    raise ValueError(f"scale {scale} is not supported (2, 3, 4 or 8)")


class Upsampler(nn.Sequential):
    """Sub-pixel upsampling: conv to r*r*F channels then PixelShuffle(r), repeated per factor."""

    def __init__(self, scale: int, features: int):
        layers: list[nn.Module] = []
        for factor in upsampler_factors(scale):
            layers += [conv(features, factor * factor * features, 3), nn.PixelShuffle(factor)]
        super().__init__(*layers)


# --- reading sizes back from tensors (shared by the EDSR and MDSR records) ---------------------------------


def count_indices(state: Mapping[str, torch.Tensor], pattern: str) -> int:
    """How many distinct indices the first group of `pattern` takes over the keys (blocks, upsamplers)."""
    return len({int(m.group(1)) for key in state if (m := re.match(pattern, key))})


def upsampler_scale(state: Mapping[str, torch.Tensor], prefix: str, features: int) -> int:
    """The scale of the sub-pixel upsampler under `prefix` (its convs' keys `prefix.{i}.weight`): 4F per x2
    step, 9F for x3."""
    convs = sorted(
        (int(m.group(1)), value) for key, value in state.items()
        if (m := re.match(rf"{re.escape(prefix)}\.(\d+)\.weight$", key))
    )
    ratios = [weight.shape[0] // features for _, weight in convs]
    if ratios == [9]:
        return 3
    if ratios and all(r == 4 for r in ratios):
        return 2 ** len(ratios)
    raise CheckpointError(f"upsampler with output channels {[w.shape[0] for _, w in convs]} is not a known scale")
