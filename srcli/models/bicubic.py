"""Bicubic: the MATLAB-exact resize (srcli.resize.imresize) as a method with no weights.

The engine feeds architectures that declare `bicubic_input` the MATLAB double-precision bicubic upscale of
each window; a network that adds nothing to it is plain bicubic. So `srcli upscale --model bicubic` gets
tiling, alpha, grey and 16-bit handling from the same engine and pipeline as every model. It has no state
dict, so it is not in `ARCHITECTURES` (which reads files): the catalogue builds it by name.
"""

from __future__ import annotations

import torch
from torch import nn

from srcli.models.spec import Architecture, Evaluation, KeyCondition

NAME = "bicubic"


class Bicubic(nn.Module):
    """The identity on the bicubic-upscaled input (0..1 RGB): what comes out is the resize itself."""

    arch = NAME
    pixel_max = 1.0

    def __init__(self) -> None:
        super().__init__()
        self.config: dict = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def _nothing_to_detect(tensors: object) -> tuple[dict, dict, str]:
    raise ValueError("bicubic has no weights file")


ARCHITECTURE = Architecture(
    name=NAME,
    module=Bicubic,
    presets={NAME: {}},
    recognise=KeyCondition.has_any(),  # no file: never recognised
    detect=_nothing_to_detect,
    scales=lambda config: (2, 3, 4),
    channels=lambda config: 3,
    pixel_max=1.0,
    bicubic_input=True,
    evaluation=Evaluation(table_column=lambda config: "Bicubic", ensemble_column=False),
)
