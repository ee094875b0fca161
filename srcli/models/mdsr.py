"""MDSR (Lim et al. 2017): one network for x2/x3/x4 with per-scale pre-processing and upsamplers."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from srcli.models.blocks import MeanShift, ResBlock, Upsampler, conv, count_indices, upsampler_scale
from srcli.models.folding import FoldedNetwork, fold_residual_network, working_copy
from srcli.models.spec import Architecture, Evaluation, KeyCondition, Tensors, Training


class MDSR(nn.Module):
    """Multi-scale EDSR on RGB 0..255; baseline is 16 blocks, full MDSR 80, both 64 features."""

    arch = "mdsr"
    pixel_max = 255.0

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


# --- the record ------------------------------------------------------------------------------------------


def _detect(state: Tensors) -> tuple[dict[str, Any], Tensors, str]:
    features = int(state["head.0.weight"].shape[0])
    count = count_indices(state, r"upsample\.(\d+)\.")
    scales = [upsampler_scale(state, f"upsample.{index}", features) for index in range(count)]
    config = {
        "scales": scales,
        "blocks": count_indices(state, r"body\.(\d+)\.body\.0\.weight"),
        "features": features,
        "res_scale": 1.0,
    }
    return config, state, "official"


def _fold(model: nn.Module, scale: int) -> FoldedNetwork:
    model = working_copy(model)
    index = model.scale_index(scale)
    return fold_residual_network(model, list(model.pre_process[index]), model.upsample[index], model.tail[0])


def _table_column(config: Mapping[str, Any]) -> str | None:
    """Only the paper-size MDSR (80 blocks) has a Table 3 column."""
    return "MDSR" if config.get("blocks") == 80 else None


ARCHITECTURE = Architecture(
    name="mdsr",
    module=MDSR,
    presets={"mdsr-baseline": {"blocks": 16, "features": 64}, "mdsr": {"blocks": 80, "features": 64}},
    recognise=KeyCondition.has_all("head.0.weight", "pre_process."),
    detect=_detect,
    scales=lambda config: tuple(int(s) for s in config.get("scales", (2, 3, 4))),
    multi_scale=True,
    fold=_fold,
    optional_keys=("sub_mean.", "add_mean."),
    evaluation=Evaluation(table_column=_table_column),
    training=Training(scales=(2, 3, 4, 8), branch_per_scale=True, fresh_keys=("upsample.",)),
)
