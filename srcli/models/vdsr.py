"""VDSR (Kim et al. 2016): 20 3x3 conv layers learning the residual over a bicubic-upscaled image."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from srcli.models.blocks import count_indices
from srcli.models.folding import FoldedNetwork, Step, conv_step, input_transform, working_copy
from srcli.models.spec import Architecture, Evaluation, KeyCondition, Tensors, Training


class ConvReLU(nn.Module):
    """One hidden layer; the `.conv` attribute matches the public VDSR checkpoint's key names."""

    def __init__(self, features: int, bias: bool):
        super().__init__()
        self.conv = nn.Conv2d(features, features, 3, padding=1, bias=bias)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.conv(x))


class VDSR(nn.Module):
    """VDSR on 0..1 values of an image already upscaled by bicubic; one model serves every scale.

    `channels=1` is the paper's Y-channel model (the layout of the shared public checkpoint);
    `channels=3` is an RGB variant.
    """

    arch = "vdsr"
    pixel_max = 1.0

    def __init__(
        self,
        layers: int = 20,
        features: int = 64,
        channels: int = 1,
        bias: bool = False,
        scales: tuple[int, ...] = (2, 3, 4),
    ):
        super().__init__()
        self.scales = tuple(scales)
        self.scale = self.scales[0]
        self.channels = channels
        self.config = {
            "layers": layers, "features": features, "channels": channels, "bias": bias, "scales": list(self.scales)
        }
        self.input = nn.Conv2d(channels, features, 3, padding=1, bias=bias)
        self.relu = nn.ReLU(inplace=True)
        self.residual_layer = nn.Sequential(*[ConvReLU(features, bias) for _ in range(layers - 2)])
        self.output = nn.Conv2d(features, channels, 3, padding=1, bias=bias)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor, scale: int | None = None) -> torch.Tensor:
        """The input plus the learned residual, added in at least float32 (so the output is float32 under
        autocast or for a half-precision input): the residual is a few grey levels on a 0..1 image, and in
        bf16 (a step of 1/256 near 1) or fp16 that sum would round most of it away."""
        residual = self.output(self.residual_layer(self.relu(self.input(x))))
        wide = torch.promote_types(x.dtype, torch.float32)
        return x.to(wide) + residual.to(wide)


# --- the record ------------------------------------------------------------------------------------------


def _detect(state: Tensors) -> tuple[dict[str, Any], Tensors, str]:
    first = state["input.weight"]
    config = {
        "layers": count_indices(state, r"residual_layer\.(\d+)\.conv\.weight") + 2,
        "features": int(first.shape[0]),
        "channels": int(first.shape[1]),
        "bias": "input.bias" in state,
    }
    return config, state, "official"


def _fold(model: nn.Module, scale: int) -> FoldedNetwork:
    """The global skip is not a step: in fp16/bf16 the image plus its few-grey-level residual would be rounded
    to the half type's step (1/256 near 1 in bf16), so the runner adds the float32 input."""
    model = working_copy(model)
    trunk: list[Step] = [conv_step(model.input, relu=True)]
    trunk += [conv_step(layer.conv, relu=True) for layer in model.residual_layer]
    trunk.append(conv_step(model.output))
    return FoldedNetwork(trunk, [], *input_transform(None, model.channels), adds_input=True)


def _prepare_training(model: nn.Module) -> None:
    """Start at the bicubic input: a He-initialised output conv adds a residual of about +-0.3 on 0..1
    images, and unlearning that noise through clipped SGD steps is where ReLUs die."""
    nn.init.zeros_(model.output.weight)


ARCHITECTURE = Architecture(
    name="vdsr",
    module=VDSR,
    presets={
        "vdsr": {"layers": 20, "features": 64, "channels": 1},
        "vdsr-rgb": {"layers": 20, "features": 64, "channels": 3, "bias": True},
    },
    recognise=KeyCondition.has_all("input.weight", "output.weight"),
    detect=_detect,
    scales=lambda config: tuple(int(s) for s in config.get("scales", (2, 3, 4))),
    channels=lambda config: int(config.get("channels", 1)),
    pixel_max=1.0,
    bicubic_input=True,
    multi_scale=True,
    fold=_fold,
    evaluation=Evaluation(table_column=lambda config: "VDSR", ensemble_column=False),
    training=Training(scales=(2, 3, 4), prepare=_prepare_training),
)
