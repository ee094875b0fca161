"""MATLAB-compatible bicubic `imresize`, the degradation behind every published LR image.

Follows ../shared/docs/evaluation.md exactly: Keys cubic (a=-0.5), antialiased when shrinking, rows
first; uint8 input clamps borders and rounds half up after each pass, float input mirrors borders
and does not round between passes.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np


def _cubic(x: np.ndarray) -> np.ndarray:
    ax = np.abs(x)
    ax2, ax3 = ax * ax, ax * ax * ax
    near = (1.5 * ax3 - 2.5 * ax2 + 1) * (ax <= 1)
    far = (-0.5 * ax3 + 2.5 * ax2 - 4 * ax + 2) * ((ax > 1) & (ax <= 2))
    return near + far


@lru_cache(maxsize=256)
def resize_matrix(in_len: int, out_len: int, mirror: bool) -> np.ndarray:
    """The (out_len, in_len) matrix that resizes one axis; cached because every image of a set reuses it."""
    scale = out_len / in_len
    width = 4.0
    if scale < 1:
        width /= scale

        def kernel(d: np.ndarray) -> np.ndarray:
            return scale * _cubic(scale * d)
    else:
        kernel = _cubic
    x = np.arange(1, out_len + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1 - 1 / scale)
    left = np.floor(u - width / 2)
    taps = int(math.ceil(width)) + 2
    indices = left[:, None] + np.arange(taps)[None, :]  # 1-based, may fall outside 1..in_len
    weights = kernel(u[:, None] - indices)
    weights /= weights.sum(axis=1, keepdims=True)
    zero_based = indices.astype(np.int64) - 1
    if mirror:
        period = 2 * in_len
        wrapped = np.mod(zero_based, period)
        zero_based = np.where(wrapped < in_len, wrapped, period - 1 - wrapped)
    else:
        zero_based = np.clip(zero_based, 0, in_len - 1)
    matrix = np.zeros((out_len, in_len), dtype=np.float64)
    rows = np.repeat(np.arange(out_len), taps)
    np.add.at(matrix, (rows, zero_based.ravel()), weights.ravel())
    return matrix


def _output_size(height: int, width: int, scale: float | None, size: tuple[int, int] | None) -> tuple[int, int]:
    if size is not None:
        return size
    if scale is None:
        raise ValueError("give a scale or an output size")
    return int(math.ceil(height * scale)), int(math.ceil(width * scale))


def imresize(
    image: np.ndarray, scale: float | None = None, size: tuple[int, int] | None = None
) -> np.ndarray:
    """Resize an HxW or HxWxC image like MATLAB `imresize(image, scale, 'bicubic')`.

    uint8 in -> uint8 out (the path that made the benchmark LR images); float in -> float64 out
    (MATLAB's double path, used for VDSR's input and the float bicubic baseline).
    """
    is_uint8 = image.dtype == np.uint8
    if not is_uint8 and not np.issubdtype(image.dtype, np.floating):
        raise TypeError(f"imresize takes uint8 or float images, not {image.dtype}")
    height, width = image.shape[:2]
    out_height, out_width = _output_size(height, width, scale, size)
    data = image.astype(np.float64)
    rows = resize_matrix(height, out_height, not is_uint8)
    columns = resize_matrix(width, out_width, not is_uint8)
    data = np.tensordot(rows, data, axes=(1, 0))
    if is_uint8:
        data = np.clip(np.floor(data + 0.5), 0, 255)
    data = np.moveaxis(np.tensordot(columns, data, axes=(1, 1)), 0, 1)
    if is_uint8:
        return np.clip(np.floor(data + 0.5), 0, 255).astype(np.uint8)
    return data


def modcrop(image: np.ndarray, scale: int) -> np.ndarray:
    """Crop an HR image top-left to a multiple of the scale, as the benchmark LR images were made."""
    height, width = image.shape[:2]
    return image[: height - height % scale, : width - width % scale]


def downscale(hr: np.ndarray, scale: int) -> np.ndarray:
    """The benchmark degradation: modcrop, then MATLAB bicubic by 1/scale."""
    cropped = modcrop(hr, scale)
    return imresize(cropped, size=(cropped.shape[0] // scale, cropped.shape[1] // scale))
