"""EDSR (Lim et al. 2017): residual blocks without batch norm, residual scaling, sub-pixel upsampling."""

from __future__ import annotations

import torch
from torch import nn

from srcli.models.blocks import MeanShift, ResBlock, Upsampler, conv


class EDSR(nn.Module):
    """Single-scale EDSR on RGB 0..255; `edsr-baseline` is 16 blocks x 64, `edsr` is 32 x 256 with 0.1."""

    arch = "edsr"
    pixel_max = 255.0
    upscales_inside = True

    def __init__(
        self,
        scale: int = 2,
        blocks: int = 16,
        features: int = 64,
        res_scale: float = 1.0,
        channels: int = 3,
    ):
        super().__init__()
        self.scale = scale
        self.scales = (scale,)
        self.channels = channels
        self.config = {"scale": scale, "blocks": blocks, "features": features, "res_scale": res_scale}
        self.sub_mean = MeanShift(self.pixel_max, sign=-1)
        self.head = nn.Sequential(conv(channels, features, 3))
        self.body = nn.Sequential(
            *[ResBlock(features, 3, res_scale) for _ in range(blocks)], conv(features, features, 3)
        )
        self.tail = nn.Sequential(Upsampler(scale, features), conv(features, channels, 3))
        self.add_mean = MeanShift(self.pixel_max, sign=+1)

    def forward(self, x: torch.Tensor, scale: int | None = None) -> torch.Tensor:
        if scale is not None and scale != self.scale:
            raise ValueError(f"this EDSR model is x{self.scale}, not x{scale}")
        x = self.head(self.sub_mean(x))
        x = self.body(x) + x
        return self.add_mean(self.tail(x))
