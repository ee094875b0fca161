"""Cutting an image into the windows of a plan and putting the windows' outputs back together: exact cores
written straight into the output (quantized on the device), or cross-faded where tiles cannot be exact."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from srcli.engine.tiling import Window, feather


@dataclass
class Batch:
    """Windows that go through one forward together."""

    windows: list[Window]
    inputs: torch.Tensor  # network input, NCHW on the device (float32)
    chroma: list[np.ndarray] = field(default_factory=list)  # Cb, Cr (0..255) per window, Y-channel networks


def window_groups(image: np.ndarray, cuts: list[Window], height: int, width: int,
                  per_forward: int) -> Iterator[tuple[list[Window], list[np.ndarray]]]:
    """The windows in groups of `per_forward`, each with its `height` x `width` crop of the image."""
    for first in range(0, len(cuts), per_forward):
        group = cuts[first : first + per_forward]
        yield group, [image[w.y0 : w.y0 + height, w.x0 : w.x0 + width] for w in group]


def core_and_target(window: Window, output: torch.Tensor, out: np.ndarray,
                    scale: int) -> tuple[torch.Tensor, np.ndarray, slice, slice]:
    """The window output's core (CHW), the part of `out` it fills, and the core's rows and columns in the window."""
    top, left = (window.top - window.y0) * scale, (window.left - window.x0) * scale
    rows = slice(top, top + (window.bottom - window.top) * scale)
    cols = slice(left, left + (window.right - window.left) * scale)
    target = out[window.top * scale : window.bottom * scale, window.left * scale : window.right * scale]
    return output[:, rows, cols], target, rows, cols


def store_quantized(target: np.ndarray, core: torch.Tensor, pixel_max: float) -> None:
    """Round and clip on the device, so only the integer pixels travel to the host."""
    peak = float(np.iinfo(target.dtype).max)
    factor = peak / pixel_max
    quantized = (core.mul(factor) if factor != 1.0 else core.clone()).round_().clamp_(0, peak)
    quantized = quantized.to(torch.uint8 if target.dtype == np.uint8 else torch.int32)
    target[...] = quantized.permute(1, 2, 0).cpu().numpy()


def extend_bottom_right(image: np.ndarray, rows: int, columns: int) -> np.ndarray:
    """Extend at the bottom and right: reflected as far as the image allows, then replicated."""
    reflect_rows, reflect_columns = min(rows, image.shape[0] - 1), min(columns, image.shape[1] - 1)
    image = np.pad(image, ((0, reflect_rows), (0, reflect_columns), (0, 0)), mode="reflect")
    return np.pad(image, ((0, rows - reflect_rows), (0, columns - reflect_columns), (0, 0)), mode="edge")


class Blend:
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
