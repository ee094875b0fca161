"""PSNR and SSIM under the EDSR paper's protocol (../shared/docs/evaluation.md).

Plain functions whose arguments say everything (shave, y_channel), as in BasicSR's metrics.
"""

from __future__ import annotations

import cv2
import numpy as np

from srcli.colour import Y_WEIGHTS, YCBCR_OFFSET


def rgb_to_y(image: np.ndarray) -> np.ndarray:
    """ITU-R BT.601 luma on 0..255 values, kept as float; a single-channel image passes through unchanged."""
    data = image.astype(np.float64)
    if data.ndim == 2:
        return data
    if data.shape[2] == 1:
        return data[:, :, 0]
    return YCBCR_OFFSET[0] + data[:, :, :3] @ Y_WEIGHTS


def quantize(image: np.ndarray) -> np.ndarray:
    """What a saved 8-bit PNG holds: clamp to 0..255 and round."""
    return np.clip(np.round(image.astype(np.float64)), 0, 255)


def prepare_pair(
    sr: np.ndarray, hr: np.ndarray, shave: int, y_channel: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Crop HR to SR's size (top-left), quantize SR, take luma, shave borders: the steps shared by both metrics."""
    height, width = sr.shape[:2]
    if hr.shape[0] < height or hr.shape[1] < width:
        raise ValueError(f"HR {hr.shape[:2]} is smaller than SR {sr.shape[:2]}")
    hr = hr[:height, :width]
    sr = quantize(sr)
    if y_channel:
        sr, hr = rgb_to_y(sr), rgb_to_y(hr)
    else:
        sr, hr = sr.astype(np.float64), hr.astype(np.float64)
    if shave > 0:
        sr, hr = sr[shave:-shave, shave:-shave], hr[shave:-shave, shave:-shave]
    return sr, hr


def psnr(sr: np.ndarray, hr: np.ndarray, shave: int = 0, y_channel: bool = True) -> float:
    """PSNR in dB of a 0..255 SR image against its HR, with the paper's crop, quantization and shave."""
    a, b = prepare_pair(sr, hr, shave, y_channel)
    mse = float(np.mean((a - b) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(255.0**2 / mse)


def _ssim_single(a: np.ndarray, b: np.ndarray) -> float:
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    window = cv2.getGaussianKernel(11, 1.5)
    window = window @ window.T

    def blur(x: np.ndarray) -> np.ndarray:
        return cv2.filter2D(x, -1, window, borderType=cv2.BORDER_REFLECT)[5:-5, 5:-5]

    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return float(ssim_map.mean())


def ssim(sr: np.ndarray, hr: np.ndarray, shave: int = 0, y_channel: bool = True) -> float:
    """SSIM (Wang et al.): Gaussian 11x11 window, sigma 1.5, valid region, mean of the map; per channel if RGB."""
    a, b = prepare_pair(sr, hr, shave, y_channel)
    if a.ndim == 2:
        return _ssim_single(a, b)
    return float(np.mean([_ssim_single(a[:, :, c], b[:, :, c]) for c in range(a.shape[2])]))
