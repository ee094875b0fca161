"""The record every architecture fills in once, and the spec of one network built from it.

Code outside `srcli.models` asks these objects what a network needs (its scales, pixel range, input,
receptive field, fast path, the paper's table column) and never switches on architecture names: adding
an architecture is one file in this package that defines its module and its `Architecture`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:
    from srcli.models.folding import FoldedNetwork

Tensors = dict[str, torch.Tensor]


def _no_column(config: Mapping[str, Any]) -> str | None:
    return None


@dataclass(frozen=True)
class SizeRequirements:
    """Input sizes a network accepts: at least `minimum` px, a multiple of `multiple_of`, square if `square`."""

    minimum: int = 0
    multiple_of: int = 1
    square: bool = False

    def padded(self, height: int, width: int) -> tuple[int, int]:
        """The smallest (height, width) at least as large as the input that the network accepts."""
        step = self.multiple_of
        height, width = -(-max(height, self.minimum) // step) * step, -(-max(width, self.minimum) // step) * step
        return (max(height, width),) * 2 if self.square else (height, width)


@dataclass(frozen=True, eq=False)
class Architecture:
    """Everything srcli knows about one architecture, in one place."""

    name: str
    module: Callable[..., nn.Module]  # the nn.Module class; its keyword arguments are the config
    presets: Mapping[str, Mapping[str, Any]]  # named sizes: 'edsr-baseline' -> {'blocks': 16, ...}
    recognise: Callable[[Mapping[str, torch.Tensor]], bool]  # do these keys look like this architecture?
    detect: Callable[[Tensors], tuple[dict[str, Any], Tensors, str]]  # -> (config, tensors in srcli's layout, layout)
    scales: Callable[[Mapping[str, Any]], tuple[int, ...]]  # the scales a config serves (trained for)
    channels: Callable[[Mapping[str, Any]], int] = lambda config: int(config.get("channels", 3))
    pixel_max: float = 255.0  # input and output range: 0..pixel_max
    bicubic_input: bool = False  # fed the bicubic-upscaled image (VDSR): then it runs at any scale >= 1
    fold: Callable[[nn.Module, int], FoldedNetwork] | None = None  # optional fast path (srcli.models.folding)
    table_column: Callable[[Mapping[str, Any]], str | None] = _no_column  # EDSR paper Table 3 column
    ensemble_column: bool = True  # the table has a '+' (self-ensemble) column for it
    optional_keys: tuple[str, ...] = ()  # key prefixes a file may omit (fixed mean shifts in BasicSR files)
    # training (the recipes in srcli.training)
    train_scales: tuple[int, ...] = ()
    multi_scale: bool = False  # built with `scales=` (one network, several scales) rather than `scale=`
    branch_per_scale: bool = False  # a forward uses only its scale's branch (DDP must allow unused parameters)
    upsampler_keys: tuple[str, ...] = ()  # left fresh by --init-from: x3/x4 started from a trained x2
    prepare_training: Callable[[nn.Module], None] | None = None  # e.g. VDSR's zero output conv
    half_precision: bool = True  # fp16 inference is safe (any overflow still falls back to fp32)
    bf16_precision: bool = True
    size: SizeRequirements = SizeRequirements()
    call: Callable[[nn.Module, torch.Tensor], torch.Tensor] | None = None  # how to run it, when not module(x[, scale])
    source: str = "srcli"  # who knows the architecture: srcli's own records, or 'spandrel'

    def build(self, **config: Any) -> nn.Module:
        return self.module(**config)


@dataclass(frozen=True)
class ModelSpec:
    """What one network is: its architecture record, its configuration, and the file layout it came in."""

    architecture: Architecture
    config: dict[str, Any] = field(default_factory=dict)
    layout: str = "official"

    @property
    def arch(self) -> str:
        return self.architecture.name

    @property
    def scales(self) -> tuple[int, ...]:
        return self.architecture.scales(self.config)

    @property
    def channels(self) -> int:
        return self.architecture.channels(self.config)

    @property
    def pixel_max(self) -> float:
        return self.architecture.pixel_max

    @property
    def bicubic_input(self) -> bool:
        return self.architecture.bicubic_input

    @property
    def any_scale(self) -> bool:
        """A network fed a bicubic-upscaled image serves every scale, not only those it was trained for."""
        return self.architecture.bicubic_input

    def serves(self, scale: int) -> bool:
        return scale >= 1 if self.any_scale else scale in self.scales

    def scales_text(self) -> str:
        return "/".join(f"x{s}" for s in self.scales)

    def table_column(self, ensemble: bool = False) -> str | None:
        """The EDSR paper's Table 3 column this network's scores belong to, '+' with self-ensemble."""
        column = self.architecture.table_column(self.config)
        if column is not None and ensemble and self.architecture.ensemble_column:
            return column + "+"
        return column

    def build(self) -> nn.Module:
        return self.architecture.build(**self.config)
