"""srcli's pixel limit, and OpenCV's own decoder limit, which must be set before OpenCV loads.

srcli refuses an oversized image from its header, before decoding (srcli.imageio). As a second wall,
OpenCV's decoders refuse images over OPENCV_IO_MAX_IMAGE_PIXELS; OpenCV reads that variable once, when
the cv2 module loads, so `load_opencv` (before any srcli module imports cv2)
sets it to srcli's default limit for the load only. `import srcli` loads no OpenCV: the command line's
entry point calls `load_opencv` with its arguments, the Python API before its first use. A command line
that sets --max-pixels (raising or removing srcli's limit for that run) keeps OpenCV's own default wall
(2^30 pixels), and a value the user put in the environment is always left alone.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

# 120 MP covers the largest camera sensors sold (about 102 MP, medium format) while refusing decompression
# bombs: a few-KB PNG that claims 100000x100000 pixels would otherwise ask for 30 GB before anything fails.
# The x4 output of such an input is 1.9 GP (5.8 GB as 8-bit RGB), about the most a workstation holds.
DEFAULT_MAX_PIXELS = 120_000_000

OPENCV_LIMIT_ENV = "OPENCV_IO_MAX_IMAGE_PIXELS"
OPENCV_DEFAULT_LIMIT = 1 << 30

opencv_limit = OPENCV_DEFAULT_LIMIT
"""The pixel count OpenCV's decoders refuse above, as loaded in this process."""


def load_opencv(argv: Sequence[str] = ()) -> None:
    """Import cv2 with its decoder pixel limit set to srcli's (unless the command line `argv` sets
    --max-pixels), then restore the environment so child processes decide for themselves. A no-op once cv2
    is loaded."""
    global opencv_limit
    own = os.environ.get(OPENCV_LIMIT_ENV)
    if "cv2" in sys.modules:
        opencv_limit = _as_int(own) or OPENCV_DEFAULT_LIMIT
        return
    chosen = any(arg == "--max-pixels" or arg.startswith("--max-pixels=") for arg in argv)
    if own is None and not chosen:
        os.environ[OPENCV_LIMIT_ENV] = str(DEFAULT_MAX_PIXELS)
    try:
        import cv2  # noqa: F401  (loaded here so that the limit above is the one it reads)
    finally:
        opencv_limit = _as_int(os.environ.get(OPENCV_LIMIT_ENV)) or OPENCV_DEFAULT_LIMIT
        if own is None:
            os.environ.pop(OPENCV_LIMIT_ENV, None)


def _as_int(text: str | None) -> int | None:
    try:
        return int(text) if text else None
    except ValueError:
        return None
