"""The Python API: `srcli.upscale`, `srcli.load`, `srcli.catalogue`, `srcli.default_weights`.

Arrays are RGB (not OpenCV's BGR): HxWx3 RGB, HxWx4 RGBA or HxW grey, uint8 or uint16; what comes back has
the same layout and dtype. Paths are read with srcli's own reader (EXIF orientation applied). `import srcli`
stays light: `srcli/__init__.py` loads this module, and with it torch, on first use.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from srcli import weights as catalogue_module
from srcli.engine import Upscaler
from srcli.errors import InputImageError, ScaleError
from srcli.imageio import read_image
from srcli.options import UpscaleOptions
from srcli.pipeline import ImagePipeline, Stage, load_restorers
from srcli.weights import Weights

Image = np.ndarray | str | os.PathLike
_DEFAULTS = UpscaleOptions.for_upscale()  # the signatures' defaults: what `srcli upscale` runs


class Model:
    """A network loaded once and ready to upscale many images: what `srcli.load` returns.

    `name` is the catalogue name (or the file), `scale` the scale it runs at, `weights` the catalogue entry
    (None for a file of your own), `spec` what the architecture record says about it, `pre` the names of the
    1x restorers run before it.
    """

    def __init__(self, resolved: catalogue_module.ResolvedModel, scale: int, options: UpscaleOptions,
                 pre: list[Stage] | None = None):
        self.name = resolved.name
        self.scale = scale
        self.spec = resolved.spec
        self.weights: Weights | None = resolved.entry
        self.options = options
        self.pre = [stage.name for stage in pre or []]
        upscaler = Upscaler(resolved.model, scale, options, spec=resolved.spec)
        self._pipeline = ImagePipeline(upscaler, pre or [], resolved.name)

    def upscale(self, image: Image) -> np.ndarray:
        """An RGB/RGBA/grey uint8 or uint16 array (or an image path) -> the upscaled array, same layout and dtype."""
        array = _as_array(image)
        if array.ndim == 3 and array.shape[2] == 1:  # HxWx1 grey comes back HxWx1
            return self._pipeline.upscale(array[:, :, 0]).image[:, :, None]
        return self._pipeline.upscale(array).image

    __call__ = upscale

    def __repr__(self) -> str:
        pre = f", pre={self.pre!r}" if self.pre else ""
        return f"srcli.Model({self.name!r}, scale={self.scale}, border={self.options.border!r}{pre})"


def load(
    model: str | os.PathLike | Weights | None = None,
    scale: int | None = None,
    *,
    outscale: float | None = None,
    ensemble: bool = False,
    border: str = _DEFAULTS.border,
    device: str = _DEFAULTS.device,
    precision: str = _DEFAULTS.precision,
    tile: int | None = _DEFAULTS.tile,
    pre: list[str | os.PathLike] | None = None,
) -> Model:
    """A catalogue name, a checkpoint path or a catalogue entry (None: srcli's default model) -> a `Model`.

    `scale` None is the model's own, with `outscale` a native one if any, else 4 (as `srcli upscale`).
    `border="reflect"` extends the image past its edges before the network (clean borders, as the CLI);
    "zero" is the papers' padding. `pre`: 1x restorers (names or files) run in order before the upscaler
    (`--pre`); a grey-only one runs on luma. Catalogue files download on first use.
    """
    name = model.name if isinstance(model, Weights) else (None if model is None else os.fspath(model))
    if name is None:
        _check_default_scale(scale)
    options = UpscaleOptions.for_upscale(device=device, precision=precision, tile=tile, ensemble=ensemble,
                                         outscale=outscale, border=border)
    stages = load_restorers([os.fspath(each) for each in pre or []], options)
    resolved, chosen = catalogue_module.select(name, None, scale, outscale=outscale)
    return Model(resolved, chosen, options, stages)


def upscale(
    image: Image,
    scale: int | None = None,
    model: str | os.PathLike | Weights | None = None,
    ensemble: bool = False,
    *,
    outscale: float | None = None,
    border: str = _DEFAULTS.border,
    device: str = _DEFAULTS.device,
    precision: str = _DEFAULTS.precision,
    tile: int | None = _DEFAULTS.tile,
    pre: list[str | os.PathLike] | None = None,
) -> np.ndarray:
    """Upscale one image: an RGB/RGBA/grey uint8 or uint16 array, or a path; returns the same layout and dtype.

    `pre`: 1x restorers run first (see `load`). Loads the models each call: for many images,
    `srcli.load(...)` once and call `.upscale` on each.
    """
    loaded = load(model, scale, outscale=outscale, ensemble=ensemble, border=border, device=device,
                  precision=precision, tile=tile, pre=pre)
    return loaded.upscale(image)


def catalogue() -> dict[str, Weights]:
    """Every model srcli knows, by name: embedded, official and built-in (bicubic) entries; see `Weights.meta`."""
    return catalogue_module.catalogue()


def default_weights(scale: int = 4) -> Weights:
    """The catalogue entry srcli uses when no model is named, for `scale`."""
    name = catalogue_module.default_model(scale)
    if name is None:
        raise ScaleError(f"srcli has no default model for x{scale}")
    return catalogue()[name]


def _check_default_scale(scale: int | None) -> None:
    """The default models' scales, said in this API's words (the selection's message names CLI flags)."""
    if scale is None or scale in catalogue_module.DEFAULT_SCALES:
        return
    if scale < 2:
        raise ScaleError(f"scale={scale} is no upscale: srcli's default models run at scale=2, 3 or 4 "
                         "(outscale=1.5 with scale=2 for a final size in between)")
    raise ScaleError(f"srcli's default models upscale x2, x3 or x4, not x{scale}: use scale=4, outscale={scale} "
                     "(the x4 model, then a resize), or model= a catalogue name or checkpoint of that scale")


def _as_array(image: Image) -> np.ndarray:
    if isinstance(image, (str, os.PathLike)):
        return read_image(Path(image))
    if not isinstance(image, np.ndarray):
        raise TypeError(f"expected a numpy array or a path, not {type(image).__name__}")
    if np.issubdtype(image.dtype, np.integer) and image.dtype not in (np.uint8, np.uint16):
        raise TypeError(f"expected a uint8 or uint16 array, not {image.dtype}: for 0..255 values pass "
                        "image.astype(np.uint8)")
    if image.dtype not in (np.uint8, np.uint16):
        raise TypeError(f"expected a uint8 or uint16 array, not {image.dtype} (scale floats to 0..255 and round)")
    if image.size == 0 or image.ndim not in (2, 3):
        raise InputImageError(f"expected an HxW or HxWxC image, got an array of shape {image.shape}")
    if image.ndim == 3 and image.shape[0] in (1, 3, 4) and image.shape[2] not in (1, 3, 4):
        raise InputImageError(f"an array of shape {image.shape} looks channels-first (CxHxW): srcli takes HxWxC, "
                              "so pass image.transpose(1, 2, 0)")
    return np.ascontiguousarray(image)
