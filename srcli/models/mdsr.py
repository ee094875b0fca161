"""MDSR (Lim et al. 2017): one network for x2/x3/x4 with per-scale pre-processing and upsamplers."""

from __future__ import annotations

import torch
from torch import nn

from srcli.models.blocks import MeanShift, ResBlock, Upsampler, conv


class MDSR(nn.Module):
    """Multi-scale EDSR on RGB 0..255; baseline is 16 blocks, full MDSR 80, both 64 features."""

    arch = "mdsr"
    pixel_max = 255.0
    upscales_inside = True

    def __init__(
        self,
        scales: tuple[int, ...] = (2, 3, 4),
        blocks: int = 16,
        features: int = 64,
        res_scale: float = 1.0,
        channels: int = 3,
    ):
        super().__init__()
        self.scales = tuple(scales)
        self.scale = self.scales[0]
        self.channels = channels
        self.config = {"scales": list(self.scales), "blocks": blocks, "features": features, "res_scale": res_scale}
        self.sub_mean = MeanShift(self.pixel_max, sign=-1)
        self.head = nn.Sequential(conv(channels, features, 3))
        self.pre_process = nn.ModuleList(
            [nn.Sequential(ResBlock(features, 5), ResBlock(features, 5)) for _ in self.scales]
        )
        self.body = nn.Sequential(
            *[ResBlock(features, 3, res_scale) for _ in range(blocks)], conv(features, features, 3)
        )
        self.upsample = nn.ModuleList([Upsampler(s, features) for s in self.scales])
        self.tail = nn.Sequential(conv(features, channels, 3))
        self.add_mean = MeanShift(self.pixel_max, sign=+1)

    def scale_index(self, scale: int) -> int:
        if scale not in self.scales:
            raise ValueError(f"this MDSR model serves x{'/x'.join(map(str, self.scales))}, not x{scale}")
        return self.scales.index(scale)

    def forward(self, x: torch.Tensor, scale: int | None = None) -> torch.Tensor:
        index = self.scale_index(self.scale if scale is None else scale)
        x = self.pre_process[index](self.head(self.sub_mean(x)))
        x = self.body(x) + x
        return self.add_mean(self.tail(self.upsample[index](x)))
