"""BT.601 YCbCr as MATLAB's rgb2ycbcr computes it: the one definition the metrics, the Y-channel networks' input
and the engine's luma output share, so a score and the network it scores read the same Y."""

from __future__ import annotations

import numpy as np

# [Y, Cb, Cr] (0..255) = YCBCR_OFFSET + YCBCR_MATRIX @ rgb, for RGB on 0..1
YCBCR_OFFSET = np.array([16.0, 128.0, 128.0])
YCBCR_MATRIX = np.array([[65.481, 128.553, 24.966], [-37.797, -74.203, 112.0], [112.0, -93.786, -18.214]])
YCBCR_INVERSE = np.linalg.inv(YCBCR_MATRIX)
Y_WEIGHTS = YCBCR_MATRIX[0] / 255.0  # luma of 0..255 RGB: YCBCR_OFFSET[0] + rgb @ Y_WEIGHTS


def rgb_to_ycbcr(rgb: np.ndarray) -> np.ndarray:
    """HxWx3 RGB on 0..1 -> YCbCr on 0..255 (float64)."""
    return YCBCR_OFFSET + rgb @ YCBCR_MATRIX.T


def ycbcr_to_rgb(ycbcr: np.ndarray) -> np.ndarray:
    """YCbCr on 0..255 -> RGB on 0..255 (float64, unclipped)."""
    return (ycbcr - YCBCR_OFFSET) @ YCBCR_INVERSE.T * 255.0
