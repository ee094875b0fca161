"""Format concerns around the network: grey, alpha and 16-bit images in, the same kind of image out.

The engine only knows RGB; this module maps every image srcli reads onto RGB passes and back, so the
network code never sees a channel count or a transparency it was not trained for.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from srcli.engine import Plan, ProgressCallback, Upscaled, Upscaler
from srcli.errors import InputImageError, ScaleError
from srcli.options import UpscaleOptions

if TYPE_CHECKING:
    from srcli.weights import ResolvedModel


@dataclass
class Stage:
    """One network of a chain: its name (catalogue name or file) and the engine that runs it."""

    name: str
    upscaler: Upscaler

    @property
    def input(self) -> str:
        """What the network sees: rgb, or luma (a grey-only network: Y of BT.601 YCbCr, chroma kept)."""
        return "luma" if self.upscaler.luma_model else "rgb"

    @property
    def label(self) -> str:
        """For -v: 'dncnn.pth (x1, on luma: Y only, chroma kept)'."""
        luma = ", on luma: Y only, chroma kept" if self.input == "luma" else ""
        return f"{Path(self.name).name} (x{self.upscaler.scale}{luma})"

    def to_dict(self) -> dict:
        """For --json."""
        return {"model": self.name, "scale": self.upscaler.scale, "input": self.input}


def restorer(resolved: ResolvedModel, scale: int, options: UpscaleOptions) -> Stage:
    """A `--pre` stage: a 1x network (deJPEG, denoise, deblur) run before the upscaler, with the upscaler's
    options (never its outscale); any other scale refused in one line."""
    if scale != 1:
        raise ScaleError(f"--pre {Path(resolved.name).name} is a x{scale} model; --pre takes 1x restorers "
                         "(deJPEG, denoise, deblur): give an upscaler to --model or --weights")
    engine = Upscaler(resolved.model, 1, replace(options, outscale=None), spec=resolved.spec)
    return Stage(resolved.name, engine)


def load_restorers(names: Sequence[str], options: UpscaleOptions, *, mirror: str | None = None) -> list[Stage]:
    """`--pre` names (catalogue names or files, as `--model`/`--weights` take them) -> their stages, in order."""
    from srcli.weights import select

    return [restorer(*select(name, None, None, mirror=mirror), options) for name in names]


class ChainPlan(Plan):
    """The upscaler's plan (its keys as before) and every stage's own, in the order they ran (`stages`: an
    attribute, not a dataclass field, so `asdict` never copies the stages' engines)."""

    stages: list[tuple[Stage, Plan]]

    @classmethod
    def of(cls, ran: list[tuple[Stage, Plan]]) -> ChainPlan:
        """The last stage's plan, with every stage's back-offs and fp32 re-runs counted."""
        last = ran[-1][1]
        chained = cls(**{f.name: getattr(last, f.name) for f in fields(Plan)})
        chained.backoffs = sum(plan.backoffs for _, plan in ran)
        chained.fallbacks = sum(plan.fallbacks for _, plan in ran)
        chained.stages = ran
        return chained

    def to_dict(self) -> dict:
        data = super().to_dict()
        data["stages"] = [{**stage.to_dict(), "plan": plan.to_dict()} for stage, plan in self.stages]
        return data


class Chain:
    """Restorers, then the upscaler: each stage its own `Upscaler` (tiled by its own receptive field, its own
    memory plan), each fed the previous stage's quantized image, exactly as running them one after another."""

    def __init__(self, upscaler: Upscaler, pre: Sequence[Stage] = (), name: str = ""):
        self.upscaler = upscaler
        self.pre = list(pre)
        self.stages = [*self.pre, Stage(name, upscaler)]

    @property
    def label(self) -> str:
        """The stages' file or catalogue names in order: 'dncnn.pth > edsr-baseline-x2'."""
        return " > ".join(Path(stage.name).name for stage in self.stages)

    def upscale(self, image: np.ndarray, progress: ProgressCallback | None = None) -> Upscaled:
        """An RGB image through every stage; with restorers, a `ChainPlan` naming each stage's plan."""
        if not self.pre:
            return self.upscaler.upscale(image, progress)
        ran = []
        for index, stage in enumerate(self.stages):
            image, plan = stage.upscaler.upscale(image, _pass(progress, index, len(self.stages)))
            ran.append((stage, plan))
        return Upscaled(image, ChainPlan.of(ran))


class ImagePipeline:
    """Upscale grey, RGB and RGBA images (8- or 16-bit) with one RGB `Upscaler`, after any restorers (`pre`).

    - grey: the model runs on the grey replicated to RGB; the output's channel mean becomes the grey output.
    - alpha: colour under fully transparent pixels is first replaced by the nearest visible colour, so the
      network cannot blend hidden (often black) colour into visible edges: no dark halo. The alpha itself
      goes through the model too (replicated to RGB), so its edges are as sharp as the colour's and stay
      aligned with them; bicubic alpha would leave a soft fringe around a sharpened object. A constant
      alpha (an opaque RGBA file) costs no second pass. Transparent input stays transparent (keep_transparent).
    - 16-bit: passed through as uint16 (the engine keeps the precision).
    - restorers (`pre`, 1x) run on the colour before the upscaler; the alpha goes through the upscaler alone
      (it was never JPEG-compressed or noisy like the colour).
    """

    def __init__(self, upscaler: Upscaler, pre: Sequence[Stage] = (), name: str = ""):
        self.upscaler = upscaler
        self.chain = Chain(upscaler, pre, name)

    def upscale(self, image: np.ndarray, progress: ProgressCallback | None = None) -> Upscaled:
        """HxW, HxWx3 or HxWx4 uint8/uint16 -> the upscaled image with the same layout and dtype, and the plan
        of its colour pass (with any back-off or fp32 re-run of the alpha pass added in)."""
        channels = 1 if image.ndim == 2 else image.shape[2]
        self.upscaler.check_output_fits(image.shape[0], image.shape[1], channels, image.dtype.itemsize)
        if image.ndim == 2:
            grey, plan = self.chain.upscale(_as_rgb(image), progress)
            return Upscaled(_channel_mean(grey, image.dtype), plan)
        channels = image.shape[2]
        if channels == 3:
            return self.chain.upscale(image, progress)
        if channels != 4:
            raise InputImageError(f"{channels}-channel images are not supported (grey, RGB or RGBA expected)")
        rgb, alpha = image[..., :3], image[..., 3]
        if alpha.min() == alpha.max():
            upscaled, plan = self.chain.upscale(np.ascontiguousarray(rgb), progress)
            upscaled_alpha = np.full(upscaled.shape[:2], alpha.flat[0], dtype=image.dtype)
        else:
            upscaled, plan = self.chain.upscale(bleed_into_transparent(rgb, alpha), _pass(progress, 0, 2))
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
