"""Running any nn.Module as it is: the path for networks that declare no fold.

What the folded path reads from its steps (receptive field, activation memory) is measured here once at
load instead, on a small canvas: the receptive field with an impulse probe (the outputs that change when one
input pixel does), and the activation peak from the largest tensor a layer produces.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
from torch import nn

from srcli.models.spec import ModelSpec

_PROBE_SIDES = (48, 96, 192)  # canvases tried in turn until the change stays inside one


@dataclass(frozen=True)
class Probe:
    """What one look at a network on a small canvas tells."""

    radius: float | None  # receptive radius in network-input pixels; None: global (reaches every pixel)
    elements_per_pixel: float  # the largest layer output, in elements per network-input pixel


def probe(model: nn.Module, channels: int, pixel_max: float, output_factor: int, call_scale: int | None) -> Probe:
    """Change one input pixel on a random canvas and see how far the output moves (float32, on the CPU)."""
    model = copy.deepcopy(model).float().cpu().eval()
    largest = 0

    def record(module: nn.Module, inputs: object, output: object) -> None:
        nonlocal largest
        if isinstance(output, torch.Tensor):
            largest = max(largest, output[0].numel())

    hooks = [m.register_forward_hook(record) for m in model.modules() if not list(m.children())]
    generator = torch.Generator().manual_seed(0)
    try:
        for side in _PROBE_SIDES:
            largest = 0
            canvas = torch.rand(1, channels, side, side, generator=generator) * pixel_max
            changed = canvas.clone()
            centre = side // 2
            changed[:, :, centre, centre] += pixel_max
            with torch.inference_mode():
                before = _call(model, canvas, call_scale)
                after = _call(model, changed, call_scale)
            moved = (before != after).any(dim=1)[0].nonzero()
            per_pixel = largest / (side * side)
            if moved.numel() == 0:
                return Probe(0.0, per_pixel)
            rows, cols = moved[:, 0], moved[:, 1]
            edge = output_factor * side - 1
            if min(int(rows.min()), int(cols.min())) == 0 or max(int(rows.max()), int(cols.max())) == edge:
                continue  # the change reached the canvas edge: look again on a bigger one
            first, last = centre * output_factor, centre * output_factor + output_factor - 1
            reach = max(first - int(rows.min()), first - int(cols.min()), int(rows.max()) - last,
                        int(cols.max()) - last, 0)
            return Probe(float(math.ceil(reach / output_factor)), per_pixel)
        return Probe(None, per_pixel)
    finally:
        for hook in hooks:
            hook.remove()


def _call(model: nn.Module, x: torch.Tensor, scale: int | None) -> torch.Tensor:
    return model(x) if scale is None else model(x, scale)


class ModuleRunner:
    """A plain nn.Module on one device; converted once per precision, on first use."""

    def __init__(self, model: nn.Module, spec: ModelSpec, scale: int, device: torch.device):
        self.device = device
        self.spec = spec
        self._call_scale = scale if spec.architecture.multi_scale else None
        self.output_factor = 1 if spec.bicubic_input else scale
        self._master = model
        self._modules: dict[torch.dtype, nn.Module] = {}
        found = probe(model, spec.channels, spec.pixel_max, self.output_factor, self._call_scale)
        self.exact = found.radius is not None
        self.receptive_radius = found.radius if found.radius is not None else 0.0
        self._elements = 3 * found.elements_per_pixel  # the largest output, its input and one more live tensor

    def _module(self, dtype: torch.dtype) -> nn.Module:
        if dtype not in self._modules:
            module = copy.deepcopy(self._master).eval().to(self.device, dtype)
            self._modules[dtype] = module.to(memory_format=torch.channels_last)
        return self._modules[dtype]

    def bytes_per_pixel(self, dtype: torch.dtype) -> float:
        return torch.finfo(dtype).bits // 8 * self._elements

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        return x  # the module does its own input normalisation

    def forward(self, x: torch.Tensor, dtype: torch.dtype, budget: int) -> torch.Tensor:
        x = x.to(dtype).contiguous(memory_format=torch.channels_last)
        return _call(self._module(dtype), x, self._call_scale).float()
