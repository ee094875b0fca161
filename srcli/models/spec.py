"""The record every architecture fills in once, and the spec of one network built from it.

Code outside `srcli.models` asks these objects what a network needs (its scales, pixel range, input,
receptive field, fast path, the paper's table column) and never switches on architecture names: adding
an architecture is one file in this package that defines its module and its `Architecture`. The record
is what inference needs, with what evaluation (`Evaluation`) and training (`Training`) need nested in it;
which keys identify a file is a `KeyCondition`, a table rather than code.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from srcli.errors import ScaleError

if TYPE_CHECKING:
    from srcli.models.folding import FoldedNetwork

Tensors = dict[str, torch.Tensor]


@dataclass(frozen=True)
class KeyCondition:
    """Which state-dict keys identify an architecture, declared as data (spandrel's KeyCondition idea).

    A part is a key, a key prefix (ending in '.': some key starts with it) or a nested condition;
    the condition holds when all, any or none of its parts are found.
    """

    mode: str  # "all", "any" or "none"
    parts: tuple[str | KeyCondition, ...]

    @classmethod
    def has_all(cls, *parts: str | KeyCondition) -> KeyCondition:
        return cls("all", parts)

    @classmethod
    def has_any(cls, *parts: str | KeyCondition) -> KeyCondition:
        return cls("any", parts)

    @classmethod
    def has_none(cls, *parts: str | KeyCondition) -> KeyCondition:
        return cls("none", parts)

    def __call__(self, state: Mapping[str, Any]) -> bool:
        found = (_found(part, state) for part in self.parts)
        if self.mode == "all":
            return all(found)
        return any(found) if self.mode == "any" else not any(found)


def _found(part: str | KeyCondition, state: Mapping[str, Any]) -> bool:
    if isinstance(part, KeyCondition):
        return part(state)
    return any(key.startswith(part) for key in state) if part.endswith(".") else part in state


def _no_column(config: Mapping[str, Any]) -> str | None:
    return None


@dataclass(frozen=True)
class Evaluation:
    """What scoring needs: the EDSR paper's Table 3 column a config's scores are compared with."""

    table_column: Callable[[Mapping[str, Any]], str | None] = _no_column
    ensemble_column: bool = True  # the table has a '+' (self-ensemble) column for it


@dataclass(frozen=True)
class Training:
    """What the recipes in srcli.training need beyond inference."""

    scales: tuple[int, ...] = ()  # the scales `srcli train` accepts
    branch_per_scale: bool = False  # a forward uses only its scale's branch (DDP must allow unused parameters)
    fresh_keys: tuple[str, ...] = ()  # left fresh by --init-from (the upsampler): x3/x4 started from a trained x2
    prepare: Callable[[nn.Module], None] | None = None  # e.g. VDSR's zero output conv


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
    """Everything srcli knows about one architecture, in one place: at the top what inference needs."""

    name: str
    module: Callable[..., nn.Module]  # the nn.Module class; its keyword arguments are the config
    presets: Mapping[str, Mapping[str, Any]]  # named sizes: 'edsr-baseline' -> {'blocks': 16, ...}
    recognise: Callable[[Mapping[str, torch.Tensor]], bool]  # do these keys look like it? (a KeyCondition)
    detect: Callable[[Tensors], tuple[dict[str, Any], Tensors, str]]  # -> (config, tensors in srcli's layout, layout)
    scales: Callable[[Mapping[str, Any]], tuple[int, ...]]  # the scales a config serves (trained for)
    channels: Callable[[Mapping[str, Any]], int] = lambda config: int(config.get("channels", 3))
    pixel_max: float = 255.0  # input and output range: 0..pixel_max
    bicubic_input: bool = False  # fed the bicubic-upscaled image (VDSR): then it runs at any scale >= 1
    multi_scale: bool = False  # built with `scales=` and called with the scale, rather than built with `scale=`
    fold: Callable[[nn.Module, int], FoldedNetwork] | None = None  # optional fast path (srcli.models.folding)
    optional_keys: tuple[str, ...] = ()  # key prefixes a file may omit (fixed mean shifts in BasicSR files)
    half_precision: bool = True  # fp16 inference is safe (any overflow still falls back to fp32)
    bf16_precision: bool = True
    size: SizeRequirements = SizeRequirements()
    call: Callable[[nn.Module, torch.Tensor], torch.Tensor] | None = None  # how to run it, when not module(x[, scale])
    source: str = "srcli"  # who knows the architecture: srcli's own records, or 'spandrel'
    evaluation: Evaluation = Evaluation()
    training: Training = Training()

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

    def check_scale(self, scale: int | None, label: str | None = None, *, doing: str = "upscale") -> None:
        """The one scale check (resolution, the engine, scoring): networks are held to their trained scales,
        except those fed a bicubic-upscaled image (any scale from 1). None asks for nothing."""
        if scale is None or self.serves(scale):
            return
        if self.any_scale:
            raise ScaleError(f"scale must be at least 1, not {scale}")
        raise ScaleError(f"{label or f'this {self.arch} model'} is {self.scales_text()}; it cannot {doing} x{scale}")

    def scales_text(self) -> str:
        return "/".join(f"x{s}" for s in self.scales)

    def table_column(self, ensemble: bool = False) -> str | None:
        """The EDSR paper's Table 3 column this network's scores belong to, '+' with self-ensemble."""
        evaluation = self.architecture.evaluation
        column = evaluation.table_column(self.config)
        if column is not None and ensemble and evaluation.ensemble_column:
            return column + "+"
        return column

    def build(self) -> nn.Module:
        return self.architecture.build(**self.config)
