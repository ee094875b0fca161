"""MATLAB bicubic reproduces the published LR images bit for bit; metrics follow the paper's protocol."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from srcli.metrics import psnr, rgb_to_y, ssim
from srcli.resize import downscale, imresize


def _read_rgb(path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    return image if image.ndim == 2 else image[:, :, ::-1]


@pytest.mark.parametrize("set_name", ["Set5", "Set14"])
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_downscale_reproduces_matlab_lr_bit_for_bit(benchmark_dir, set_name, scale):
    hr_paths = sorted((benchmark_dir / set_name / "HR").glob("*.png"))
    assert hr_paths
    for hr_path in hr_paths:
        expected = _read_rgb(benchmark_dir / set_name / "LR_bicubic" / f"X{scale}" / f"{hr_path.stem}x{scale}.png")
        mine = downscale(_read_rgb(hr_path), scale)
        assert mine.shape == expected.shape, hr_path.name
        assert np.array_equal(mine, expected), hr_path.name


def test_imresize_keeps_constant_images_constant():
    flat = np.full((7, 9, 3), 77, np.uint8)
    assert np.array_equal(imresize(flat, 3), np.full((21, 27, 3), 77, np.uint8))
    assert np.allclose(imresize(flat.astype(np.float64) / 255, 0.5), 77 / 255)


def test_float_path_mirrors_and_does_not_round():
    ramp = np.linspace(0, 1, 16).reshape(4, 4)
    out = imresize(ramp, 2)
    assert out.dtype == np.float64 and out.shape == (8, 8)
    assert not np.allclose(out * 255, np.round(out * 255))


def test_rgb_to_y_is_bt601_and_grey_passes_through():
    assert rgb_to_y(np.array([[[255, 255, 255]]], np.uint8))[0, 0] == pytest.approx(235.0)
    assert rgb_to_y(np.array([[[0, 0, 0]]], np.uint8))[0, 0] == pytest.approx(16.0)
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4)
    assert np.array_equal(rgb_to_y(grey), grey.astype(np.float64))


def test_psnr_and_ssim_values():
    rng = np.random.default_rng(0)
    hr = rng.integers(0, 256, (40, 40), dtype=np.uint8)
    assert psnr(hr.astype(np.float64), hr) == float("inf")
    assert ssim(hr.astype(np.float64), hr) == pytest.approx(1.0)
    noisy = hr.astype(np.float64) + 4.0  # MSE 16 where not clipped
    assert psnr(np.minimum(noisy, 255), hr, shave=0) == pytest.approx(10 * np.log10(255**2 / 16), abs=0.3)
    assert psnr(np.full((10, 10), 0.4), np.zeros((12, 12), np.uint8)) == float("inf")  # quantized, HR cropped
