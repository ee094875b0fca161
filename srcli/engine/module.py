"""Running any nn.Module as it is: the path for networks that declare no fold (spandrel's zoo among them).

What the folded path reads from its steps is measured here once at load instead, on a thin strip canvas:
- the receptive field, as the input columns that carry float32 gradient into one output column. A gradient
  sees far-field influence that an impulse's change would lose against the output's rounding; and where a
  path's influence underflows even float32's gradient (RRDBNet's 23 blocks each scale their branch by 0.2,
  so past about 49 px it is below 1e-38), it is also far below what a float32 forward can represent, so
  that reach, not the 349 px the convs could span in exact arithmetic, is what exact tiling needs;
- whether the network is translation-equivariant (shifting the input shifts the output): window attention
  and global pooling are not, and their tiles can only be blended, not made exact;
- the activation peak, from the largest tensor a layer produces;
- for a network that is not equivariant, the overlap its cross-faded tiles need: measured, as the smallest
  overlap at which tiles of a probe image stay within OVERLAP_LEVELS of the whole-image run.
What the probe finds is kept in srcli's cache under a hash of the weights, so a file is probed once.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from srcli.engine.stitch import Blend
from srcli.engine.tiling import window_size, windows
from srcli.errors import OutputError
from srcli.files import write_atomic
from srcli.models.spec import ModelSpec
from srcli.paths import cache_home

_FIRST_CANVAS = 128  # strip width tried first (narrower when the convs cannot reach that far); doubled as needed
_MAX_CANVAS = 2048  # widest strip tried before a network counts as global
_EQUIVARIANCE_TOLERANCE = 1e-4  # relative: float32 reassociation stays far below it, window attention is above
PROBE_FORMAT = 2  # bump when what a cached probe holds, or how it is measured, changes
OVERLAP_LEVELS = 2  # a measured overlap keeps tiled output within this many 8-bit levels of the whole-image run
OVERLAP_CANDIDATES = (8, 16, 24, 32, 48, 64, 96)  # overlaps tried, smallest first (network-input px)
OVERLAP_PROBE_TILE = 16  # the tile core the overlap is measured with: small tiles are the hard case
OVERLAP_PROBE_HEIGHT = 16  # rows of the probe strip (its seam runs across them)


@dataclass(frozen=True)
class Probe:
    """What one look at a network on a small canvas tells."""

    radius: float | None  # receptive radius in network-input pixels; None: global (reaches the whole canvas)
    equivariant: bool  # a shifted input gives the shifted output: tiles can be exact
    elements_per_pixel: float  # the largest layer output, in elements per network-input pixel
    overlap: int | None = None  # measured cross-fade overlap (network-input px); None where tiles are exact
    overlap_levels: float | None = None  # the probe's largest tiled-vs-whole difference at that overlap (levels)


def weights_digest(model: nn.Module) -> str:
    """sha256 over every tensor of the state dict (names, dtypes, shapes, bytes): the same weights, the same key,
    wherever they were loaded from. 0-dim tensors (BatchNorm's num_batches_tracked) count as one element."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        value = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{value.dtype}|{tuple(value.shape)}|".encode())
        digest.update(value.reshape(-1).view(torch.uint8).numpy().tobytes() if value.numel() else b"")
    return digest.hexdigest()


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


def cached_probe(model: nn.Module, spec: ModelSpec, scale: int, output_factor: int) -> Probe:
    """`probe`, read from srcli's cache where these weights were probed before (the probe takes seconds, much
    longer on a busy machine); stored atomically after. An unreadable or unwritable cache costs a probe."""
    text = f"{PROBE_FORMAT}|{spec.arch}|{spec.channels}|x{scale}|{output_factor}|{spec.architecture.size}|"
    key = hashlib.sha256((text + weights_digest(model)).encode()).hexdigest()[:24]
    path = cache_home() / "probes" / f"{key}.json"
    try:
        return Probe(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        pass
    found = probe(model, spec, scale, output_factor)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, json.dumps(asdict(found)).encode())
    except (OSError, OutputError):
        pass
    return found


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
    finally:
        for hook in hooks:
            hook.remove()
    if radius is not None and _equivariant(model, spec, scale, output_factor, radius):
        return Probe(radius, True, per_pixel)
    overlap, levels = measure_overlap(model, spec, scale, output_factor)
    return Probe(radius, False, per_pixel, overlap, levels)


def _equivariant(model: nn.Module, spec: ModelSpec, scale: int, factor: int, radius: float) -> bool:
    """Does shifting the input by one multiple-of step shift the output the same way (away from the borders)?
    Looked at on a strip wide enough that some columns lie beyond the reach of both ends."""
    size = spec.architecture.size
    step = size.multiple_of
    height, width = size.padded(2, 2 * math.ceil(radius) + 4 * step + 32)
    canvas = torch.rand(1, spec.channels, height, width, generator=torch.Generator().manual_seed(1))
    canvas *= spec.pixel_max
    width -= step
    with torch.inference_mode():
        first = call_network(spec, model, canvas[..., :width], scale)
        second = call_network(spec, model, canvas[..., step:], scale)
    margin = math.ceil(radius) * factor + factor
    inner_first = first[..., (step * factor + margin) : (width * factor - margin)]
    inner_second = second[..., margin : ((width - step) * factor - margin)]
    if inner_first.shape[-1] <= 0:
        return False
    scale_of = max(float(inner_first.abs().max()), 1e-6)
    return float((inner_first - inner_second).abs().max()) <= _EQUIVARIANCE_TOLERANCE * scale_of


def natural_image(height: int, width: int, channels: int, seed: int = 0) -> np.ndarray:
    """A float image in 0..1 with a photo's 1/f amplitude spectrum (edges and texture at every scale), its
    channels correlated as a photo's are: what a tiled run's seams are judged on."""
    rng = np.random.default_rng(seed)
    fy, fx = np.fft.fftfreq(height)[:, None], np.fft.rfftfreq(width)[None, :]
    amplitude = 1.0 / np.maximum(np.hypot(fy, fx), 1.0 / max(height, width))
    shared = rng.standard_normal((height, width // 2 + 1)) + 1j * rng.standard_normal((height, width // 2 + 1))
    planes = []
    for _ in range(channels):
        own = rng.standard_normal(shared.shape) + 1j * rng.standard_normal(shared.shape)
        plane = np.fft.irfft2((shared + 0.5 * own) * amplitude, s=(height, width))
        planes.append((plane - plane.min()) / max(float(np.ptp(plane)), 1e-12))
    return np.stack(planes, axis=-1)


def measure_overlap(model: nn.Module, spec: ModelSpec, scale: int, factor: int) -> tuple[int, float]:
    """The smallest overlap (network-input px) at which cross-faded tiles of a natural-statistics probe stay
    within OVERLAP_LEVELS of the whole-image run, and the largest difference there (8-bit levels); the largest
    candidate and its difference where none does (a global network: whole-image runs are then what is exact).

    Each candidate is looked at on a strip cut into two windows of the engine's shape (core + 2 overlaps,
    on the step's grid) with one seam between them, blended by the engine's own cross-fade."""
    size = spec.architecture.size
    step = size.multiple_of
    candidates = sorted({-(-c // step) * step for c in OVERLAP_CANDIDATES})
    core = -(-OVERLAP_PROBE_TILE // step) * step
    height, widest = size.padded(OVERLAP_PROBE_HEIGHT, 2 * (core + 2 * candidates[-1]))
    image = torch.from_numpy(natural_image(height, widest, spec.channels)).float() * spec.pixel_max
    difference = math.inf
    with torch.inference_mode():
        for pad in candidates:
            height, width = size.padded(height, 2 * (core + 2 * pad))  # two cores: window < canvas
            canvas = image[:height, :width].permute(2, 0, 1)[None]
            whole = _levels(call_network(spec, model, canvas, scale)[0], spec.pixel_max)
            blend = Blend((height * factor, width * factor, spec.channels), factor, pad)
            tile = -(-width // 2)
            rows, columns = window_size(height, tile, pad, size), window_size(width, tile, pad, size)
            for cut in windows(height, width, tile, pad, size):
                window = canvas[..., cut.y0 : cut.y0 + rows, cut.x0 : cut.x0 + columns]
                blend.add(cut, call_network(spec, model, window, scale)[0])
            tiled = np.empty((height * factor, width * factor, spec.channels), np.uint8)
            blend.finish(tiled, spec.pixel_max)
            difference = float(np.abs(tiled.astype(np.int16) - whole).max())
            if difference <= OVERLAP_LEVELS:
                break
    return pad, difference


def _levels(output: torch.Tensor, pixel_max: float) -> np.ndarray:
    """An output (CHW) as 8-bit levels (HWC, int16), rounded and clipped as the engine stores them."""
    return (output * (255.0 / pixel_max)).round().clamp(0, 255).permute(1, 2, 0).numpy().astype(np.int16)


class ModuleRunner:
    """A plain nn.Module on one device; converted once per precision, on first use."""

    def __init__(self, model: nn.Module, spec: ModelSpec, scale: int, device: torch.device):
        self.device = device
        self.spec = spec
        self.scale = scale
        self.output_factor = 1 if spec.bicubic_input else scale
        self._master = model
        self._modules: dict[torch.dtype, nn.Module] = {}
        found = cached_probe(model, spec, scale, self.output_factor)
        self.exact = found.radius is not None and found.equivariant
        self.receptive_radius = found.radius if found.radius is not None else 0.0
        self.measured_overlap = found.overlap  # network-input px; None where tiles are exact
        self.measured_levels = found.overlap_levels
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
