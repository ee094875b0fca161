"""srcli: image super-resolution (EDSR, MDSR, VDSR) for the command line and for Python.

    import srcli
    big = srcli.upscale(rgb_array, scale=4)     # RGB (or RGBA, grey), uint8/uint16 in and out
    model = srcli.load("srcli-edsr-baseline-x2")  # load once, then model.upscale(array_or_path)

The API lives in srcli.api and is imported on first use, so `import srcli` (and `srcli --help`) never loads torch
nor OpenCV, and reads no command line.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_API = ("upscale", "load", "catalogue", "default_weights", "Model")
__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    """Lazy attributes (PEP 562): the API, and torch with it, load when first used."""
    if name in _API:
        from srcli.limits import load_opencv

        load_opencv()  # before srcli.api imports cv2, so its decoders load with srcli's pixel limit
        from srcli import api

        return getattr(api, name)
    raise AttributeError(f"module 'srcli' has no attribute {name!r}")
