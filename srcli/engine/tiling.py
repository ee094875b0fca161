"""Where the windows of a tiled run fall, and the eight geometric transforms of the self-ensemble.

Windows overlap by a pad (the network's receptive field for exact output) and all have one shape: edge
windows are shifted inward rather than shrunk, so windows batch into single forwards.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from srcli.models.spec import SizeRequirements

NO_REQUIREMENTS = SizeRequirements()


def core_length(length: int, tile: int) -> int:
    """Cores evened out over the axis (no sliver at the end); the whole axis when the tile covers it."""
    if tile <= 0 or tile >= length:
        return length
    return math.ceil(length / math.ceil(length / tile))


def window_size(length: int, tile: int, pad: int, size: SizeRequirements = NO_REQUIREMENTS,
                extent: int | None = None) -> int:
    """Every window along an axis has this one length: core + 2 pad, grown to what the network accepts, at most
    the axis (which the caller has already padded to an accepted length). Cores cut only `extent` pixels of the
    axis (the image inside a border margin); the windows may reach into the rest. A network that takes multiples
    of a step gets step - 1 more, so that its windows can start on the step's grid (see `_spans`)."""
    window = min(core_length(length if extent is None else extent, tile) + 2 * pad + size.multiple_of - 1, length)
    return min(size.padded(window, window)[0], length)


def _spans(length: int, tile: int, pad: int, size: SizeRequirements,
           first: int = 0, extent: int | None = None) -> list[tuple[int, int, int]]:
    """(core start, core stop, window start) along one axis, cores covering [first, first + extent); edge windows
    shift inward rather than shrink.

    Windows start on the grid of the network's step: a network that cuts its input into 8x8 patches (DITN) is
    equivariant only under shifts by 8, so a window on that grid sees the patches the whole image has."""
    extent = length - first if extent is None else extent
    core, window = core_length(extent, tile), window_size(length, tile, pad, size, extent)
    stop, step = first + extent, size.multiple_of
    return [
        (start, min(start + core, stop), min(max(start - pad, 0) // step * step, length - window))
        for start in range(first, stop, core)
    ]


@dataclass(frozen=True)
class Window:
    top: int  # core, in LR pixels
    bottom: int
    left: int
    right: int
    y0: int  # window origin
    x0: int


def windows(height: int, width: int, tile: int, pad: int, size: SizeRequirements = NO_REQUIREMENTS,
            region: tuple[int, int, int, int] | None = None) -> list[Window]:
    """The windows over a height x width array whose cores tile `region` (top, left, rows, columns; the whole array
    when None): a border margin around an image is read by the windows, never cut into cores of its own."""
    top, left, rows, columns = region if region is not None else (0, 0, height, width)
    return [
        Window(core_top, bottom, core_left, right, y0, x0)
        for core_top, bottom, y0 in _spans(height, tile, pad, size, top, rows)
        for core_left, right, x0 in _spans(width, tile, pad, size, left, columns)
    ]


def feather(start: int, stop: int, core_start: int, core_stop: int, pad: int) -> np.ndarray:
    """Blend weights along one axis of a window [start, stop): 1 over its core, falling linearly to the window
    edge so that neighbouring tiles cross-fade where they overlap (approximate tiling)."""
    positions = np.arange(start, stop)
    distance = np.maximum(core_start - positions, 0) + np.maximum(positions - (core_stop - 1), 0)
    return np.clip(1.0 - distance / (pad + 1.0), 1.0 / (pad + 1.0), 1.0).astype(np.float32)


# --- self-ensemble: the dihedral group of the square --------------------------------------------------------

TRANSFORMS: tuple[tuple[int, bool], ...] = tuple((k, flip) for flip in (False, True) for k in range(4))


def dihedral(x: torch.Tensor, k: int, flip: bool) -> torch.Tensor:
    return torch.rot90(x.flip(-1) if flip else x, k, dims=(-2, -1))


def undo_dihedral(y: torch.Tensor, k: int, flip: bool) -> torch.Tensor:
    y = torch.rot90(y, -k, dims=(-2, -1))
    return y.flip(-1) if flip else y
