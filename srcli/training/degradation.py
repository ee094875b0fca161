"""Real-world degradations made on the fly for `srcli train --degradation real` (Real-ESRGAN style).

A network trained on bicubic LR learns to undo a bicubic kernel and nothing else: on a phone photo it sharpens
the noise and the JPEG blocks. Real-ESRGAN's answer (Wang et al., ICCVW 2021) is a second-order model: blur,
resize, noise and JPEG, the whole chain twice with random parameters, then a final resize to the LR size with a
sinc filter for ringing. The default ranges below are those of its published x4plus training options; the code
is numpy + OpenCV so it runs in the data loader without torch.

Images are RGB float32 in 0..1 throughout. Sharpening of the HR target (Real-ESRGAN's USM) is not done here:
it concerns the target, not the degradation.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from srcli.errors import TrainingError

KERNEL_KINDS = ("iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso", "plateau_aniso")
_INTERPOLATION = {"area": cv2.INTER_AREA, "bilinear": cv2.INTER_LINEAR, "bicubic": cv2.INTER_CUBIC}


@dataclass(frozen=True)
class PassRecipe:
    """One blur-resize-noise-JPEG pass. Resize probabilities are (up, down, keep), noise sigmas 8-bit levels,
    JPEG qualities integers in the closed range."""

    blur_prob: float
    blur_sigma: tuple[float, float]
    sinc_prob: float
    resize_prob: tuple[float, float, float]
    resize_range: tuple[float, float]
    noise_prob: float
    gaussian_noise_prob: float
    noise_range: tuple[float, float]
    poisson_scale_range: tuple[float, float]
    gray_noise_prob: float
    jpeg_prob: float
    jpeg_range: tuple[int, int]


# Real-ESRGAN's published x4plus training options (noise and JPEG always apply there: probability 1).
FIRST_PASS = PassRecipe(1.0, (0.2, 3.0), 0.1, (0.2, 0.7, 0.1), (0.15, 1.5), 1.0, 0.5, (1.0, 30.0), (0.05, 3.0), 0.4,
                        1.0, (30, 95))
SECOND_PASS = PassRecipe(0.8, (0.2, 1.5), 0.1, (0.3, 0.4, 0.3), (0.3, 1.2), 1.0, 0.5, (1.0, 25.0), (0.05, 2.5), 0.4,
                         1.0, (30, 95))
_PASS_FIELDS = tuple(f.name for f in dataclasses.fields(PassRecipe))


@dataclass(frozen=True)
class DegradationRecipe:
    """Everything `degrade` draws from. Override names are flat, as in Real-ESRGAN's options: `jpeg_range` is
    the first pass's, `jpeg_range2` the second's, `final_sinc_prob` and the kernel settings are shared."""

    first: PassRecipe = FIRST_PASS
    second: PassRecipe = SECOND_PASS
    kernel_sizes: tuple[int, ...] = (7, 9, 11, 13, 15, 17, 19, 21)
    kernel_probs: tuple[float, ...] = (0.45, 0.25, 0.12, 0.03, 0.12, 0.03)  # in KERNEL_KINDS order
    betag_range: tuple[float, float] = (0.5, 4.0)
    betap_range: tuple[float, float] = (1.0, 2.0)
    resize_modes: tuple[str, ...] = ("area", "bilinear", "bicubic")
    final_sinc_prob: float = 0.8
    quantize: bool = True  # round the LR to 8-bit levels, as a saved file would be

    @classmethod
    def from_overrides(cls, overrides: Mapping[str, Any]) -> DegradationRecipe:
        """The defaults with some settings replaced (lists become tuples); unknown names or bad values raise."""
        own = [f.name for f in dataclasses.fields(cls) if f.name not in ("first", "second")]
        known = [*_PASS_FIELDS, *(name + "2" for name in _PASS_FIELDS), *own]
        unknown = sorted(set(overrides) - set(known))
        if unknown:
            raise TrainingError(f"unknown degradation setting(s) {', '.join(unknown)}; known: {', '.join(known)}")
        values = {k: tuple(v) if isinstance(v, (list, tuple)) else v for k, v in overrides.items()}
        first = {k: v for k, v in values.items() if k in _PASS_FIELDS}
        second = {k[:-1]: v for k, v in values.items() if k.endswith("2") and k[:-1] in _PASS_FIELDS}
        recipe = dataclasses.replace(
            cls(), first=dataclasses.replace(FIRST_PASS, **first), second=dataclasses.replace(SECOND_PASS, **second),
            **{k: v for k, v in values.items() if k in own})
        try:
            recipe.check()
        except (TypeError, ValueError) as exc:
            raise TrainingError(f"bad degradation setting: {exc}") from None
        return recipe

    def check(self) -> None:
        """Raise TrainingError on a probability outside 0..1, a reversed range or an unknown resize mode."""
        for suffix, stage in (("", self.first), ("2", self.second)):
            for name in _PASS_FIELDS:
                value = getattr(stage, name)
                if name.endswith("_prob") and name != "resize_prob" and not 0 <= value <= 1:
                    raise TrainingError(f"degradation {name}{suffix} must lie in 0..1, not {value}")
                if name.endswith(("_range", "_sigma")) and not (len(value) == 2 and 0 <= value[0] <= value[1]):
                    raise TrainingError(f"degradation {name}{suffix} must be (low, high), 0 <= low <= high")
            if len(stage.resize_prob) != 3 or min(stage.resize_prob) < 0 or sum(stage.resize_prob) <= 0:
                raise TrainingError(f"degradation resize_prob{suffix} must be three non-negative (up, down, keep)")
            if stage.jpeg_range[0] < 1 or stage.jpeg_range[1] > 100:
                raise TrainingError(f"degradation jpeg_range{suffix} must lie in 1..100")
        if len(self.kernel_probs) != len(KERNEL_KINDS) or min(self.kernel_probs) < 0 or sum(self.kernel_probs) <= 0:
            raise TrainingError(f"degradation kernel_probs must be {len(KERNEL_KINDS)} non-negative weights")
        if not self.resize_modes or set(self.resize_modes) - set(_INTERPOLATION):
            raise TrainingError(f"resize_modes must be a non-empty subset of {', '.join(_INTERPOLATION)}")
        if not 0 <= self.final_sinc_prob <= 1:
            raise TrainingError(f"degradation final_sinc_prob must lie in 0..1, not {self.final_sinc_prob}")


def sinc_kernel(size: int, omega_c: float) -> np.ndarray:
    """Circular low-pass (2-D sinc) kernel: the ringing and overshoot that sharpening and resizing leave."""
    half = size // 2
    y, x = np.mgrid[-half : half + 1, -half : half + 1].astype(np.float64)
    r = np.hypot(x, y)
    # Bessel J1 by its integral (1/pi) * int_0^pi cos(t - z sin t) dt, midpoint rule: exact to ~1e-12 here.
    t = (np.arange(512) + 0.5) * (np.pi / 512)
    z = omega_c * r[..., None]
    j1 = np.cos(t - z * np.sin(t)).mean(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        kernel = np.where(r > 0, omega_c * j1 / (2 * np.pi * r), omega_c**2 / (4 * np.pi))
    return kernel / kernel.sum()


def gaussian_kernel(size: int, rng: np.random.Generator, recipe: DegradationRecipe, stage: PassRecipe) -> np.ndarray:
    """An isotropic/anisotropic, plain/generalised/plateau Gaussian kernel, kind and shape drawn from `rng`."""
    weights = np.asarray(recipe.kernel_probs, dtype=np.float64)
    kind = KERNEL_KINDS[rng.choice(len(KERNEL_KINDS), p=weights / weights.sum())]
    lo, hi = stage.blur_sigma
    sx = rng.uniform(lo, hi)
    sy, theta = (rng.uniform(lo, hi), rng.uniform(-np.pi, np.pi)) if "aniso" in kind else (sx, 0.0)
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    inverse = np.linalg.inv(rot @ np.diag([sx**2, sy**2]) @ rot.T)
    half = size // 2
    y, x = np.mgrid[-half : half + 1, -half : half + 1].astype(np.float64)
    d = inverse[0, 0] * x * x + (inverse[0, 1] + inverse[1, 0]) * x * y + inverse[1, 1] * y * y
    if kind.startswith("generalized") or kind.startswith("plateau"):
        b_lo, b_hi = recipe.betag_range if kind.startswith("generalized") else recipe.betap_range
        beta = rng.uniform(b_lo, 1.0) if rng.uniform() < 0.5 and b_lo < 1 else rng.uniform(max(b_lo, 1.0), b_hi)
        kernel = np.exp(-0.5 * d**beta) if kind.startswith("generalized") else 1.0 / (d**beta + 1.0)
    else:
        kernel = np.exp(-0.5 * d)
    return kernel / kernel.sum()


def _filter(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    return cv2.filter2D(image, -1, kernel.astype(np.float32), borderType=cv2.BORDER_REFLECT_101)


def _resize(image: np.ndarray, height: int, width: int, rng: np.random.Generator, recipe: DegradationRecipe,
            fired: list[str], tag: str) -> np.ndarray:
    height, width = max(1, height), max(1, width)
    if image.shape[:2] == (height, width):
        return image
    mode = recipe.resize_modes[rng.integers(len(recipe.resize_modes))]
    fired.append(f"{tag}:{mode}")
    return cv2.resize(image, (width, height), interpolation=_INTERPOLATION[mode])


def _noise(image: np.ndarray, rng: np.random.Generator, stage: PassRecipe, fired: list[str], tag: str) -> np.ndarray:
    grey = rng.uniform() < stage.gray_noise_prob
    if rng.uniform() < stage.gaussian_noise_prob:
        sigma = rng.uniform(*stage.noise_range) / 255.0
        shape = (*image.shape[:2], 1) if grey else image.shape
        noise = rng.normal(0.0, sigma, shape)
        fired.append(f"{tag}:gaussian")
    else:
        # Shot noise: Poisson counts at a level count matched to the image's distinct values, then scaled.
        scale = rng.uniform(*stage.poisson_scale_range)
        base = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)[..., None] if grey else image
        base = np.round(np.clip(base, 0, 1) * 255) / 255
        levels = 2 ** np.ceil(np.log2(max(len(np.unique(base)), 2)))
        noise = (rng.poisson(base * levels) / levels - base) * scale
        fired.append(f"{tag}:poisson")
    if grey:
        fired.append(f"{tag}:grey")
    return np.clip(image + noise.astype(np.float32), 0, 1)


def _jpeg(image: np.ndarray, rng: np.random.Generator, quality_range: tuple[int, int]) -> np.ndarray:
    quality = int(rng.integers(quality_range[0], quality_range[1] + 1))
    bgr = cv2.cvtColor((np.clip(image, 0, 1) * 255).round().astype(np.uint8), cv2.COLOR_RGB2BGR)
    ok, data = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise TrainingError("OpenCV could not JPEG-encode a training patch")
    decoded = cv2.cvtColor(cv2.imdecode(data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    return decoded.astype(np.float32) / 255.0


def _blur(image: np.ndarray, rng: np.random.Generator, recipe: DegradationRecipe, stage: PassRecipe,
          fired: list[str], tag: str) -> np.ndarray:
    if rng.uniform() >= stage.blur_prob:
        return image
    size = int(recipe.kernel_sizes[rng.integers(len(recipe.kernel_sizes))])
    if rng.uniform() < stage.sinc_prob:
        omega = rng.uniform(np.pi / 3 if size < 13 else np.pi / 5, np.pi)
        fired.append(f"{tag}:sinc")
        return _filter(image, sinc_kernel(size, omega))
    fired.append(f"{tag}:gaussian")
    return _filter(image, gaussian_kernel(size, rng, recipe, stage))


def _pass(image: np.ndarray, lr_size: tuple[int, int], rng: np.random.Generator, recipe: DegradationRecipe,
          second: bool, fired: list[str]) -> np.ndarray:
    """One blur-resize-noise(-JPEG) pass; the second pass leaves JPEG to the final step, as Real-ESRGAN does."""
    n, stage = ("2", recipe.second) if second else ("1", recipe.first)
    image = _blur(image, rng, recipe, stage, fired, "blur" + n)
    weights = np.asarray(stage.resize_prob, dtype=np.float64)
    direction = ("up", "down", "keep")[rng.choice(3, p=weights / weights.sum())]
    lo, hi = stage.resize_range
    factor = rng.uniform(1, hi) if direction == "up" else rng.uniform(lo, 1) if direction == "down" else 1.0
    fired.append(f"resize{n}:{direction}")
    base_h, base_w = lr_size if second else image.shape[:2]
    image = _resize(image, int(base_h * factor), int(base_w * factor), rng, recipe, fired, "interp" + n)
    if rng.uniform() < stage.noise_prob:
        image = _noise(image, rng, stage, fired, "noise" + n)
    if not second and rng.uniform() < stage.jpeg_prob:
        fired.append("jpeg1")
        image = _jpeg(image, rng, stage.jpeg_range)
    return image


def _final(image: np.ndarray, lr_size: tuple[int, int], rng: np.random.Generator, recipe: DegradationRecipe,
           fired: list[str]) -> np.ndarray:
    """Resize to the LR size plus the final sinc, and JPEG, in a random order of the two."""
    sinc = None
    if rng.uniform() < recipe.final_sinc_prob:
        size = int(recipe.kernel_sizes[rng.integers(len(recipe.kernel_sizes))])
        sinc = sinc_kernel(size, rng.uniform(np.pi / 3, np.pi))
        fired.append("final_sinc")
    jpeg_first = rng.uniform() < 0.5
    do_jpeg = rng.uniform() < recipe.second.jpeg_prob
    if jpeg_first:
        fired.append("order:jpeg_first")
    if jpeg_first and do_jpeg:
        fired.append("jpeg2")
        image = _jpeg(image, rng, recipe.second.jpeg_range)
    image = _resize(image, *lr_size, rng, recipe, fired, "interp_final")
    if sinc is not None:
        image = _filter(image, sinc)
    if not jpeg_first and do_jpeg:
        fired.append("jpeg2")
        image = _jpeg(image, rng, recipe.second.jpeg_range)
    return image


def degrade_traced(hr: np.ndarray, scale: int, rng: np.random.Generator,
                   recipe: DegradationRecipe | None = None) -> tuple[np.ndarray, list[str]]:
    """`degrade`, plus the names of the stages that fired in order (for tests and the preview)."""
    recipe = recipe or DegradationRecipe()
    if hr.ndim != 3 or hr.shape[2] != 3:
        raise TrainingError(f"real degradations need an HxWx3 RGB patch, not shape {hr.shape}")
    if scale < 1 or hr.shape[0] < scale or hr.shape[1] < scale:
        raise TrainingError(f"a {hr.shape[1]}x{hr.shape[0]} patch cannot be degraded at x{scale}")
    image = hr.astype(np.float32) / 255.0 if hr.dtype == np.uint8 else np.clip(hr.astype(np.float32), 0, 1)
    lr_size = (hr.shape[0] // scale, hr.shape[1] // scale)
    fired: list[str] = []
    image = _pass(image, lr_size, rng, recipe, False, fired)
    image = _pass(image, lr_size, rng, recipe, True, fired)
    image = _final(image, lr_size, rng, recipe, fired)
    image = np.clip(image, 0, 1)
    if recipe.quantize:
        image = np.round(image * 255) / 255
    return np.ascontiguousarray(image, dtype=np.float32), fired


def degrade(hr: np.ndarray, scale: int, rng: np.random.Generator,
            recipe: DegradationRecipe | None = None) -> np.ndarray:
    """An LR of shape (H//scale, W//scale, 3), float32 in 0..1, degraded as `recipe` says; reproducible per rng."""
    return degrade_traced(hr, scale, rng, recipe)[0]


def preview_grid(pairs: Sequence[tuple[np.ndarray, np.ndarray]], gap: int = 4) -> np.ndarray:
    """HR | LR rows, one per pair, the LR nearest-upscaled to its HR's size so the damage stays visible (uint8)."""
    if not pairs:
        raise TrainingError("no degradation pairs to preview")
    rows = []
    for hr, lr in pairs:
        hr8 = hr if hr.dtype == np.uint8 else (np.clip(hr, 0, 1) * 255).round().astype(np.uint8)
        lr8 = lr if lr.dtype == np.uint8 else (np.clip(lr, 0, 1) * 255).round().astype(np.uint8)
        big = cv2.resize(lr8, (hr8.shape[1], hr8.shape[0]), interpolation=cv2.INTER_NEAREST)
        rows.append(np.concatenate([hr8, np.zeros((hr8.shape[0], gap, 3), np.uint8), big], axis=1))
    width = max(r.shape[1] for r in rows)
    padded = []
    for row in rows:
        padded.append(np.pad(row, ((0, gap), (0, width - row.shape[1]), (0, 0))))
    return np.concatenate(padded, axis=0)[:-gap]
