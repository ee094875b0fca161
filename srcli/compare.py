"""Side-by-side comparison grids in the manner of the EDSR paper's figures: the whole image with a box, then
the boxed region zoomed for nearest, bicubic, each model (and the HR when known), labelled with PSNR/SSIM.

People judge upscalers by eye; a grid of the region where the methods disagree most shows the difference
that the average PSNR hides. Nothing here prints or runs a network: callers pass the models' outputs in.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from srcli.errors import SrcliError
from srcli.imageio import to_8bit
from srcli.metrics import psnr, rgb_to_y, ssim
from srcli.resize import imresize

PANEL = 144  # side of one zoomed panel, in pixels
LABEL = 38  # height of the strip under a panel that holds its two label lines
MARGIN = 8
_FONT = cv2.FONT_HERSHEY_SIMPLEX
_RED = (220, 30, 30)


@dataclass(frozen=True)
class Panel:
    """One method's full-size output and, when an HR is known, its scores (Y channel, shave = scale)."""

    name: str
    image: np.ndarray  # HxWx3 uint8 RGB, the SR size
    psnr: float | None = None
    ssim: float | None = None

    @property
    def label(self) -> str:
        if self.psnr is None or self.ssim is None:
            return ""
        return f"{self.psnr:.2f} dB / {self.ssim:.4f}"


@dataclass(frozen=True)
class Grid:
    image: np.ndarray  # the grid, HxWx3 uint8 RGB
    crop: tuple[int, int, int, int]  # x, y, w, h in SR pixels
    panels: list[Panel]


def as_rgb8(image: np.ndarray) -> np.ndarray:
    """Any image srcli reads (grey, RGB, RGBA; 8 or 16 bit) as the 8-bit RGB a grid shows."""
    image = to_8bit(image)
    if image.ndim == 2:
        image = image[:, :, None]
    if image.shape[2] == 1:
        return np.repeat(image, 3, axis=2)
    return np.ascontiguousarray(image[:, :, :3])


def baselines(lr: np.ndarray, scale: int) -> list[Panel]:
    """Nearest (the pixels as they are) and MATLAB bicubic (the papers' baseline) at `scale`."""
    lr = as_rgb8(lr)
    height, width = lr.shape[0] * scale, lr.shape[1] * scale
    nearest = cv2.resize(lr, (width, height), interpolation=cv2.INTER_NEAREST)
    return [Panel("nearest", nearest), Panel("bicubic", imresize(lr, scale))]


def scored(panel: Panel, hr: np.ndarray | None, scale: int) -> Panel:
    """The panel with PSNR/SSIM against `hr` under the benchmark protocol (Y channel, shave = scale)."""
    if hr is None:
        return panel
    hr = as_rgb8(hr)
    if hr.shape[0] < panel.image.shape[0] or hr.shape[1] < panel.image.shape[1]:
        raise SrcliError(f"the HR ({hr.shape[1]}x{hr.shape[0]}) is smaller than the x{scale} output "
                         f"({panel.image.shape[1]}x{panel.image.shape[0]}): is --hr the original of this image?")
    return Panel(panel.name, panel.image, psnr(panel.image, hr, scale), ssim(panel.image, hr, scale))


def choose_crop(images: list[np.ndarray], size: int) -> tuple[int, int, int, int]:
    """The `size` square where `images` disagree most: the largest summed per-pixel spread of their luma."""
    height, width = images[0].shape[:2]
    side = max(1, min(size, height, width))
    if len(images) < 2:
        return (width - side) // 2, (height - side) // 2, side, side
    lumas = np.stack([rgb_to_y(image) for image in images])
    spread = lumas.max(axis=0) - lumas.min(axis=0)
    table = np.pad(spread.cumsum(0).cumsum(1), ((1, 0), (1, 0)))  # summed-area table: every window's sum at once
    sums = table[side:, side:] - table[:-side, side:] - table[side:, :-side] + table[:-side, :-side]
    y, x = np.unravel_index(int(np.argmax(sums)), sums.shape)
    return int(x), int(y), side, side


def check_crop(crop: tuple[int, int, int, int], width: int, height: int) -> None:
    x, y, w, h = crop
    if w < 1 or h < 1 or x < 0 or y < 0 or x + w > width or y + h > height:
        raise SrcliError(f"--crop {x},{y},{w},{h} is not inside the {width}x{height} output (x,y,w,h in output "
                         "pixels)")


def make_grid(panels: list[Panel], hr: np.ndarray | None = None,
              crop: tuple[int, int, int, int] | None = None) -> Grid:
    """The overview with the crop boxed, then one zoomed, labelled panel per method (and the HR, last)."""
    height, width = panels[0].image.shape[:2]
    if crop is None:
        contenders = [panel.image for panel in panels if panel.name != "nearest"]
        crop = choose_crop(contenders, max(24, min(height, width) // 4))
    check_crop(crop, width, height)
    shown = list(panels) + ([Panel("HR", as_rgb8(hr)[:height, :width])] if hr is not None else [])
    columns = min(len(shown), 3)
    rows = -(-len(shown) // columns)
    cell = PANEL + LABEL
    overview = _overview(panels[-1].image if hr is None else shown[-1].image, crop, rows * cell - MARGIN)
    grid_width = overview.shape[1] + MARGIN + columns * (PANEL + MARGIN) + MARGIN
    grid = np.full((rows * cell + MARGIN, grid_width, 3), 255, np.uint8)
    grid[MARGIN : MARGIN + overview.shape[0], MARGIN : MARGIN + overview.shape[1]] = overview
    left = 2 * MARGIN + overview.shape[1]
    for index, panel in enumerate(shown):
        top, x0 = MARGIN + (index // columns) * cell, left + (index % columns) * (PANEL + MARGIN)
        grid[top : top + PANEL, x0 : x0 + PANEL] = _zoom(panel.image, crop)
        _write(grid, panel.name, x0, top + PANEL + 16)
        _write(grid, panel.label, x0, top + PANEL + 32)
    return Grid(grid, crop, panels)


def _overview(image: np.ndarray, crop: tuple[int, int, int, int], height: int) -> np.ndarray:
    """The whole image scaled to `height` rows, the crop drawn as a red box."""
    factor = height / image.shape[0]
    width = max(1, round(image.shape[1] * factor))
    small = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA if factor < 1 else cv2.INTER_CUBIC)
    x, y, w, h = crop
    corner = (round(x * factor), round(y * factor))
    far = (round((x + w) * factor) - 1, round((y + h) * factor) - 1)
    cv2.rectangle(small, corner, far, _RED, 2)
    return small


def _zoom(image: np.ndarray, crop: tuple[int, int, int, int]) -> np.ndarray:
    """The crop blown up to a PANEL square with nearest neighbour, so every output pixel stays visible."""
    x, y, w, h = crop
    region = image[y : y + h, x : x + w]
    side = max(w, h)
    square = np.full((side, side, 3), 255, np.uint8)
    square[:h, :w] = region
    return cv2.resize(square, (PANEL, PANEL), interpolation=cv2.INTER_NEAREST)


def _write(grid: np.ndarray, text: str, x: int, baseline: int) -> None:
    """One label line, shrunk until it fits the panel's width."""
    if not text:
        return
    size = 0.5
    while size > 0.3 and cv2.getTextSize(text, _FONT, size, 1)[0][0] > PANEL:
        size -= 0.05
    cv2.putText(grid, text, (x, baseline), _FONT, size, (0, 0, 0), 1, cv2.LINE_AA)


def parse_crop(text: str) -> tuple[int, int, int, int]:
    """'x,y,w,h' -> four integers (output pixels)."""
    try:
        values = tuple(int(part) for part in text.replace(" ", "").split(","))
    except ValueError:
        values = ()
    if len(values) != 4:
        raise SrcliError(f"--crop {text!r} is not x,y,w,h (four integers in output pixels, e.g. 100,80,64,64)")
    return values  # type: ignore[return-value]
