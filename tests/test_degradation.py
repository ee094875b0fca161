"""Real-ESRGAN-style degradations (srcli/training/degradation.py): shapes, seeds, stage probabilities, recipes."""

from __future__ import annotations

import math
from collections import Counter

import cv2
import numpy as np
import pytest

from srcli.errors import TrainingError
from srcli.training.degradation import DegradationRecipe, degrade, degrade_traced, preview_grid, sinc_kernel

DRAWS = 400
PLAIN = {  # every random stage off: what is left is the resize to the LR size
    "blur_prob": 0, "blur_prob2": 0, "resize_prob": (0, 0, 1), "resize_prob2": (0, 0, 1), "noise_prob": 0,
    "noise_prob2": 0, "jpeg_prob": 0, "jpeg_prob2": 0, "final_sinc_prob": 0,
}


def _patch(height: int = 32, width: int = 32, seed: int = 0) -> np.ndarray:
    """A smooth gradient with texture, so blur, noise and JPEG all change it."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 / width, y * 255 / height, (x + y) * 127 / (width + height)], axis=-1)
    return np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)


def _within_binomial(count: int, trials: int, p: float) -> bool:
    """True when `count` is within 4.5 standard deviations of trials * p (a false alarm about 1 in 150 000)."""
    return abs(count - trials * p) <= 4.5 * math.sqrt(trials * p * (1 - p)) + 1


def _fired_counts(recipe: DegradationRecipe) -> Counter:
    rng = np.random.default_rng(1234)
    counts: Counter = Counter()
    hr = _patch(24, 24)
    for _ in range(DRAWS):
        _, fired = degrade_traced(hr, 2, rng, recipe)
        counts.update({name.split(":")[0] for name in fired} | set(fired))
    return counts


@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_shape_dtype_and_range(scale, dtype):
    hr = _patch(37, 50)
    hr = hr if dtype == np.uint8 else hr.astype(np.float32) / 255
    for seed in range(5):
        lr = degrade(hr, scale, np.random.default_rng(seed))
        assert lr.shape == (37 // scale, 50 // scale, 3)
        assert lr.dtype == np.float32
        assert lr.min() >= 0 and lr.max() <= 1
        np.testing.assert_array_equal(np.round(lr * 255) / 255, lr)  # quantised to 8-bit levels


def test_same_seed_same_bytes_other_seed_differs():
    hr = _patch(48, 48)
    first = degrade(hr, 4, np.random.default_rng(7))
    again = degrade(hr, 4, np.random.default_rng(7))
    other = degrade(hr, 4, np.random.default_rng(8))
    assert first.tobytes() == again.tobytes()
    assert first.tobytes() != other.tobytes()


def test_default_stages_fire_with_real_esrgan_probabilities():
    counts = _fired_counts(DegradationRecipe())
    expected = {
        "blur1": 1.0, "blur2": 0.8, "final_sinc": 0.8, "order": 0.5, "jpeg1": 1.0, "jpeg2": 1.0,
        "noise1": 1.0, "noise2": 1.0, "noise1:gaussian": 0.5, "noise2:gaussian": 0.5, "noise1:grey": 0.4,
        "noise2:grey": 0.4, "resize1:up": 0.2, "resize1:down": 0.7, "resize1:keep": 0.1, "resize2:up": 0.3,
        "resize2:down": 0.4, "resize2:keep": 0.3,
    }
    for stage, p in expected.items():
        assert _within_binomial(counts[stage], DRAWS, p), (stage, counts[stage], p)
    # The sinc kernel replaces the Gaussian in 10% of the blurs that fire.
    assert _within_binomial(counts["blur1:sinc"], counts["blur1"], 0.1), counts["blur1:sinc"]
    assert _within_binomial(counts["blur2:sinc"], counts["blur2"], 0.1), counts["blur2:sinc"]


def test_configured_probabilities_are_honoured():
    recipe = DegradationRecipe.from_overrides({
        "blur_prob": 0.5, "blur_prob2": 0.2, "sinc_prob": 0.5, "noise_prob": 0.6, "noise_prob2": 0.3,
        "gaussian_noise_prob": 0.9, "gray_noise_prob2": 0.0, "jpeg_prob": 0.3, "jpeg_prob2": 0.7,
        "final_sinc_prob": 0.1, "resize_prob": (1, 1, 2),
    })
    counts = _fired_counts(recipe)
    expected = {
        "blur1": 0.5, "blur2": 0.2, "noise1": 0.6, "noise2": 0.3, "jpeg1": 0.3, "jpeg2": 0.7, "final_sinc": 0.1,
        "resize1:up": 0.25, "resize1:down": 0.25, "resize1:keep": 0.5,
    }
    for stage, p in expected.items():
        assert _within_binomial(counts[stage], DRAWS, p), (stage, counts[stage], p)
    assert _within_binomial(counts["blur1:sinc"], counts["blur1"], 0.5)
    assert _within_binomial(counts["noise1:gaussian"], counts["noise1"], 0.9)
    assert counts["noise2:grey"] == 0


@pytest.mark.parametrize("mode, flag", [("area", cv2.INTER_AREA), ("bicubic", cv2.INTER_CUBIC)])
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_all_stages_off_is_exactly_the_plain_downscale(mode, flag, scale):
    hr = _patch(36, 48)
    recipe = DegradationRecipe.from_overrides({**PLAIN, "resize_modes": (mode,)})
    lr, fired = degrade_traced(hr, scale, np.random.default_rng(3), recipe)
    plain = cv2.resize(hr.astype(np.float32) / 255, (48 // scale, 36 // scale), interpolation=flag)
    np.testing.assert_array_equal(lr, np.round(np.clip(plain, 0, 1) * 255) / 255)
    assert [name for name in fired if not name.startswith("order")] == ["resize1:keep", "resize2:keep",
                                                                        f"interp2:{mode}"]


def test_unquantised_plain_recipe_equals_the_float_resize():
    hr = _patch(40, 40).astype(np.float32) / 255
    recipe = DegradationRecipe.from_overrides({**PLAIN, "resize_modes": ["area"], "quantize": False})
    lr = degrade(hr, 4, np.random.default_rng(0), recipe)
    np.testing.assert_array_equal(lr, cv2.resize(hr, (10, 10), interpolation=cv2.INTER_AREA))


def test_overrides_replace_only_what_they_name():
    recipe = DegradationRecipe.from_overrides({"jpeg_range": [40, 95], "noise_range2": (2, 10)})
    assert recipe.first.jpeg_range == (40, 95) and recipe.second.noise_range == (2, 10)
    default = DegradationRecipe()
    assert recipe.second.jpeg_range == default.second.jpeg_range == (30, 95)
    assert recipe.first.noise_range == default.first.noise_range == (1, 30)
    assert (default.second.blur_prob, default.final_sinc_prob, default.first.resize_range) == (0.8, 0.8, (0.15, 1.5))
    assert DegradationRecipe.from_overrides({}) == default
    no_jpeg = DegradationRecipe.from_overrides({"jpeg_prob": 0, "jpeg_prob2": 0})
    for seed in range(20):
        _, fired = degrade_traced(_patch(), 2, np.random.default_rng(seed), no_jpeg)
        assert "jpeg1" not in fired and "jpeg2" not in fired


@pytest.mark.parametrize("overrides", [
    {"jpg_range": (40, 95)}, {"blur_prob": 1.5}, {"noise_range": (30, 1)}, {"jpeg_range": (0, 95)},
    {"resize_modes": ("lanczos",)}, {"resize_prob2": (0, 0, 0)}, {"kernel_probs": (1, 0)}, {"blur_sigma": "x"},
    {"final_sinc_prob": -0.1}, {"jpeg_range2": (30, 101)}, {"first": None},
])
def test_bad_overrides_raise_one_clear_error(overrides):
    with pytest.raises(TrainingError):
        DegradationRecipe.from_overrides(overrides)


def test_bad_patches_raise():
    rng = np.random.default_rng(0)
    with pytest.raises(TrainingError):
        degrade(np.zeros((16, 16), np.uint8), 2, rng)
    with pytest.raises(TrainingError):
        degrade(np.zeros((3, 16, 3), np.uint8), 4, rng)


def test_sinc_kernel_is_normalised_and_symmetric():
    kernel = sinc_kernel(21, math.pi / 3)
    assert kernel.shape == (21, 21)
    assert kernel.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(kernel, kernel.T, atol=1e-15)
    np.testing.assert_allclose(kernel, kernel[::-1, ::-1], atol=1e-15)
    assert kernel.min() < 0 < kernel[10, 10] == kernel.max()  # the ringing lobes a sinc adds


def test_preview_grid_lays_out_hr_beside_nearest_upscaled_lr():
    hr = _patch(24, 24)
    lr = degrade(hr, 2, np.random.default_rng(0))
    small = _patch(16, 20)
    grid = preview_grid([(hr, lr), (small, degrade(small, 4, np.random.default_rng(1)))], gap=4)
    assert grid.dtype == np.uint8 and grid.shape == (24 + 4 + 16, 24 + 4 + 24, 3)
    np.testing.assert_array_equal(grid[:24, :24], hr)
    lr8 = (lr * 255).round().astype(np.uint8)
    np.testing.assert_array_equal(grid[:24, 28:52], np.repeat(np.repeat(lr8, 2, axis=0), 2, axis=1))
    np.testing.assert_array_equal(grid[28:44, :20], small)
    assert not grid[24:28].any() and not grid[28:, 44:].any()
    with pytest.raises(TrainingError):
        preview_grid([])
