"""Validation during training: PSNR/SSIM on Y with shave = scale over a benchmark-layout folder.

Uses srcli.metrics directly, with the eval protocol of ../shared/docs/evaluation.md. When srcli/evaluate.py
lands (the eval issue), `score_model` should become a call to it so train and eval share one code path.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from srcli.errors import TrainingError
from srcli.metrics import psnr, rgb_to_y, ssim
from srcli.resize import downscale, imresize, modcrop
from srcli.training.data import IMAGE_SUFFIXES, read_rgb


@dataclass
class ValImage:
    name: str
    hr: np.ndarray  # uint8 RGB, cropped to a multiple of the scale
    lr: np.ndarray  # uint8 RGB


def resolve_val_set(name_or_path: str) -> Path:
    """A folder, or a benchmark name (Set5, Set14, ...) looked up under $SRCLI_SHARED/datasets/benchmark."""
    path = Path(name_or_path)
    if path.is_dir():
        return path
    shared = os.environ.get("SRCLI_SHARED")
    roots = [Path(shared)] if shared else []
    repo = Path(__file__).resolve().parents[2]
    roots += [repo / "shared", repo.parent / "shared"]
    for root in roots:
        candidate = root / "datasets" / "benchmark" / name_or_path
        if candidate.is_dir():
            return candidate
    raise TrainingError(f"validation set {name_or_path!r} is neither a folder nor a benchmark under $SRCLI_SHARED")


def load_val_set(folder: Path, scales: list[int]) -> dict[int, list[ValImage]]:
    """Benchmark layout: HR/<name>.png and LR_bicubic/X<s>/<name>x<s>.png (made with the MATLAB bicubic
    when absent). A plain folder of images is taken as HR."""
    hr_dir = folder / "HR" if (folder / "HR").is_dir() else folder
    files = sorted(p for p in hr_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise TrainingError(f"validation folder {hr_dir} holds no image")
    sets: dict[int, list[ValImage]] = {s: [] for s in scales}
    for path in files:
        hr = read_rgb(path)
        if hr is None:
            raise TrainingError(f"validation image {path} cannot be read")
        for scale in scales:
            lr_path = folder / "LR_bicubic" / f"X{scale}" / f"{path.stem}x{scale}{path.suffix}"
            lr = read_rgb(lr_path) if lr_path.exists() else None
            if lr is None:
                lr = downscale(hr, scale)
            sets[scale].append(ValImage(path.stem, modcrop(hr, scale), lr))
    return sets


@torch.no_grad()
def super_resolve(model: nn.Module, lr: np.ndarray, scale: int, device: torch.device) -> np.ndarray:
    """The network's output on 0..255: RGB HxWx3 (EDSR/MDSR) or Y HxW (a 1-channel VDSR)."""
    if model.upscales_inside:
        tensor = torch.from_numpy(np.ascontiguousarray(lr.transpose(2, 0, 1))).float()[None].to(device)
        out = model(tensor * (model.pixel_max / 255.0), scale)
        return out[0].float().cpu().numpy().transpose(1, 2, 0) * (255.0 / model.pixel_max)
    upscaled = imresize(lr.astype(np.float64), size=(lr.shape[0] * scale, lr.shape[1] * scale))
    planes = (rgb_to_y(upscaled) / 255.0)[None] if model.channels == 1 else upscaled.transpose(2, 0, 1) / 255.0
    tensor = torch.from_numpy(np.ascontiguousarray(planes)).float()[None].to(device)
    out = model(tensor * model.pixel_max)[0].float().cpu().numpy() * (255.0 / model.pixel_max)
    return out[0] if model.channels == 1 else out.transpose(1, 2, 0)


def score_model(
    model: nn.Module, sets: dict[int, list[ValImage]], device: torch.device
) -> dict[int, tuple[float, float]]:
    """Mean (PSNR, SSIM) per scale on Y with shave = scale (the EDSR paper's protocol)."""
    was_training = model.training
    model.eval()
    scores = {}
    try:
        for scale, images in sets.items():
            values = []
            for image in images:
                sr = super_resolve(model, image.lr, scale, device)
                values.append((psnr(sr, image.hr, shave=scale), ssim(sr, image.hr, shave=scale)))
            scores[scale] = (float(np.mean([v[0] for v in values])), float(np.mean([v[1] for v in values])))
    finally:
        model.train(was_training)
    return scores
