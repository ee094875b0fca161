"""Format concerns around the network: grey, alpha and 16-bit images in, the same kind of image out.

The engine only knows RGB; this module maps every image srcli reads onto RGB passes and back, so the
network code never sees a channel count or a transparency it was not trained for.
"""

from __future__ import annotations

import cv2
import numpy as np

from srcli.engine import Plan, ProgressCallback, Upscaled, Upscaler
from srcli.errors import InputImageError


class ImagePipeline:
    """Upscale grey, RGB and RGBA images (8- or 16-bit) with one RGB `Upscaler`.

    - grey: the model runs on the grey replicated to RGB; the output's channel mean becomes the grey output.
    - alpha: colour under fully transparent pixels is first replaced by the nearest visible colour, so the
      network cannot blend hidden (often black) colour into visible edges: no dark halo. The alpha itself
      goes through the model too (replicated to RGB), so its edges are as sharp as the colour's and stay
      aligned with them; bicubic alpha would leave a soft fringe around a sharpened object. A constant
      alpha (an opaque RGBA file) costs no second pass. Transparent input stays transparent (keep_transparent).
    - 16-bit: passed through as uint16 (the engine keeps the precision).
    """

    def __init__(self, upscaler: Upscaler):
        self.upscaler = upscaler

    def upscale(self, image: np.ndarray, progress: ProgressCallback | None = None) -> Upscaled:
        """HxW, HxWx3 or HxWx4 uint8/uint16 -> the upscaled image with the same layout and dtype, and the plan
        of its colour pass (with any back-off or fp32 re-run of the alpha pass added in)."""
        channels = 1 if image.ndim == 2 else image.shape[2]
        self.upscaler.check_output_fits(image.shape[0], image.shape[1], channels, image.dtype.itemsize)
        if image.ndim == 2:
            grey, plan = self.upscaler.upscale(_as_rgb(image), progress)
            return Upscaled(_channel_mean(grey, image.dtype), plan)
        channels = image.shape[2]
        if channels == 3:
            return self.upscaler.upscale(image, progress)
        if channels != 4:
            raise InputImageError(f"{channels}-channel images are not supported (grey, RGB or RGBA expected)")
        rgb, alpha = image[..., :3], image[..., 3]
        if alpha.min() == alpha.max():
            upscaled, plan = self.upscaler.upscale(np.ascontiguousarray(rgb), progress)
            upscaled_alpha = np.full(upscaled.shape[:2], alpha.flat[0], dtype=image.dtype)
        else:
            upscaled, plan = self.upscaler.upscale(bleed_into_transparent(rgb, alpha), _pass(progress, 0, 2))
            alpha_rgb, alpha_plan = self.upscaler.upscale(_as_rgb(alpha), _pass(progress, 1, 2))
            upscaled_alpha = keep_transparent(alpha, _channel_mean(alpha_rgb, image.dtype))
            plan = _combined(plan, alpha_plan)
        return Upscaled(np.dstack([upscaled, upscaled_alpha]), plan)


def _combined(colour: Plan, alpha: Plan) -> Plan:
    """The colour pass's plan, with what went wrong in either pass counted."""
    colour.backoffs += alpha.backoffs
    colour.fallbacks += alpha.fallbacks
    return colour


def keep_transparent(alpha: np.ndarray, upscaled_alpha: np.ndarray) -> np.ndarray:
    """Fully transparent input stays alpha 0 wherever the upscaled alpha is below half: the network leaves a
    faint residue (1-28 of 255 at x4) over hidden areas, which is noise, not coverage. Edges the network draws
    at half or more are kept."""
    hidden = (alpha == 0).astype(np.uint8)
    if not hidden.any():
        return upscaled_alpha
    height, width = upscaled_alpha.shape
    below = cv2.resize(hidden, (width, height), interpolation=cv2.INTER_NEAREST).astype(bool)
    below &= upscaled_alpha < (int(np.iinfo(upscaled_alpha.dtype).max) + 1) // 2
    upscaled_alpha[below] = 0
    return upscaled_alpha


def bleed_into_transparent(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Give every fully transparent pixel the colour of its nearest visible pixel (invisible, halo-free)."""
    hidden = alpha == 0
    if not hidden.any() or hidden.all():
        return np.ascontiguousarray(rgb)
    # For each hidden pixel, the label of the nearest zero of `hidden` (a visible pixel); labels count the
    # visible pixels in raster order from 1, the order np.nonzero lists them in.
    _, labels = cv2.distanceTransformWithLabels(
        hidden.astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_5, labelType=cv2.DIST_LABEL_PIXEL
    )
    visible_rows, visible_columns = np.nonzero(~hidden)
    nearest = labels[hidden] - 1
    filled = rgb.copy()
    filled[hidden] = rgb[visible_rows[nearest], visible_columns[nearest]]
    return filled


def _as_rgb(channel: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.repeat(channel[:, :, None], 3, axis=2))


def _channel_mean(image: np.ndarray, dtype: np.dtype) -> np.ndarray:
    return np.rint(image.mean(axis=2, dtype=np.float32)).astype(dtype)


def _pass(progress: ProgressCallback | None, index: int, count: int) -> ProgressCallback | None:
    """Report pass `index` of `count` as one continuous progress over all passes."""
    if progress is None:
        return None

    def report(done: int, total: int) -> None:
        progress(index * total + done, count * total)

    return report
