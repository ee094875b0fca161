"""EDSR (Lim et al. 2017): residual blocks without batch norm, residual scaling, sub-pixel upsampling.

Reads the official EDSR-PyTorch layout and BasicSR's (renamed into the official one on load).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from srcli.models.blocks import MeanShift, ResBlock, Upsampler, conv, count_indices, upsampler_scale
from srcli.models.folding import FoldedNetwork, fold_residual_network, working_copy
from srcli.models.spec import Architecture, Evaluation, KeyCondition, Tensors, Training


class EDSR(nn.Module):
    """Single-scale EDSR on RGB 0..255; `edsr-baseline` is 16 blocks x 64, `edsr` is 32 x 256 with 0.1."""

    arch = "edsr"
    pixel_max = 255.0

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
        if channels != 3:
            self.config["channels"] = channels
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


# --- the record ------------------------------------------------------------------------------------------

_BASICSR_RENAMES = (
    (re.compile(r"^conv_first\."), "head.0."),
    (re.compile(r"^body\.(\d+)\.conv1\."), r"body.\1.body.0."),
    (re.compile(r"^body\.(\d+)\.conv2\."), r"body.\1.body.2."),
    (re.compile(r"^upsample\."), "tail.0."),
    (re.compile(r"^conv_last\."), "tail.1."),
)


_BASICSR = KeyCondition.has_all("conv_first.weight", "body.0.conv1.")
_OFFICIAL = KeyCondition.has_all("head.0.weight", "tail.0.", KeyCondition.has_none("pre_process."))  # not MDSR


def _from_basicsr(state: Tensors) -> Tensors:
    """Rename a BasicSR EDSR state dict into the official layout (conv_after_body becomes body.{B})."""
    blocks = count_indices(state, r"body\.(\d+)\.conv1\.")
    converted: Tensors = {}
    for key, value in state.items():
        if key.startswith("conv_after_body."):
            converted[f"body.{blocks}." + key[len("conv_after_body."):]] = value
            continue
        for pattern, replacement in _BASICSR_RENAMES:
            key = pattern.sub(replacement, key)
        converted[key] = value
    return converted


def res_scale_for(features: int) -> float:
    """Residual scaling is not visible in tensors; the papers use 0.1 exactly for the 256-feature EDSR."""
    return 0.1 if features >= 256 else 1.0


def _detect(state: Tensors) -> tuple[dict[str, Any], Tensors, str]:
    layout = "basicsr" if _BASICSR(state) else "official"
    tensors = _from_basicsr(state) if layout == "basicsr" else state
    head = tensors["head.0.weight"]
    features, channels = int(head.shape[0]), int(head.shape[1])
    config: dict[str, Any] = {
        "scale": upsampler_scale(tensors, "tail.0", features),
        "blocks": count_indices(tensors, r"body\.(\d+)\.body\.0\.weight"),
        "features": features,
        "res_scale": res_scale_for(features),
    }
    if channels != 3:
        config["channels"] = channels
    return config, tensors, layout


def _fold(model: nn.Module, scale: int) -> FoldedNetwork:
    model = working_copy(model)
    return fold_residual_network(model, [], model.tail[0], model.tail[1])


def _table_column(config: Mapping[str, Any]) -> str | None:
    """Only the paper-size EDSR (32 blocks of 256) has a Table 3 column."""
    return "EDSR" if config.get("blocks") == 32 and config.get("features") == 256 else None


ARCHITECTURE = Architecture(
    name="edsr",
    module=EDSR,
    presets={
        "edsr-baseline": {"blocks": 16, "features": 64, "res_scale": 1.0},
        "edsr": {"blocks": 32, "features": 256, "res_scale": 0.1},
    },
    recognise=KeyCondition.has_any(_BASICSR, _OFFICIAL),
    detect=_detect,
    scales=lambda config: (int(config.get("scale", 2)),),
    fold=_fold,
    optional_keys=("sub_mean.", "add_mean."),
    evaluation=Evaluation(table_column=_table_column),
    training=Training(scales=(2, 3, 4, 8), fresh_keys=("tail.0.",)),
)
