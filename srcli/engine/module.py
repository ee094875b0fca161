"""Running any nn.Module as it is: the path for networks that declare no fold (spandrel's zoo among them).

What the folded path reads from its steps is measured here once at load instead, on a thin strip canvas:
- the receptive field, as the input columns that carry float32 gradient into one output column. A gradient
  sees far-field influence that an impulse's change would lose against the output's rounding; and where a
  path's influence underflows even float32's gradient (RRDBNet's 23 blocks each scale their branch by 0.2,
  so past about 49 px it is below 1e-38), it is also far below what a float32 forward can represent, so
  that reach, not the 349 px the convs could span in exact arithmetic, is what exact tiling needs;
- whether the network is translation-equivariant (shifting the input shifts the output): window attention
  and global pooling are not, and their tiles can only be blended, not made exact;
- the activation peak, from the largest tensor a layer produces.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from srcli.models.spec import ModelSpec

_FIRST_CANVAS = 128  # strip width tried first (narrower when the convs cannot reach that far); doubled as needed
_MAX_CANVAS = 2048  # widest strip tried before a network counts as global
_EQUIVARIANCE_TOLERANCE = 1e-4  # relative: float32 reassociation stays far below it, window attention is above


@dataclass(frozen=True)
class Probe:
    """What one look at a network on a small canvas tells."""

    radius: float | None  # receptive radius in network-input pixels; None: global (reaches the whole canvas)
    equivariant: bool  # a shifted input gives the shifted output: tiles can be exact
    elements_per_pixel: float  # the largest layer output, in elements per network-input pixel


def conv_reach(model: nn.Module) -> int:
    """An upper bound on the receptive radius: every conv's reach added up, as if all ran at input resolution."""
    reach = 0
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            kernel, dilation = module.kernel_size, module.dilation
            reach += max((k - 1) // 2 * d for k, d in zip(kernel, dilation, strict=True))
    return reach


def call_network(spec: ModelSpec, model: nn.Module, x: torch.Tensor, scale: int) -> torch.Tensor:
    """Run a network the way its architecture says: its own call, or module(x), with the scale if it serves several."""
    record = spec.architecture
    if record.call is not None:
        return record.call(model, x)
    return model(x, scale) if record.multi_scale else model(x)


def probe(model: nn.Module, spec: ModelSpec, scale: int, output_factor: int) -> Probe:
    """Look at the network on a strip canvas wide enough for its conv reach (float32, on the CPU)."""
    model = copy.deepcopy(model).float().cpu().eval()
    size = spec.architecture.size
    step = size.multiple_of
    largest = 0

    def record(module: nn.Module, inputs: object, output: object) -> None:
        nonlocal largest
        if isinstance(output, torch.Tensor):
            largest = max(largest, output[0].numel())

    hooks = [m.register_forward_hook(record) for m in model.modules() if not list(m.children())]
    generator = torch.Generator().manual_seed(0)
    width = min(2 * conv_reach(model) + 2 * step + 8, _FIRST_CANVAS)
    radius: float | None = None
    per_pixel = 0.0
    try:
        while radius is None and width <= _MAX_CANVAS:
            height, width = size.padded(2, width)  # a strip: the reach is the same along both axes
            canvas = (torch.rand(1, spec.channels, height, width, generator=generator) * spec.pixel_max)
            canvas.requires_grad_(True)
            largest = 0
            output = call_network(spec, model, canvas, scale)
            centre = width // 2
            output[..., centre * output_factor : (centre + 1) * output_factor].sum().backward()
            assert canvas.grad is not None
            columns = canvas.grad.abs().sum(dim=(0, 1, 2)).nonzero().flatten()
            per_pixel = largest / (height * width)
            if columns.numel() == 0:
                radius = 0.0
            elif int(columns.min()) > 0 and int(columns.max()) < width - 1:
                radius = float(max(centre - int(columns.min()), int(columns.max()) - centre))
            else:
                width *= 2  # the gradient reached the canvas edge: look again on a wider one
        if radius is None:
            return Probe(None, False, per_pixel)
        return Probe(radius, _equivariant(model, spec, scale, canvas.detach(), output_factor, radius), per_pixel)
    finally:
        for hook in hooks:
            hook.remove()


def _equivariant(model: nn.Module, spec: ModelSpec, scale: int, canvas: torch.Tensor, factor: int,
                 radius: float) -> bool:
    """Does shifting the input by one multiple-of step shift the output the same way (away from the borders)?"""
    step = spec.architecture.size.multiple_of
    width = canvas.shape[-1] - step
    with torch.inference_mode():
        first = call_network(spec, model, canvas[..., :width], scale)
        second = call_network(spec, model, canvas[..., step:], scale)
    margin = int(radius) * factor + factor
    inner_first = first[..., (step * factor + margin) : (width * factor - margin)]
    inner_second = second[..., margin : ((width - step) * factor - margin)]
    if inner_first.shape[-1] <= 0:
        return False
    scale_of = max(float(inner_first.abs().max()), 1e-6)
    return float((inner_first - inner_second).abs().max()) <= _EQUIVARIANCE_TOLERANCE * scale_of


class ModuleRunner:
    """A plain nn.Module on one device; converted once per precision, on first use."""

    def __init__(self, model: nn.Module, spec: ModelSpec, scale: int, device: torch.device):
        self.device = device
        self.spec = spec
        self.scale = scale
        self.output_factor = 1 if spec.bicubic_input else scale
        self._master = model
        self._modules: dict[torch.dtype, nn.Module] = {}
        found = probe(model, spec, scale, self.output_factor)
        self.exact = found.radius is not None and found.equivariant
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
        return call_network(self.spec, self._module(dtype), x, self.scale).float()
