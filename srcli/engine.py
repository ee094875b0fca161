"""Upscaler: runs a super-resolution network over an image (INTERFACE STUB: whole image, fp32, CPU/CUDA).

The engine helper replaces the internals (tiling, folding, precision, ensemble, back-off); the public
signature below is what upscale, eval and train call, so keep it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

ProgressCallback = Callable[[int, int], None]  # (done, total) in units the engine chooses (tiles)


@dataclass
class UpscaleOptions:
    """How to run: every field has a sensible automatic default."""

    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    precision: str = "auto"  # auto | fp32 | fp16 | bf16
    tile: int | None = None  # None: chosen from free memory; 0: whole image
    tile_pad: int | None = None  # None: the network's receptive field (exact result)
    ensemble: bool = False  # geometric self-ensemble x8 (EDSR+)
    outscale: float | None = None  # final scale if different from the model's


class Upscaler:
    """A network made ready for inference at one scale; `upscale` maps HxWxC uint8/uint16 to the same dtype."""

    def __init__(self, model: nn.Module, scale: int, options: UpscaleOptions | None = None):
        self.options = options or UpscaleOptions()
        self.scale = scale
        device = self.options.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.model = model.eval().to(self.device)

    def upscale(self, image: np.ndarray, progress: ProgressCallback | None = None) -> np.ndarray:
        """Super-resolve an RGB (HxWx3) image of dtype uint8 or uint16; returns the same dtype."""
        peak = 65535.0 if image.dtype == np.uint16 else 255.0
        tensor = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float()[None] / peak
        with torch.inference_mode():
            out = self.model(tensor.to(self.device) * self.model.pixel_max, self.scale) / self.model.pixel_max
        if progress:
            progress(1, 1)
        out = out[0].clamp(0, 1).mul(peak).round().cpu().numpy().transpose(1, 2, 0)
        return out.astype(image.dtype)
