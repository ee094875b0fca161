"""What srcli reads from a TIFF's header before decoding: size, sample layout, and the one layout
OpenCV's decoder gets wrong (grey + alpha, whose alpha it drops).

TIFF is the one format srcli reads whose pixels are not bounded by the pixel count: a sample may be a
64-bit float and a pixel may hold dozens of samples, so a 3.7 MB deflate file can decode to 7.8 GB.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np

from srcli.errors import InputImageError

WIDTH, LENGTH, BITS, PHOTOMETRIC, SAMPLES, PLANAR, PREDICTOR, TILE_WIDTH, EXTRA, FORMAT = (
    256, 257, 258, 262, 277, 284, 317, 322, 338, 339)
_TARGET_PRINTER = 337  # an ASCII tag decoders ignore, between ExtraSamples' neighbours in tag order

# The pixel limit assumes at most 16-bit RGBA: 8 bytes a pixel.
BYTES_PER_LIMIT_PIXEL = 8


def is_tiff(data: bytes) -> bool:
    return data[:4] in (b"II*\x00", b"MM\x00*")


def _entries(data: bytes) -> tuple[str, list[tuple[int, int, int, int]]]:
    """The byte order and (tag, type, count, entry offset) of each entry of the first IFD."""
    order = "<" if data[:2] == b"II" else ">"
    ifd = struct.unpack(order + "I", data[4:8])[0]
    (count,) = struct.unpack(order + "H", data[ifd : ifd + 2])
    entries = []
    for index in range(count):
        at = ifd + 2 + 12 * index
        tag, kind, number = struct.unpack(order + "HHI", data[at : at + 8])
        entries.append((tag, kind, number, at))
    return order, entries


def fields(data: bytes, tags: frozenset[int]) -> dict[int, list[int]]:
    """The SHORT/LONG values of `tags` in the first image (IFD) of a classic TIFF, inline or pointed to."""
    order, entries = _entries(data)
    found: dict[int, list[int]] = {}
    for tag, kind, number, at in entries:
        if tag not in tags or kind not in (3, 4) or number > 64:
            continue
        width = 2 if kind == 3 else 4
        value_at = at + 8
        if width * number > 4:
            value_at = struct.unpack(order + "I", data[value_at : value_at + 4])[0]
        found[tag] = list(struct.unpack(f"{order}{number}{'H' if kind == 3 else 'I'}",
                                        data[value_at : value_at + width * number]))
    return found


def size(data: bytes) -> tuple[int, int] | None:
    """ImageWidth and ImageLength of the first image (IFD) of a classic TIFF."""
    if not is_tiff(data):
        return None
    found = fields(data, frozenset((WIDTH, LENGTH)))
    if WIDTH in found and LENGTH in found:
        return found[WIDTH][0], found[LENGTH][0]
    return None


def check_samples(path: Path, data: bytes, width: int, height: int, max_pixels: int | None) -> None:
    """Count the pixels in bytes, from the header: refuse sample types srcli never uses (floats, over
    16 bits) before the decoder allocates for them, and more bytes than the pixel limit allows."""
    try:
        found = fields(data, frozenset((BITS, SAMPLES, FORMAT)))
    except struct.error:
        return  # the decoder reports an unreadable header
    samples = found.get(SAMPLES, [1])[0]
    bits = max(found.get(BITS, [1]))
    floating = 3 in found.get(FORMAT, [])
    if floating or bits > 16:
        kind = "floating-point" if floating else "integer"
        raise InputImageError(f"{path}: {bits}-bit {kind} samples are not supported (8- or 16-bit integers only)")
    decoded = width * height * samples * max(1, bits // 8)
    if max_pixels is not None and decoded > max_pixels * BYTES_PER_LIMIT_PIXEL:
        allowed = max_pixels * BYTES_PER_LIMIT_PIXEL
        raise InputImageError(f"{path}: {width}x{height} with {samples} {bits}-bit samples is {decoded / 1e6:.1f} MB "
                              f"decoded, over the {allowed / 1e6:g} MB that the {max_pixels / 1e6:g} MP limit allows "
                              "(raise it with --max-pixels)")


def decode_grey_alpha(path: Path, data: bytes, decode: Callable[[bytes], np.ndarray]) -> np.ndarray | None:
    """A grey + alpha TIFF as HxWx4 (grey three times, then alpha), the layout OpenCV gives grey + alpha
    PNG; None for any other TIFF. OpenCV drops the alpha of such a TIFF, so the header is rewritten to
    call each row of W two-sample pixels a row of 2W grey pixels, and the samples are paired again."""
    try:
        found = fields(data, frozenset((SAMPLES, PHOTOMETRIC, PLANAR, PREDICTOR, TILE_WIDTH)))
    except struct.error:
        return None
    if found.get(SAMPLES, [1])[0] != 2:
        return None
    if (found.get(PHOTOMETRIC, [1])[0] != 1 or found.get(PLANAR, [1])[0] != 1 or found.get(PREDICTOR, [1])[0] != 1
            or TILE_WIDTH in found):
        raise InputImageError(f"{path}: a grey + alpha TIFF with tiles, separate planes, a predictor or "
                              "white-is-zero grey is not supported (save it as PNG, or as plain strips)")
    pairs = decode(_as_double_width_grey(data))
    height, double = pairs.shape[:2]
    pairs = pairs.reshape(height, double // 2, 2)
    grey, alpha = pairs[..., 0], pairs[..., 1]
    return np.ascontiguousarray(np.dstack([grey, grey, grey, alpha]))


def _as_double_width_grey(data: bytes) -> bytes:
    order, entries = _entries(data)
    rewritten = bytearray(data)
    for tag, kind, _, at in entries:
        if tag == WIDTH:
            width = struct.unpack(order + ("H" if kind == 3 else "I"), data[at + 8 : at + (10 if kind == 3 else 12)])
            rewritten[at + 2 : at + 12] = struct.pack(order + "HII", 4, 1, 2 * width[0])
        elif tag in (BITS, FORMAT):
            rewritten[at + 4 : at + 8] = struct.pack(order + "I", 1)  # the first of two equal values, inline
        elif tag == SAMPLES:
            rewritten[at + 8 : at + 12] = struct.pack(order + "HH", 1, 0) if kind == 3 else struct.pack(order + "I", 1)
        elif tag == EXTRA:
            rewritten[at : at + 2] = struct.pack(order + "H", _TARGET_PRINTER)
    return bytes(rewritten)
