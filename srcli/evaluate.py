"""Score a model (or plain bicubic) over a dataset the way the published tables were scored.

Protocols (../shared/docs/evaluation.md): `paper` is the EDSR paper's Table 3 (Y channel, shave =
scale); `div2k-rgb` is its Table 2 / EDSR-PyTorch's DIV2K protocol (RGB, shave = scale + 6).

The `bicubic` baseline under the paper protocol is not "upscale the published RGB LR": the Bicubic
column that the EDSR paper copies from VDSR (and VDSR from SRCNN) was made by the classic MATLAB
pipeline on luma alone: Y = rgb2ycbcr of the uint8 HR (rounded to uint8), bicubic down by 1/s and
back up by s in double precision, rounded. That reproduces all six Set5/Set14 numbers within
0.01 dB and 0.001 SSIM (Set5 to 0.002 dB, SSIM exactly); upscaling the RGB LR images misses by up
to 0.015 dB. Networks always get the published RGB LR images, as the paper's own models did.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from srcli.datasets import Dataset, ImagePair
from srcli.engine import Upscaler
from srcli.errors import SrcliError
from srcli.imageio import write_image
from srcli.metrics import psnr, quantize, rgb_to_y, ssim
from srcli.models import ModelSpec, bicubic, spec_of
from srcli.options import UpscaleOptions
from srcli.pipeline import Chain, Stage
from srcli.resize import imresize, modcrop

BICUBIC = bicubic.NAME  # the catalogue method; scored here by the classic MATLAB luma pipeline
ImageProgress = Callable[[int, int], None]  # (images done, images in the set)


@dataclass(frozen=True)
class Protocol:
    """How SR is compared with HR: on luma or RGB, and how many border pixels beyond the scale to drop."""

    name: str
    y_channel: bool
    extra_shave: int
    description: str

    def shave(self, scale: int) -> int:
        return scale + self.extra_shave


PROTOCOLS: dict[str, Protocol] = {
    "paper": Protocol("paper", True, 0, "Y channel, shave = scale (EDSR paper Table 3)"),
    "div2k-rgb": Protocol("div2k-rgb", False, 6, "RGB, shave = scale + 6 (EDSR paper Table 2, DIV2K)"),
}

# EDSR paper (Lim et al. 2017), Table 3: PSNR/SSIM on Y, shave = scale.
TABLE3_COLUMNS = ("Bicubic", "VDSR", "SRResNet", "EDSR", "MDSR", "EDSR+", "MDSR+")
_TABLE3 = """
Set5 2 33.66/0.9299 37.53/0.9587 - 38.11/0.9601 38.11/0.9602 38.20/0.9606 38.17/0.9605
Set5 3 30.39/0.8682 33.66/0.9213 - 34.65/0.9282 34.66/0.9280 34.76/0.9290 34.77/0.9288
Set5 4 28.42/0.8104 31.35/0.8838 32.05/0.8910 32.46/0.8968 32.50/0.8973 32.62/0.8984 32.60/0.8982
Set14 2 30.24/0.8688 33.03/0.9124 - 33.92/0.9195 33.85/0.9198 34.02/0.9204 33.92/0.9203
Set14 3 27.55/0.7742 29.77/0.8314 - 30.52/0.8462 30.44/0.8452 30.66/0.8481 30.53/0.8465
Set14 4 26.00/0.7027 28.01/0.7674 28.53/0.7804 28.80/0.7876 28.72/0.7857 28.94/0.7901 28.82/0.7876
B100 2 29.56/0.8431 31.90/0.8960 - 32.32/0.9013 32.29/0.9007 32.37/0.9018 32.34/0.9014
B100 3 27.21/0.7385 28.82/0.7976 - 29.25/0.8093 29.25/0.8091 29.32/0.8104 29.30/0.8101
B100 4 25.96/0.6675 27.29/0.7251 27.57/0.7354 27.71/0.7420 27.72/0.7418 27.79/0.7437 27.78/0.7425
Urban100 2 26.88/0.8403 30.76/0.9140 - 32.93/0.9351 32.84/0.9347 33.10/0.9363 33.03/0.9362
Urban100 3 24.46/0.7349 27.14/0.8279 - 28.80/0.8653 28.79/0.8655 29.02/0.8685 28.99/0.8683
Urban100 4 23.14/0.6577 25.18/0.7524 26.07/0.7839 26.64/0.8033 26.67/0.8041 26.86/0.8080 26.86/0.8082
"""


@dataclass(frozen=True)
class Reference:
    """A published score to show beside a measured one."""

    column: str
    psnr: float
    ssim: float
    source: str = "EDSR paper, Table 3"


def _parse_table3() -> dict[tuple[str, int, str], Reference]:
    table = {}
    for line in _TABLE3.strip().splitlines():
        set_name, scale, *cells = line.split()
        for column, cell in zip(TABLE3_COLUMNS, cells, strict=True):
            if cell != "-":
                value_psnr, value_ssim = map(float, cell.split("/"))
                table[(set_name, int(scale), column)] = Reference(column, value_psnr, value_ssim)
    return table


TABLE3 = _parse_table3()


def reference_column(spec: ModelSpec | None, ensemble: bool = False) -> str | None:
    """Which Table 3 column a method belongs to: bicubic (None), or what the network's architecture says."""
    if spec is None:
        return "Bicubic"
    return spec.table_column(ensemble)


def reference(set_name: str, scale: int, column: str | None, protocol: str = "paper") -> Reference | None:
    """The published number for this set, scale and column, where the paper gives one."""
    if column is None or protocol != "paper":
        return None
    return TABLE3.get((set_name, scale, column))


@dataclass(frozen=True)
class ImageScore:
    name: str
    psnr: float
    ssim: float
    seconds: float
    lr_generated: bool = False


@dataclass
class SetResult:
    """One (dataset, scale, method) run: per-image rows, their means, and the published number if any."""

    dataset: str
    scale: int
    method: str
    protocol: str
    ensemble: bool
    rows: list[ImageScore] = field(default_factory=list)
    reference: Reference | None = None
    precision: str = "fp32"  # what the network ran in (bicubic: fp32, in float64 in fact)
    precision_reason: str = ""  # why: "bf16: measured 2.0x faster than fp32 on this CPU"

    @property
    def psnr(self) -> float:
        return float(np.mean([row.psnr for row in self.rows]))

    @property
    def ssim(self) -> float:
        return float(np.mean([row.ssim for row in self.rows]))

    @property
    def seconds(self) -> float:
        return float(sum(row.seconds for row in self.rows))

    def to_dict(self, per_image: bool = True) -> dict:
        data = {
            "dataset": self.dataset, "scale": self.scale, "method": self.method, "protocol": self.protocol,
            "ensemble": self.ensemble, "images": len(self.rows), "psnr": self.psnr, "ssim": self.ssim,
            "seconds": self.seconds, "reference": asdict(self.reference) if self.reference else None,
            "precision": self.precision, "precision_reason": self.precision_reason,
        }
        if per_image:
            data["rows"] = [asdict(row) for row in self.rows]
        return data


def matlab_luma(image: np.ndarray) -> np.ndarray:
    """MATLAB `rgb2ycbcr` on uint8, Y plane: BT.601 luma rounded to uint8; single-channel images as they are."""
    if image.ndim == 2:
        return image
    return np.clip(np.floor(rgb_to_y(image) + 0.5), 0, 255).astype(np.uint8)


def classic_bicubic(hr: np.ndarray, scale: int) -> tuple[np.ndarray, np.ndarray]:
    """The SRCNN/VDSR Bicubic baseline: (SR luma, HR luma) of the modcropped HR, both 0..255 uint8."""
    truth = matlab_luma(modcrop(hr, scale))
    height, width = truth.shape
    small = imresize(truth / 255.0, size=(height // scale, width // scale))
    upscaled = imresize(small, size=(height, width))
    return quantize(upscaled * 255.0).astype(np.uint8), truth


def _as_rgb(image: np.ndarray) -> np.ndarray:
    return np.repeat(image[:, :, None], 3, axis=2) if image.ndim == 2 else image


def _match_channels(sr: np.ndarray, hr: np.ndarray) -> np.ndarray:
    """A single-channel HR is scored on its one channel: take the SR's grey (exact when R=G=B)."""
    if hr.ndim == 2 and sr.ndim == 3:
        grey = (rgb_to_y(quantize(sr)) - 16.0) * 255.0 / 219.0
        return quantize(grey).astype(np.uint8)
    return sr


def _save(image: np.ndarray, path: Path) -> None:
    """Write the quantized SR as a PNG through imageio's atomic writer."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_image(path, quantize(image).astype(np.uint8))


def scoring_upscaler(
    network: nn.Module, scale: int, options: UpscaleOptions | None = None, *, spec: ModelSpec | None = None,
    **overrides: Any,
) -> Upscaler:
    """The engine as scoring runs it: `options` (None: `UpscaleOptions.for_scoring(**overrides)`)."""
    return Upscaler(network, scale, options or UpscaleOptions.for_scoring(**overrides), spec=spec)


def evaluate(
    dataset: Dataset,
    scale: int,
    network: nn.Module | None = None,
    spec: ModelSpec | None = None,
    *,
    method: str | None = None,
    protocol: str = "paper",
    options: UpscaleOptions | None = None,
    save_dir: Path | None = None,
    progress: ImageProgress | None = None,
    pre: Sequence[Stage] = (),
) -> SetResult:
    """Score `network` (None: bicubic) on every image of `dataset` at `scale`; SR saved under save_dir if given.

    `spec` says what the network is (srcli's own modules carry it); `method` names it in the result; `options`
    says how the network runs (None: `UpscaleOptions.for_scoring()`, what the published numbers need).
    `pre`: 1x restorers run on each LR image before the network (the method then names the chain).
    `seconds` is the time to produce each SR image.
    """
    options = options or UpscaleOptions.for_scoring()
    upscaler: Upscaler | Chain | None = None
    network_upscaler: Upscaler | None = None
    if network is not None:
        spec = spec or spec_of(network)
        method = method or spec.arch
        spec.check_scale(scale, method, doing="be scored at")
        upscaler = network_upscaler = scoring_upscaler(network, scale, options, spec=spec)
        if pre:
            upscaler = Chain(network_upscaler, pre, str(method))
            method = upscaler.label
    elif pre:
        raise SrcliError("restorers (pre) need a network to upscale after them, not bicubic")
    column = reference_column(spec if network is not None else None, options.ensemble)
    result = SetResult(dataset.name, scale, BICUBIC if network is None else str(method), protocol, options.ensemble,
                       reference=reference(dataset.name, scale, column, protocol))
    if network_upscaler is not None:  # the upscaler's precision (restorers choose theirs the same way)
        result.precision = network_upscaler.placement.precision
        result.precision_reason = network_upscaler.placement.reason
    return score_pairs(result, dataset.pairs(scale), len(dataset), upscaler, save_dir=save_dir, progress=progress)


def score_pairs(
    result: SetResult,
    pairs: Iterable[ImagePair],
    total: int,
    upscaler: Upscaler | Chain | None,
    *,
    save_dir: Path | None = None,
    progress: ImageProgress | None = None,
) -> SetResult:
    """Add a row per HR/LR pair to `result` under its protocol: the one scoring loop of `srcli eval` and
    of training validation, so the two cannot disagree. `upscaler` None scores bicubic."""
    rules = PROTOCOLS[result.protocol]
    scale = result.scale
    for done, pair in enumerate(pairs, start=1):
        started = time.perf_counter()
        sr, hr = _super_resolve(pair, scale, upscaler, rules)
        seconds = time.perf_counter() - started
        sr = _match_channels(sr, hr)
        shave, y_channel = rules.shave(scale), rules.y_channel
        result.rows.append(ImageScore(
            pair.name, psnr(sr, hr, shave, y_channel), ssim(sr, hr, shave, y_channel), seconds, pair.lr_generated
        ))
        if save_dir is not None:
            _save(sr, Path(save_dir) / result.dataset / f"x{scale}" / f"{pair.name}.png")
        if progress:
            progress(done, total)
    return result


def _super_resolve(
    pair: ImagePair, scale: int, upscaler: Upscaler | Chain | None, rules: Protocol
) -> tuple[np.ndarray, np.ndarray]:
    """(SR, the HR it is scored against)."""
    if upscaler is not None:
        return upscaler.upscale(_as_rgb(pair.lr)).image, pair.hr
    if rules.y_channel:
        return classic_bicubic(pair.hr, scale)
    return imresize(pair.lr, scale), pair.hr
