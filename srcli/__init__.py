"""srcli: image super-resolution (EDSR, MDSR, VDSR) for the command line."""

__version__ = "0.1.0"
