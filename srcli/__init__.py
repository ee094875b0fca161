"""srcli: image super-resolution (EDSR, MDSR, VDSR) for the command line."""

from srcli.limits import load_opencv

__version__ = "0.1.0"

load_opencv()  # first, so OpenCV's decoders load with srcli's pixel limit (see srcli/limits.py)
