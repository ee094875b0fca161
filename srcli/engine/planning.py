"""Memory planning for the Upscaler: how many bytes a window takes, what budget a run has, the tile and batch that
fit it, and the smaller plan after an out-of-memory.

`Planning` is a mixin of `Upscaler` (srcli.engine.upscaler): it reads the upscaler's runner, device, precision and
options, and builds plans with the upscaler's `_new_plan`.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch

from srcli.engine.devices import available_memory
from srcli.engine.folded import SAFETY
from srcli.engine.tiling import window_size
from srcli.errors import OutputTooLargeError
from srcli.models.spec import SizeRequirements

if TYPE_CHECKING:
    from srcli.engine.folded import FoldedRunner
    from srcli.engine.module import ModuleRunner
    from srcli.engine.openvino import OpenVINORunner
    from srcli.engine.upscaler import Plan, UpscaleOptions

MIN_TILE = 16  # smallest tile core (LR px) the back-off goes down to before giving up
# A CPU run plans its output buffer plus one window within this, or within half the free RAM if less: big enough
# that a 1600x1200 -> x4 EDSR-baseline run takes 2 windows (overlap 1.09x), small enough that a 4000x3000 -> x4
# run (576 MB of output) peaks under 3 GB.
CPU_PEAK_TARGET = 2560 * 2**20
CPU_MIN_BUDGET = 256 * 2**20  # the window's share when the output alone takes the target (huge images)


Region = tuple[int, int, int, int]  # top, left, rows, columns: the image inside its border margin


def window_area(height: int, width: int, tile: int, pad: int, size: SizeRequirements,
                region: Region | None = None) -> int:
    """Pixels of one window of a plan over a height x width array whose cores cover `region`."""
    rows, columns = (None, None) if region is None else region[2:]
    return window_size(height, tile, pad, size, rows) * window_size(width, tile, pad, size, columns)


class OutOfMemory(Exception):
    """A forward did not fit: torch's OOM, or the estimate over an explicit budget."""


class Planning:
    """Window bytes, budgets, tiles and batches; the attributes below are the Upscaler's."""

    options: UpscaleOptions
    runner: FoldedRunner | ModuleRunner | OpenVINORunner
    device: torch.device
    dtype: torch.dtype
    size: SizeRequirements
    upscales_inside: bool
    input_factor: int
    receptive_field: int
    scale: int
    _out_elements: int
    _budget: int | None

    def _new_plan(self, tile: int, pad: int, batch: int, backoffs: int = 0, fallbacks: int = 0) -> Plan:
        raise NotImplementedError

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

    def check_output_fits(self, height: int, width: int, channels: int, itemsize: int) -> None:
        """Refuse an image whose output cannot be held before any work is spent on it: whatever the device, the
        model-scale buffer (with its border margin) and the final image (at outscale, and one copy while it is
        assembled) live in RAM together."""
        outscale = self.options.outscale or self.scale
        final = round(width * outscale) * round(height * outscale) * channels * itemsize
        margin = 2 * self.receptive_field
        buffer = (height + margin) * (width + margin) * self.scale**2 * 3 * itemsize
        needed = buffer + 2 * final
        free = available_memory(torch.device("cpu"))
        if needed > free:
            size = f"{round(width * outscale)}x{round(height * outscale)}"
            raise OutputTooLargeError(
                f"its x{outscale:g} output would be {size} pixels ({_bytes(final)}); making it needs about "
                f"{_bytes(needed)} of memory and {_bytes(free)} is available: use a smaller --outscale or input"
            )

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
            raise OutOfMemory

    def choose_tile(self, height: int, width: int, pad: int, budget: int, region: Region | None = None) -> int:
        """The tile (LR px per side, overlap excluded; 0 = whole image) whose windows fit the budget and compute
        the fewest pixels: only tiles that cut an axis into n even cores are distinct, so each is tried. Cores
        cover `region` (the image inside its border margin; the whole array when None)."""
        factor = self.input_factor
        rows, columns = (height, width) if region is None else region[2:]
        if self.bytes_per_window(window_area(height, width, 0, pad, self.size, region) * factor * factor) <= budget:
            return 0
        best, best_cost = MIN_TILE, math.inf
        candidates = {math.ceil(length / n) for length in (rows, columns) for n in range(1, length // MIN_TILE + 1)}
        for tile in sorted(candidates, reverse=True):
            if tile < MIN_TILE:
                continue
            window = window_area(height, width, tile, pad, self.size, region)
            if self.bytes_per_window(window * factor * factor) > budget:
                continue
            cost = math.ceil(rows / tile) * math.ceil(columns / tile) * window
            if cost < best_cost:
                best, best_cost = tile, cost
        return best

    def plan(self, height: int, width: int, region: Region | None = None) -> Plan:
        """The tile, overlap and batch for an image of this size, before any back-off."""
        pad = self.receptive_field if self.options.tile_pad is None else max(0, int(self.options.tile_pad))
        budget = self._budget if self._budget is not None else self.memory_budget()
        tile = self.options.tile
        if tile is None:
            tile = self.choose_tile(height, width, pad, budget, region)
        window = window_area(height, width, tile, pad, self.size, region) * self.input_factor**2
        # Batching windows (and the 8 ensemble transforms) pays on GPUs; on CPU one window per forward keeps the
        # activations in cache and measured faster (384x384 x2 at tile 96: 8.2 s vs 9.9 s; ensemble 7.3x vs 8.7x plain).
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


def _bytes(count: int) -> str:
    """1.5e9 -> '1.40 GiB' (numpy's unit, so a message reads like the MemoryError it prevents)."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if count < 1024 or unit == "PiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.2f} {unit}"
        count /= 1024
    return f"{count:.2f} PiB"
