"""Upscaler: runs a network with its spec over an image, tiled, exactly and within a memory budget.

Tiles overlap by the network's receptive field, so each tile's cropped output holds exactly the values a
whole-image run gives; every tile window has one shape, so windows and the eight self-ensemble transforms
batch into single forwards. The output is allocated once in the image's integer dtype and tiles are written
into it. Networks that declare a fold run folded (srcli.engine.folded); any other nn.Module runs as it is
(srcli.engine.module); with the OpenVINO backend the module runs compiled by OpenVINO (srcli.engine.openvino),
the torch runner still giving its geometry. `_make_runner` is the one place a runner is chosen. Memory planning
lives in srcli.engine.planning, cutting and stitching windows in srcli.engine.stitch, the Y channel in
srcli.engine.luma.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from typing import NamedTuple

import cv2
import numpy as np
import torch
from torch import nn

from srcli.engine import int8, luma
from srcli.engine.devices import resolve_placement
from srcli.engine.foldcache import cached_fold
from srcli.engine.folded import FoldedRunner
from srcli.engine.module import ModuleRunner, weights_digest
from srcli.engine.openvino import (
    OpenVINORunner,
    load_openvino,
    openvino_cached,
    openvino_key,
    record_torch_work,
    torch_work,
)
from srcli.engine.planning import MIN_TILE, OutOfMemory, Planning, Region, window_area
from srcli.engine.stitch import (
    Batch,
    Blend,
    core_and_target,
    extend_bottom_right,
    store_quantized,
    window_groups,
)
from srcli.engine.tiling import TRANSFORMS, Window, dihedral, undo_dihedral, window_size, windows
from srcli.errors import BackendError, DeviceError, NonFiniteOutputError, ScaleError
from srcli.models import ModelSpec, spec_of
from srcli.models.folding import multiply_adds_per_pixel
from srcli.options import UpscaleOptions
from srcli.resize import imresize

ProgressCallback = Callable[[int, int], None]  # (done, total) windows; total restarts after a memory back-off

# --backend auto converts for OpenVINO only after torch has done this much work in the process (multiply-adds):
# about what the conversion costs (34 s on a busy 2-core EPYC, ~30 forwards of MDSR-baseline over 162x162 px), so
# a small job never waits for a conversion and a large one pays it at most once more than it needed to.
CONVERT_AFTER = 1.0e12
# The least border margin (LR px) along an axis shorter than the receptive field: enough that a flat pixel keeps
# its colour within 2 levels (a 1 px margin left it 5 levels off with the default x4 model).
MIN_MARGIN = 8
APPROXIMATE_PAD = 24  # overlap (LR px) of blended tiles where a runner measured none (see engine.module)
# How the image is extended past its edges before the network. "zero" is what the papers' networks do (their
# convolutions pad with zeros: border pixels darken, a black image gets corners up to 31 at x4); the others
# extend the image by the receptive field first, so every output pixel sees image-like surroundings.
BORDERS: dict[str, int | None] = {
    "zero": None,
    "reflect": cv2.BORDER_REFLECT,  # symmetric (cba|abc): MATLAB's own mirror, so plain bicubic is unchanged
    "replicate": cv2.BORDER_REPLICATE,  # aaa|abc
}

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
    precision_reason: str = ""  # why that precision ("bf16: measured 2.0x faster than fp32 on this CPU")
    transforms: int = 1  # 8 with the self-ensemble
    exact: bool = True  # False: the network is not translation-equivariant; tiles are cross-faded, not exact
    backend: str = "torch"  # torch | openvino
    overlap: float = 1.0  # pixels computed / pixels kept: what the tiles' overlap costs (1.0: whole image)
    measured_pad: int | None = None  # the overlap the probe measured for a non-equivariant network (LR px)
    measured_levels: float | None = None  # the probe's largest tiled-vs-whole difference at that overlap (levels)
    backend_fallback: str | None = None  # why `auto` ran torch after OpenVINO failed on this network

    @property
    def forward_batch(self) -> int:
        """What one forward held: the batch limit, capped by the windows (x8 transforms with the ensemble)."""
        return min(self.batch, self.tiles * self.transforms)

    @property
    def tiling(self) -> str:
        """exact, or approximate where the network's tiles had to be cross-faded."""
        return "exact" if self.exact or self.tiles == 1 else "approximate"

    def to_dict(self) -> dict:
        """For --json: the plan as a user reads it (the keys README documents)."""
        data = asdict(self)
        data["tile_pad"] = data.pop("pad")
        data["fp32_fallbacks"] = data.pop("fallbacks")
        data["batch"] = self.forward_batch
        data["tiling"] = self.tiling
        data["overlap"] = round(self.overlap, 3)
        del data["transforms"], data["exact"]
        for key in ("measured_pad", "measured_levels", "backend_fallback"):  # only where they say something
            if data[key] is None:
                del data[key]
        return data


class Upscaled(NamedTuple):
    """An upscaled image and the plan that made it."""

    image: np.ndarray
    plan: Plan


class Upscaler(Planning):
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
        if self.options.outscale is not None and not 0 < self.options.outscale < math.inf:
            raise ScaleError(f"outscale must be a positive finite number, not {self.options.outscale}")
        self.placement = resolve_placement(
            self.options.device, self.options.precision, self.options.backend, architecture=self.spec.architecture
        )
        self.device, self.dtype, self.backend = self.placement[:3]
        self.size = self.spec.architecture.size
        self.pixel_max = float(self.spec.pixel_max)
        self.channels = int(self.spec.channels)
        self.upscales_inside = not self.spec.bicubic_input
        self.luma_model = self.channels == 1  # grey-only networks (Y VDSR, DnCNN) run on Y; chroma is kept
        self._convert_later: nn.Module | None = None  # auto's OpenVINO conversion, deferred (see _make_runner)
        self._torch_work = 0.0  # multiply-adds torch ran while that conversion waits
        self._work_per_pixel = 0.0
        self._openvino_key = ""
        self.runner = self._make_runner(model)
        self.input_factor = 1 if self.upscales_inside else self.scale  # network input px per LR px, per side
        self._out_elements = 3 * (self.scale // self.input_factor) ** 2
        geometry = getattr(self.runner, "geometry", self.runner)
        self.exact = getattr(geometry, "exact", True)
        radius = self.runner.receptive_radius  # in network-input pixels
        self.measured_overlap: int | None = getattr(geometry, "measured_overlap", None)  # network-input px
        self.measured_levels: float | None = getattr(geometry, "measured_levels", None)
        if not self.exact and self.measured_overlap is None:
            self.receptive_field = APPROXIMATE_PAD
        elif not self.exact:  # the overlap the probe measured, in LR px
            self.receptive_field = math.ceil(self.measured_overlap / self.input_factor)
        elif self.upscales_inside:
            self.receptive_field = math.ceil(radius)
        else:  # the bicubic window edge (mirrored, +-2 LR px of kernel) plus the network's reach, in LR px
            self.receptive_field = math.ceil(radius / self.scale) + 3
        self._budget: int | None = None  # the run's memory budget, read once per image

    # -- the network ----------------------------------------------------------------------------------

    def _make_runner(self, model: nn.Module) -> FoldedRunner | ModuleRunner | OpenVINORunner:
        """The torch runner (folded where the architecture declares a fold), or OpenVINO running what it runs."""
        fold = self.spec.architecture.fold
        if fold is not None and self.options.fold:
            folded = cached_fold(fold, model, self.spec, self.scale)
            runner: FoldedRunner | ModuleRunner = FoldedRunner(folded, self.channels, self.device)
        else:
            runner = ModuleRunner(model, self.spec, self.scale, self.device)
        self.backend_fallback: str | None = None
        if self.backend != "openvino":
            return runner
        if self.placement.quantised:
            network = int8.find(weights_digest(model), self.scale)
            return OpenVINORunner(model, self.spec, self.scale, runner, ready=int8.read(load_openvino(), network))
        key = openvino_key(model, self.spec, self.scale) if self.options.backend == "auto" else ""
        if key and isinstance(runner, FoldedRunner) and not openvino_cached(key):
            # Rent before buying: torch runs until it has done about a conversion's worth of work (counted across
            # runs), then the conversion (tens of seconds on a busy 2-core CPU) is paid once and cached.
            self._openvino_key, self._torch_work = key, torch_work(key)
            net = runner.network
            self._work_per_pixel = multiply_adds_per_pixel(net.trunk + net.tail, self.channels)
            self.backend, self._convert_later = "torch", model
            return runner
        try:
            return OpenVINORunner(model, self.spec, self.scale, runner)
        except BackendError as error:
            if self.options.backend != "auto":
                raise
            self.backend, self.backend_fallback = "torch", str(error)  # auto never keeps a failing backend
            return runner

    def _switch_when_paid(self) -> None:
        """Convert for OpenVINO (auto, not yet cached) once torch has run CONVERT_AFTER multiply-adds here."""
        model = self._convert_later
        if model is None or self._torch_work < CONVERT_AFTER or isinstance(self.runner, OpenVINORunner):
            return
        self._convert_later = None
        try:
            self.runner = OpenVINORunner(model, self.spec, self.scale, self.runner)
        except BackendError as error:  # auto never keeps a failing backend: torch goes on
            self.backend_fallback = str(error)
            return
        self.backend = "openvino"

    def _forward(self, x: torch.Tensor, plan: Plan) -> torch.Tensor:
        """Normalised input -> float32 output; NaN/Inf in half precision re-runs the batch in fp32."""
        self._check_budget(x.shape[0], x.shape[2] * x.shape[3])
        budget = self._budget if self._budget is not None else self.memory_budget()
        try:
            out = self._runner_forward(x, budget, plan)
            if not torch.isfinite(out).all():
                if self.dtype != torch.float32:
                    plan.fallbacks += 1
                    out = self.runner.forward(x, torch.float32, budget)
                if not torch.isfinite(out).all():
                    raise NonFiniteOutputError("the network's output holds NaN or infinite values even in fp32 "
                                               "(its weights make it diverge on this input); nothing was written")
        except torch.cuda.OutOfMemoryError:
            raise OutOfMemory from None
        except RuntimeError as error:  # MPS and CPU allocators raise plain RuntimeErrors
            if "out of memory" in str(error).lower():
                raise OutOfMemory from None
            raise
        return out

    def _runner_forward(self, x: torch.Tensor, budget: int, plan: Plan) -> torch.Tensor:
        """The runner's forward; where `auto` chose OpenVINO and it cannot compile this window, torch from here on
        (the plan says why)."""
        try:
            return self.runner.forward(x, self.dtype, budget)
        except BackendError as error:
            if self.options.backend != "auto" or not isinstance(self.runner, OpenVINORunner):
                raise
            self.runner, self.backend, self.backend_fallback = self.runner.geometry, "torch", str(error)
            plan.backend, plan.backend_fallback = self.backend, self.backend_fallback
            return self.runner.forward(x, self.dtype, budget)

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

    # -- planning (the rest in srcli.engine.planning) --------------------------------------------------

    def _new_plan(self, tile: int, pad: int, batch: int, backoffs: int = 0, fallbacks: int = 0) -> Plan:
        measured = not self.exact and self.measured_overlap is not None
        return Plan(max(0, int(tile)), pad, int(batch), backoffs, fallbacks, device=str(self.device),
                    precision=self.placement.precision, precision_reason=self.placement.reason,
                    transforms=8 if self.options.ensemble else 1,
                    exact=self.exact, backend=self.backend,
                    measured_pad=self.receptive_field if measured else None,
                    measured_levels=self.measured_levels if measured else None,
                    backend_fallback=self.backend_fallback)

    # -- pixels in, pixels out ------------------------------------------------------------------------

    def _batches(self, image: np.ndarray, plan: Plan, cuts: list[Window], region: Region) -> Iterator[Batch]:
        """The windows' network inputs, as many per forward as the plan batches (8 transforms each with the
        ensemble); bicubic-input networks get the MATLAB double bicubic, Y-channel ones its Y (their chroma, at the
        output's size, is kept to join the output)."""
        window_h = window_size(image.shape[0], plan.tile, plan.pad, self.size, region[2])
        window_w = window_size(image.shape[1], plan.tile, plan.pad, self.size, region[3])
        peak = float(np.iinfo(image.dtype).max)
        per_forward = plan.batch if not self.options.ensemble else max(1, plan.batch // 8)
        for group, crops in window_groups(image, cuts, window_h, window_w, per_forward):
            if self.upscales_inside and not self.luma_model:
                stacked = torch.from_numpy(np.stack(crops)).to(self.device)
                x = stacked.permute(0, 3, 1, 2).float() * (self.pixel_max / peak)
                yield Batch(group, self.runner.normalise(x))
                continue
            planes, chroma = [], []
            for crop in crops:
                image_in = crop.astype(np.float64) / peak
                if not self.upscales_inside:
                    image_in = imresize(image_in, scale=self.scale)  # MATLAB double path
                if self.luma_model:
                    plane, cbcr = luma.split(image_in)
                    planes.append(plane)
                    upscale_chroma = self.upscales_inside and self.scale > 1
                    chroma.append(imresize(cbcr, scale=self.scale) if upscale_chroma else cbcr)
                else:
                    planes.append(image_in)
            x = torch.from_numpy(np.stack(planes)).to(self.device, torch.float32).permute(0, 3, 1, 2)
            yield Batch(group, self.runner.normalise(x * self.pixel_max), chroma)

    def _write(self, batch: Batch, index: int, output: torch.Tensor, out: np.ndarray) -> None:
        """Crop one window's output to its core and store it: quantized RGB, or float Y (clipped) for scoring."""
        core, target, rows, cols = core_and_target(batch.windows[index], output[index], out, self.scale)
        if out.dtype != np.float64 and not self.luma_model:
            store_quantized(target, core, self.pixel_max)
            return
        values = core.permute(1, 2, 0).double().cpu().numpy() * (255.0 / self.pixel_max)
        if out.dtype == np.float64:
            target[...] = luma.luma(values)
        else:
            target[...] = luma.join(values, batch.chroma[index][rows, cols], float(np.iinfo(out.dtype).max))

    def _run(self, image: np.ndarray, out: np.ndarray, progress: ProgressCallback | None, region: Region) -> Plan:
        """Fill `out` (integer RGB, or float64 HxW luma) over `region` window by window, backing off on
        out-of-memory."""
        height, width = image.shape[:2]
        self._switch_when_paid()
        self._budget = self.memory_budget(out.nbytes)
        plan = self.plan(height, width, region)
        while True:
            try:
                self._run_plan(image, out, plan, progress, region)
                if self._convert_later is not None:
                    record_torch_work(self._openvino_key, self._torch_work)
                return plan
            except OutOfMemory:
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                smaller = self._smaller(plan, height, width)
                if smaller is None:
                    raise DeviceError(
                        f"not enough memory on {self.device} even for {MIN_TILE}px tiles; "
                        "close other programs or use --device cpu"
                    ) from None
                plan = smaller

    def _run_plan(self, image: np.ndarray, out: np.ndarray, plan: Plan, progress: ProgressCallback | None,
                  region: Region) -> None:
        height, width = image.shape[:2]
        cuts = windows(height, width, plan.tile, plan.pad, self.size, region)
        plan.tiles = len(cuts)
        computed = len(cuts) * window_area(height, width, plan.tile, plan.pad, self.size, region)
        plan.overlap = computed / (region[2] * region[3])  # pixels computed per image pixel kept
        blend = None
        if not self.exact and len(cuts) > 1:
            if out.dtype == np.float64 or self.luma_model:
                raise ValueError("approximate (blended) tiling writes RGB images only; score with tile=0")
            blend = Blend(out.shape, self.scale, plan.pad)
        done = 0
        with torch.inference_mode():
            for batch in self._batches(image, plan, cuts, region):
                output = self._forward_batched(batch.inputs, plan)
                if self._convert_later is not None:
                    self._torch_work += batch.inputs.shape[0] * batch.inputs.shape[2] * batch.inputs.shape[3] * \
                        self._work_per_pixel * plan.transforms
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

    def _extend(self, image: np.ndarray) -> tuple[np.ndarray, int, int]:
        """The image extended past its edges by the receptive field (per `border`), and those margins (rows,
        columns) in LR px.

        The whole image is extended once and then run through the exact tiled engine, so the result is still
        byte-identical under any tiling. Along an axis shorter than the receptive field the margin is the axis's
        own length (at least MIN_MARGIN): a margin orders of magnitude beyond the image (89 rows around a 1x100000
        strip) would be most of the work."""
        mode = BORDERS[self.options.border]
        if mode is None:
            return image, 0, 0
        rows, columns = (min(self.receptive_field, max(length, MIN_MARGIN)) for length in image.shape[:2])
        return cv2.copyMakeBorder(image, rows, rows, columns, columns, mode), rows, columns

    def _prepared(self, image: np.ndarray) -> tuple[np.ndarray, Region]:
        """The image extended by its border margin and, where the network does not accept that size (under its
        minimum, not a multiple of its step), at the bottom and right as well (reflected, then replicated, as
        spandrel does); and where the image lies in it."""
        extended, margin_rows, margin_columns = self._extend(image)
        height, width = extended.shape[:2]
        accepted_height, accepted_width = self.size.padded(height, width)
        if (accepted_height, accepted_width) != (height, width):
            extended = extend_bottom_right(extended, accepted_height - height, accepted_width - width)
        return extended, (margin_rows, margin_columns, *image.shape[:2])

    def _cropped(self, out: np.ndarray, region: Region) -> np.ndarray:
        top, left, rows, columns = (value * self.scale for value in region)
        if out.shape[:2] == (rows, columns):
            return out
        return np.ascontiguousarray(out[top : top + rows, left : left + columns])

    def _run_extended(self, image: np.ndarray, channels: tuple[int, ...], dtype: np.dtype,
                      progress: ProgressCallback | None) -> tuple[np.ndarray, Plan]:
        """Run over the extended image and crop the margins off the output."""
        extended, region = self._prepared(image)
        out = np.empty((extended.shape[0] * self.scale, extended.shape[1] * self.scale, *channels), dtype=dtype)
        plan = self._run(extended, out, progress, region)
        return self._cropped(out, region), plan

    def _resized(self, out: np.ndarray, image: np.ndarray) -> np.ndarray:
        """At `outscale`: the model's scale, then INTER_AREA to shrink or INTER_CUBIC to enlarge."""
        outscale = self.options.outscale
        if outscale is None or outscale == self.scale:
            return out
        size = (max(1, round(image.shape[1] * outscale)), max(1, round(image.shape[0] * outscale)))
        return cv2.resize(out, size, interpolation=cv2.INTER_AREA if outscale < self.scale else cv2.INTER_CUBIC)

    def upscale(self, image: np.ndarray, progress: ProgressCallback | None = None) -> Upscaled:
        """Super-resolve an RGB (HxWx3) uint8 or uint16 image: the same dtype at the model's scale (or at
        `outscale`), and the plan used."""
        self._check_image(image)
        out, plan = self._run_extended(image, (3,), image.dtype, progress)
        return Upscaled(self._resized(out, image), plan)

    def upscale_many(self, images: list[np.ndarray]) -> list[Upscaled] | None:
        """Equal-sized RGB images, each of which runs as one whole window, in shared forwards (as many as the
        memory budget holds): what a folder of small images costs is then the network's work, not a forward's
        fixed costs per image. Each result equals `upscale(image)`'s. None where they cannot share forwards
        (sizes differ, an image needs tiles, the forward fails): the caller runs them one by one."""
        first = images[0]
        if len(images) < 2 or not self.exact or any(
                image.shape != first.shape or image.dtype != first.dtype for image in images):
            return None
        self._check_image(first)
        extended, region = self._prepared(first)
        height, width = extended.shape[:2]
        self._switch_when_paid()
        self._budget = self.memory_budget(len(images) * height * width * 3 * self.scale**2 * first.itemsize)
        plan = self.plan(height, width, region)
        if plan.tile != 0 or self.options.tile:
            return None
        per_forward = max(1, self._budget // max(1, self.bytes_per_window(height * width * self.input_factor**2)))
        plan.batch = min(len(images), per_forward * (8 if self.options.ensemble else 1))
        cuts = windows(height, width, 0, plan.pad, self.size, region)
        try:
            with torch.inference_mode():
                inputs = [next(self._batches(self._prepared(image)[0], plan, cuts, region)) for image in images]
                output = self._forward_batched(torch.cat([batch.inputs for batch in inputs]), plan)
        except (OutOfMemory, NonFiniteOutputError):
            return None
        plan.overlap = height * width / (region[2] * region[3])
        results = []
        for index, (image, batch) in enumerate(zip(images, inputs, strict=True)):
            out = np.empty((height * self.scale, width * self.scale, 3), dtype=first.dtype)
            self._write(batch, 0, output[index : index + 1], out)
            results.append(Upscaled(self._resized(self._cropped(out, region), image), replace(plan)))
        return results

    def upscale_luma(self, image: np.ndarray, progress: ProgressCallback | None = None) -> np.ndarray:
        """Float Y (BT.601, 0..255, clipped, not rounded) of the super-resolved image, at the model's scale.

        For a Y-channel VDSR this is the network's own output, the quantity its published PSNRs score;
        for RGB models it is the luma of the unquantized RGB output. `outscale` does not apply.
        """
        self._check_image(image)
        return self._run_extended(image, (), np.float64, progress)[0]

