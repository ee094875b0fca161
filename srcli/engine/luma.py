"""The engine's luma path, on srcli.colour's BT.601 (the metrics' own): a Y-channel network's input plane and
chroma, its output joined back to RGB, and the float Y that `Upscaler.upscale_luma` returns for scoring."""

from __future__ import annotations

import numpy as np

from srcli.colour import YCBCR_MATRIX, YCBCR_OFFSET, rgb_to_ycbcr, ycbcr_to_rgb


def split(bicubic: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """RGB on 0..1 -> (Y on 0..1, HxWx1: the network's input; Cb, Cr on 0..255, kept to join its output)."""
    ycbcr = rgb_to_ycbcr(bicubic)
    return ycbcr[:, :, :1] / 255.0, ycbcr[:, :, 1:]


def join(y: np.ndarray, chroma: np.ndarray, peak: float) -> np.ndarray:
    """Network Y (HxWx1, 0..255) and the kept chroma -> RGB rounded and clipped to 0..peak."""
    rgb = ycbcr_to_rgb(np.concatenate([y, chroma], axis=2))
    return np.clip(np.round(rgb * (peak / 255.0)), 0, peak)


def luma(values: np.ndarray) -> np.ndarray:
    """Float Y (0..255, clipped, not rounded) of a network's output on 0..255: a Y network's own, else the luma
    of its clipped RGB."""
    if values.shape[2] == 1:
        return np.clip(values[:, :, 0], 0.0, 255.0)
    return YCBCR_OFFSET[0] + np.clip(values, 0.0, 255.0) @ YCBCR_MATRIX[0] / 255.0
