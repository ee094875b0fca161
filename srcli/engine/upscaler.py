"""Upscaler: runs a network with its spec over an image, tiled, exactly and within a memory budget.

Tiles overlap by the network's receptive field, so each tile's cropped output holds exactly the values a
whole-image run gives; every tile window has one shape, so windows and the eight self-ensemble transforms
batch into single forwards. The output is allocated once in the image's integer dtype and tiles are written
into it. Networks that declare a fold run folded (srcli.engine.folded); any other nn.Module runs as it is
(srcli.engine.module); with the OpenVINO backend the module runs compiled by OpenVINO (srcli.engine.openvino),
the torch runner still giving its geometry. `_make_runner` is the one place a runner is chosen.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import NamedTuple

import cv2
import numpy as np
import torch
from torch import nn

from srcli.download import cache_home
from srcli.engine.devices import available_memory, choose_backend, choose_device, choose_dtype, precision_name
from srcli.engine.folded import SAFETY, FoldedRunner
from srcli.engine.module import ModuleRunner
from srcli.engine.openvino import OpenVINORunner
from srcli.engine.tiling import TRANSFORMS, Window, dihedral, feather, undo_dihedral, window_size, windows
from srcli.errors import DeviceError, NonFiniteOutputError, ScaleError
from srcli.models import ModelSpec, spec_of
from srcli.resize import imresize

ProgressCallback = Callable[[int, int], None]  # (done, total) windows; total restarts after a memory back-off

MIN_TILE = 16  # smallest tile core (LR px) the back-off goes down to before giving up
APPROXIMATE_PAD = 24  # overlap (LR px) of blended tiles, for networks whose tiles cannot be exact
# A CPU run plans its output buffer plus one window within this, or within half the free RAM if less: big enough
# that a 1600x1200 -> x4 EDSR-baseline run takes 2 windows (overlap 1.09x), small enough that a 4000x3000 -> x4
# run (576 MB of output) peaks under 3 GB.
CPU_PEAK_TARGET = 2560 * 2**20
CPU_MIN_BUDGET = 256 * 2**20  # the window's share when the output alone takes the target (huge images)

# How the image is extended past its edges before the network. "zero" is what the papers' networks do (their
# convolutions pad with zeros: border pixels darken, a black image gets corners up to 31 at x4); the others
# extend the image by the receptive field first, so every output pixel sees image-like surroundings.
BORDERS: dict[str, int | None] = {
    "zero": None,
    "reflect": cv2.BORDER_REFLECT,  # symmetric (cba|abc): MATLAB's own mirror, so plain bicubic is unchanged
    "replicate": cv2.BORDER_REPLICATE,  # aaa|abc
}

# BT.601 as MATLAB's rgb2ycbcr on 0..1 RGB: [Y, Cb, Cr] (0..255) = OFFSET + MATRIX @ rgb
YCBCR_OFFSET = np.array([16.0, 128.0, 128.0])
YCBCR_MATRIX = np.array([[65.481, 128.553, 24.966], [-37.797, -74.203, 112.0], [112.0, -93.786, -18.214]])
_YCBCR_INVERSE = np.linalg.inv(YCBCR_MATRIX)


@dataclass
class UpscaleOptions:
    """How to run: every field has a sensible automatic default."""

    device: str = "auto"  # auto (cuda, then mps, then cpu) | cpu | cuda | cuda:N | mps
    precision: str = "auto"  # auto (fp16 on CUDA, fp32 elsewhere) | fp32 | fp16 | bf16
    tile: int | None = None  # LR pixels per tile side, overlap excluded; None: from free memory; 0: whole image
    tile_pad: int | None = None  # overlap in LR pixels; None: the receptive field (result identical to tile=0)
    ensemble: bool = False  # geometric self-ensemble x8 (EDSR+)
    outscale: float | None = None  # final scale if different from the model's
    batch: int | None = None  # forwards batched at once; None: as many as the memory budget allows
    memory_budget: int | None = None  # bytes for activations; None: from free memory (also the OOM guard)
    fold: bool = True  # use the architecture's folded fast path where it declares one
    border: str = "zero"  # zero (the papers' padding; what eval scores) | reflect | replicate (see BORDERS)
    backend: str = "auto"  # auto (OpenVINO for fp32 on the CPU where installed, else torch) | torch | openvino


@dataclass
class Plan:
    """How one image was cut and run, after any back-off: what `upscale` returns beside the pixels."""

    tile: int  # 0 = whole image
    pad: int
    batch: int
    backoffs: int = 0
    fallbacks: int = 0  # batches re-run in fp32 because fp16/bf16 gave NaN/Inf
    tiles: int = 1  # windows the image was cut into
    device: str = "cpu"
    precision: str = "fp32"
    transforms: int = 1  # 8 with the self-ensemble
    exact: bool = True  # False: the network is not translation-equivariant; tiles are cross-faded, not exact
    backend: str = "torch"  # torch | openvino
    overlap: float = 1.0  # pixels computed / pixels kept: what the tiles' overlap costs (1.0: whole image)

    @property
    def forward_batch(self) -> int:
        """What one forward held: the batch limit, capped by the windows (x8 transforms with the ensemble)."""
        return min(self.batch, self.tiles * self.transforms)

    def to_dict(self) -> dict:
        """For --json and --verbose: the plan as a user reads it."""
        data = asdict(self)
        data["tile_pad"] = data.pop("pad")
        data["fp32_fallbacks"] = data.pop("fallbacks")
        data["batch"] = self.forward_batch
        data["tiling"] = "exact" if self.exact or self.tiles == 1 else "approximate"
        data["overlap"] = round(self.overlap, 3)
        del data["transforms"], data["exact"]
        return data


class Upscaled(NamedTuple):
    """An upscaled image and the plan that made it."""

    image: np.ndarray
    plan: Plan


class _OutOfMemory(Exception):
    """A forward did not fit: torch's OOM, or the estimate over an explicit budget."""


@dataclass
class _Batch:
    windows: list[Window]
    inputs: torch.Tensor  # network input, NCHW on the device (float32)
    chroma: list[np.ndarray] = field(default_factory=list)  # Cb, Cr (0..255) per window, Y-channel networks


class Upscaler:
    """A network made ready for inference at one scale; `upscale` maps HxWx3 uint8/uint16 to the same dtype.

    `spec` says what the network needs (srcli's own modules carry it; other modules must pass it). The
    module is deep-copied (and folded where its architecture declares a fold); the caller's is never changed.
    """

    def __init__(self, model: nn.Module, scale: int, options: UpscaleOptions | None = None,
                 *, spec: ModelSpec | None = None):
        self.options = options or UpscaleOptions()
        self.spec = spec or spec_of(model)
        self.scale = int(scale)
        self.spec.check_scale(self.scale)
        if self.options.border not in BORDERS:
            raise ValueError(f"unknown border {self.options.border!r}: use one of {', '.join(BORDERS)}")
        if self.options.outscale is not None and not self.options.outscale > 0:
            raise ScaleError(f"outscale must be positive, not {self.options.outscale}")
        self.device = choose_device(self.options.device)
        self.dtype = self._supported_dtype(choose_dtype(self.options.precision, self.device))
        self.size = self.spec.architecture.size
        self.pixel_max = float(self.spec.pixel_max)
        self.channels = int(self.spec.channels)
        self.upscales_inside = not self.spec.bicubic_input
        self.luma_model = self.spec.bicubic_input and self.channels == 1
        # auto converts only srcli's folded networks: a zoo module may hold ops a converter does not know
        self.backend = choose_backend(self.options.backend, self.device, self.dtype,
                                      convertible=self.spec.architecture.fold is not None)
        self.runner = self._make_runner(model)
        self.input_factor = 1 if self.upscales_inside else self.scale  # network input px per LR px, per side
        self._out_elements = 3 * (self.scale // self.input_factor) ** 2
        self.exact = getattr(getattr(self.runner, "geometry", self.runner), "exact", True)
        radius = self.runner.receptive_radius  # in network-input pixels
        if not self.exact:
            self.receptive_field = APPROXIMATE_PAD
        elif self.upscales_inside:
            self.receptive_field = math.ceil(radius)
        else:  # the bicubic window edge (mirrored, +-2 LR px of kernel) plus the network's reach, in LR px
            self.receptive_field = math.ceil(radius / self.scale) + 3
        self._budget: int | None = None  # the run's memory budget, read once per image

    def _supported_dtype(self, dtype: torch.dtype) -> torch.dtype:
        """Half precision only where the architecture supports it: auto steps down, an explicit ask is refused."""
        record = self.spec.architecture
        supported = {torch.float16: record.half_precision, torch.bfloat16: record.bf16_precision}
        if supported.get(dtype, True):
            return dtype
        if self.options.precision != "auto":
            raise DeviceError(f"{record.name} does not support {precision_name(dtype)}; use --precision fp32")
        return torch.bfloat16 if record.bf16_precision and self.device.type == "cuda" else torch.float32

    # -- the network ----------------------------------------------------------------------------------

    def _make_runner(self, model: nn.Module) -> FoldedRunner | ModuleRunner | OpenVINORunner:
        """The torch runner (folded where the architecture declares a fold), or OpenVINO running what it runs."""
        fold = self.spec.architecture.fold
        if fold is not None and self.options.fold:
            runner: FoldedRunner | ModuleRunner = FoldedRunner(fold(model, self.scale), self.channels, self.device)
        else:
            runner = ModuleRunner(model, self.spec, self.scale, self.device)
        if self.backend == "openvino":
            return OpenVINORunner(model, self.spec, self.scale, runner, cache_home() / "openvino")
        return runner

    def _forward(self, x: torch.Tensor, plan: Plan) -> torch.Tensor:
        """Normalised input -> float32 output; NaN/Inf in half precision re-runs the batch in fp32."""
        self._check_budget(x.shape[0], x.shape[2] * x.shape[3])
        budget = self._budget if self._budget is not None else self.memory_budget()
        try:
            out = self.runner.forward(x, self.dtype, budget)
            if not torch.isfinite(out).all():
                if self.dtype != torch.float32:
                    plan.fallbacks += 1
                    out = self.runner.forward(x, torch.float32, budget)
                if not torch.isfinite(out).all():
                    raise NonFiniteOutputError("the network's output holds NaN or infinite values even in fp32 "
                                               "(its weights make it diverge on this input); nothing was written")
        except torch.cuda.OutOfMemoryError:
            raise _OutOfMemory from None
        except RuntimeError as error:  # MPS and CPU allocators raise plain RuntimeErrors
            if "out of memory" in str(error).lower():
                raise _OutOfMemory from None
            raise
        return out

    def network_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The network on its own input (NCHW, 0..pixel_max) as the engine runs it: equals `model(x, scale)`."""
        with torch.inference_mode():
            x = self.runner.normalise(x.to(self.device, torch.float32))
            return self._forward(x, self._new_plan(0, 0, 1))

    def _forward_batched(self, inputs: torch.Tensor, plan: Plan) -> torch.Tensor:
        """Forwards in groups of at most `plan.batch`, self-ensembled when asked."""
        if not self.options.ensemble:
            outputs = [self._forward(chunk, plan) for chunk in inputs.split(plan.batch)]
            return outputs[0] if len(outputs) == 1 else torch.cat(outputs)
        same_shape = inputs.shape[2] == inputs.shape[3]
        groups = [TRANSFORMS] if same_shape else [TRANSFORMS[0::2], TRANSFORMS[1::2]]  # even k keep the shape
        count, total = inputs.shape[0], None
        for group in groups:
            items = torch.cat([dihedral(inputs, k, flip) for k, flip in group])  # one shape: batchable
            for start in range(0, items.shape[0], plan.batch):
                outputs = self._forward(items[start : start + plan.batch], plan)
                for offset, out in enumerate(outputs):
                    k, flip = group[(start + offset) // count]
                    out = undo_dihedral(out, k, flip)
                    if total is None:
                        total = out.new_zeros((count, *out.shape))
                    total[(start + offset) % count] += out
        assert total is not None
        return total / 8

    # -- memory ---------------------------------------------------------------------------------------

    def bytes_per_window(self, pixels: int) -> int:
        """Estimated peak bytes of one forward over a window of `pixels` network-input pixels."""
        activations = self.runner.bytes_per_pixel(self.dtype) * pixels
        outputs = 4 * self._out_elements * pixels * (3 if self.options.ensemble else 2)
        bicubic = 0 if self.upscales_inside else 8 * 3 * 4 * pixels  # float64 RGB, YCbCr and copies
        return int(SAFETY * (activations + outputs + bicubic))

    def memory_budget(self, output_bytes: int = 0) -> int:
        """Bytes a window may use: the explicit budget, else a share of free device memory; on the CPU, where the
        output buffer shares the RAM, what is left of half the free RAM (at most CPU_PEAK_TARGET) after it."""
        if self.options.memory_budget is not None:
            return int(self.options.memory_budget)
        free = available_memory(self.device)
        if self.device.type == "cpu":
            return int(max(min(free // 2, CPU_PEAK_TARGET) - output_bytes, min(free // 4, CPU_MIN_BUDGET)))
        return int(free * 0.8)

    def _check_budget(self, batch: int, pixels: int) -> None:
        """The back-off trigger where torch raises none: over the explicit budget, or the CPU's free RAM."""
        needed = batch * self.bytes_per_window(pixels)
        if self.options.memory_budget is not None:
            limit = self.options.memory_budget
        elif self.device.type == "cpu":
            limit = int(available_memory(self.device) * 0.9)
        else:
            return
        if needed > limit:
            raise _OutOfMemory

    def choose_tile(self, height: int, width: int, pad: int, budget: int) -> int:
        """The tile (LR px per side, overlap excluded; 0 = whole image) whose windows fit the budget and compute
        the fewest pixels: only tiles that cut an axis into n even cores are distinct, so each is tried."""
        factor = self.input_factor
        if self.bytes_per_window(height * width * factor * factor) <= budget:
            return 0
        best, best_cost = MIN_TILE, math.inf
        candidates = {math.ceil(length / n) for length in (height, width) for n in range(1, length // MIN_TILE + 1)}
        for tile in sorted(candidates, reverse=True):
            if tile < MIN_TILE:
                continue
            window = window_size(height, tile, pad, self.size) * window_size(width, tile, pad, self.size)
            if self.bytes_per_window(window * factor * factor) > budget:
                continue
            cost = math.ceil(height / tile) * math.ceil(width / tile) * window
            if cost < best_cost:
                best, best_cost = tile, cost
        return best

    def _new_plan(self, tile: int, pad: int, batch: int, backoffs: int = 0, fallbacks: int = 0) -> Plan:
        return Plan(max(0, int(tile)), pad, int(batch), backoffs, fallbacks, device=str(self.device),
                    precision=precision_name(self.dtype), transforms=8 if self.options.ensemble else 1,
                    exact=self.exact, backend=self.backend)

    def plan(self, height: int, width: int) -> Plan:
        pad = self.receptive_field if self.options.tile_pad is None else max(0, int(self.options.tile_pad))
        budget = self._budget if self._budget is not None else self.memory_budget()
        tile = self.options.tile
        if tile is None:
            tile = self.choose_tile(height, width, pad, budget)
        window = window_size(height, tile, pad, self.size) * window_size(width, tile, pad, self.size)
        window *= self.input_factor**2
        # Batching windows (and the 8 ensemble transforms) pays on GPUs; on CPU one window per forward keeps the
        # activations in cache and was faster (384x384 x2 at tile 96: 8.2 s vs 9.9 s; ensemble 7.3x vs 8.7x plain).
        if self.options.batch:
            batch = self.options.batch
        elif self.device.type == "cpu":
            batch = 1
        else:
            batch = max(1, budget // max(1, self.bytes_per_window(window)))
        return self._new_plan(tile, pad, batch)

    def _smaller(self, plan: Plan, height: int, width: int) -> Plan | None:
        """Halve the batch first, then the tile; None when already at the smallest tile."""
        if plan.batch > 1:
            return self._new_plan(plan.tile, plan.pad, plan.batch // 2, plan.backoffs + 1, plan.fallbacks)
        current = plan.tile if plan.tile > 0 else max(height, width)
        if current <= MIN_TILE:
            return None
        return self._new_plan(max(current // 2, MIN_TILE), plan.pad, 1, plan.backoffs + 1, plan.fallbacks)

    # -- pixels in, pixels out ------------------------------------------------------------------------

    def _batches(self, image: np.ndarray, plan: Plan, cuts: list[Window]) -> Iterator[_Batch]:
        window_h = window_size(image.shape[0], plan.tile, plan.pad, self.size)
        window_w = window_size(image.shape[1], plan.tile, plan.pad, self.size)
        peak = float(np.iinfo(image.dtype).max)
        per_forward = plan.batch if not self.options.ensemble else max(1, plan.batch // 8)
        for first in range(0, len(cuts), per_forward):
            group = cuts[first : first + per_forward]
            crops = [image[w.y0 : w.y0 + window_h, w.x0 : w.x0 + window_w] for w in group]
            if self.upscales_inside:
                stacked = torch.from_numpy(np.stack(crops)).to(self.device)
                x = stacked.permute(0, 3, 1, 2).float() * (self.pixel_max / peak)
                yield _Batch(group, self.runner.normalise(x))
                continue
            planes, chroma = [], []
            for crop in crops:
                bicubic = imresize(crop.astype(np.float64) / peak, scale=self.scale)  # MATLAB double path
                if self.luma_model:
                    ycbcr = YCBCR_OFFSET + bicubic @ YCBCR_MATRIX.T
                    planes.append(ycbcr[:, :, :1] / 255.0)
                    chroma.append(ycbcr[:, :, 1:])
                else:
                    planes.append(bicubic)
            x = torch.from_numpy(np.stack(planes)).to(self.device, torch.float32).permute(0, 3, 1, 2)
            yield _Batch(group, self.runner.normalise(x * self.pixel_max), chroma)

    def _write(self, batch: _Batch, index: int, output: torch.Tensor, out: np.ndarray) -> None:
        """Crop one window's output to its core and store it: quantized RGB, or float Y (clipped) for scoring."""
        w, s = batch.windows[index], self.scale
        top, left = (w.top - w.y0) * s, (w.left - w.x0) * s
        rows, cols = slice(top, top + (w.bottom - w.top) * s), slice(left, left + (w.right - w.left) * s)
        target = out[w.top * s : w.bottom * s, w.left * s : w.right * s]
        core = output[index][:, rows, cols]
        if out.dtype != np.float64 and not self.luma_model:  # quantize on the device: only bytes travel
            peak = float(np.iinfo(out.dtype).max)
            factor = peak / self.pixel_max
            quantized = (core.mul(factor) if factor != 1.0 else core.clone()).round_().clamp_(0, peak)
            quantized = quantized.to(torch.uint8 if out.dtype == np.uint8 else torch.int32)
            target[...] = quantized.permute(1, 2, 0).cpu().numpy()
            return
        values = core.permute(1, 2, 0).double().cpu().numpy() * (255.0 / self.pixel_max)
        if out.dtype == np.float64:
            if values.shape[2] == 1:
                target[...] = np.clip(values[:, :, 0], 0.0, 255.0)
            else:
                target[...] = YCBCR_OFFSET[0] + np.clip(values, 0.0, 255.0) @ YCBCR_MATRIX[0] / 255.0
            return
        ycbcr = np.concatenate([values, batch.chroma[index][rows, cols]], axis=2)
        rgb = (ycbcr - YCBCR_OFFSET) @ _YCBCR_INVERSE.T * 255.0
        peak = float(np.iinfo(out.dtype).max)
        target[...] = np.clip(np.round(rgb * (peak / 255.0)), 0, peak)

    def _run(self, image: np.ndarray, out: np.ndarray, progress: ProgressCallback | None) -> Plan:
        """Fill `out` (integer RGB, or float64 HxW luma) window by window, backing off on out-of-memory."""
        height, width = image.shape[:2]
        self._budget = self.memory_budget(out.nbytes)
        plan = self.plan(height, width)
        while True:
            try:
                self._run_plan(image, out, plan, progress)
                return plan
            except _OutOfMemory:
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                smaller = self._smaller(plan, height, width)
                if smaller is None:
                    raise DeviceError(
                        f"not enough memory on {self.device} even for {MIN_TILE}px tiles; "
                        "close other programs or use --device cpu"
                    ) from None
                plan = smaller

    def _run_plan(self, image: np.ndarray, out: np.ndarray, plan: Plan, progress: ProgressCallback | None) -> None:
        height, width = image.shape[:2]
        cuts = windows(height, width, plan.tile, plan.pad, self.size)
        plan.tiles = len(cuts)
        window_area = window_size(height, plan.tile, plan.pad, self.size)
        window_area *= window_size(width, plan.tile, plan.pad, self.size)
        plan.overlap = len(cuts) * window_area / (height * width)
        blend = None
        if not self.exact and len(cuts) > 1:
            if out.dtype == np.float64 or self.luma_model:
                raise ValueError("approximate (blended) tiling writes RGB images only; score with tile=0")
            blend = _Blend(out.shape, self.scale, plan.pad)
        done = 0
        with torch.inference_mode():
            for batch in self._batches(image, plan, cuts):
                output = self._forward_batched(batch.inputs, plan)
                for index in range(len(batch.windows)):
                    if blend is None:
                        self._write(batch, index, output, out)
                    else:
                        blend.add(batch.windows[index], output[index])
                done += len(batch.windows)
                if progress:
                    progress(done, plan.tiles)
        if blend is not None:
            blend.finish(out, self.pixel_max)

    def _check_image(self, image: np.ndarray) -> None:
        if not isinstance(image, np.ndarray) or image.dtype not in (np.uint8, np.uint16):
            raise TypeError("the engine takes a uint8 or uint16 numpy image")
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"the engine takes RGB images (HxWx3), not shape {image.shape}")

    def _extend(self, image: np.ndarray) -> tuple[np.ndarray, int]:
        """The image extended past its edges by the receptive field (per `border`), and that margin in LR px.

        The whole image is extended once and then run through the exact tiled engine, so the result is
        still byte-identical under any tiling."""
        mode = BORDERS[self.options.border]
        if mode is None:
            return image, 0
        margin = self.receptive_field
        return cv2.copyMakeBorder(image, margin, margin, margin, margin, mode), margin

    def _run_extended(self, image: np.ndarray, channels: tuple[int, ...], dtype: np.dtype,
                      progress: ProgressCallback | None) -> tuple[np.ndarray, Plan]:
        """Run over the extended image and crop the margin off the output.

        A size the network does not accept (under its minimum, not a multiple of its step) is then extended at
        the bottom and right as well, reflected and then replicated as spandrel does, and cropped off alike."""
        extended, margin = self._extend(image)
        height, width = extended.shape[:2]
        accepted_height, accepted_width = self.size.padded(height, width)
        if (accepted_height, accepted_width) != (height, width):
            extended = _extend_bottom_right(extended, accepted_height - height, accepted_width - width)
        out = np.empty((accepted_height * self.scale, accepted_width * self.scale, *channels), dtype=dtype)
        plan = self._run(extended, out, progress)
        if out.shape[:2] != (image.shape[0] * self.scale, image.shape[1] * self.scale):
            edge = margin * self.scale
            out = out[edge : edge + image.shape[0] * self.scale, edge : edge + image.shape[1] * self.scale]
            out = np.ascontiguousarray(out)
        return out, plan

    def upscale(self, image: np.ndarray, progress: ProgressCallback | None = None) -> Upscaled:
        """Super-resolve an RGB (HxWx3) uint8 or uint16 image: the same dtype at the model's scale (or at
        `outscale`: the model's scale, then INTER_AREA to shrink or INTER_CUBIC to enlarge), and the plan used."""
        self._check_image(image)
        height, width = image.shape[:2]
        out, plan = self._run_extended(image, (3,), image.dtype, progress)
        outscale = self.options.outscale
        if outscale is None or outscale == self.scale:
            return Upscaled(out, plan)
        size = (max(1, round(width * outscale)), max(1, round(height * outscale)))
        interpolation = cv2.INTER_AREA if outscale < self.scale else cv2.INTER_CUBIC
        return Upscaled(cv2.resize(out, size, interpolation=interpolation), plan)

    def upscale_luma(self, image: np.ndarray, progress: ProgressCallback | None = None) -> np.ndarray:
        """Float Y (BT.601, 0..255, clipped, not rounded) of the super-resolved image, at the model's scale.

        For a Y-channel VDSR this is the network's own output, the quantity its published PSNRs score;
        for RGB models it is the luma of the unquantized RGB output. `outscale` does not apply.
        """
        self._check_image(image)
        return self._run_extended(image, (), np.float64, progress)[0]


def _extend_bottom_right(image: np.ndarray, rows: int, columns: int) -> np.ndarray:
    """Extend at the bottom and right: reflected as far as the image allows, then replicated."""
    reflect_rows, reflect_columns = min(rows, image.shape[0] - 1), min(columns, image.shape[1] - 1)
    image = np.pad(image, ((0, reflect_rows), (0, reflect_columns), (0, 0)), mode="reflect")
    return np.pad(image, ((0, rows - reflect_rows), (0, columns - reflect_columns), (0, 0)), mode="edge")


class _Blend:
    """Cross-fades overlapping window outputs (float sums and weights), for networks whose tiles cannot be exact."""

    def __init__(self, shape: tuple[int, ...], scale: int, pad: int):
        self.scale, self.pad = scale, pad
        self.total = np.zeros(shape, np.float32)
        self.weight = np.zeros(shape[:2], np.float32)

    def add(self, window: Window, output: torch.Tensor) -> None:
        s = self.scale
        height, width = output.shape[1] // s, output.shape[2] // s
        rows = np.repeat(feather(window.y0, window.y0 + height, window.top, window.bottom, self.pad), s)
        cols = np.repeat(feather(window.x0, window.x0 + width, window.left, window.right, self.pad), s)
        weight = rows[:, None] * cols[None, :]
        region = (slice(window.y0 * s, (window.y0 + height) * s), slice(window.x0 * s, (window.x0 + width) * s))
        self.total[region] += output.permute(1, 2, 0).float().cpu().numpy() * weight[:, :, None]
        self.weight[region] += weight

    def finish(self, out: np.ndarray, pixel_max: float) -> None:
        peak = float(np.iinfo(out.dtype).max)
        values = self.total / self.weight[:, :, None] * (peak / pixel_max)
        out[...] = np.clip(np.rint(values), 0, peak)
