"""VDSR: the residual survives reduced precision (training autocast, engine fp16/bf16), and the recipe learns."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from srcli.engine import UpscaleOptions, Upscaler
from srcli.metrics import psnr, rgb_to_y
from srcli.models import build
from srcli.resize import downscale, imresize, modcrop
from srcli.training import Trainer, configure
from srcli.training.data import read_rgb
from srcli.weights import load_checkpoint


def _small_residual_vdsr() -> torch.nn.Module:
    """A 4-layer VDSR whose residual is a couple of grey levels: what a trained one adds to an image."""
    torch.manual_seed(0)
    model = build("vdsr", layers=4).eval()
    with torch.no_grad():
        model.output.weight.mul_(0.008)
    return model


def _bright_input() -> torch.Tensor:
    """Values in 0.5..1, where bf16's step is 1/256: a residual added there in bf16 mostly rounds away."""
    return 0.5 + 0.5 * torch.rand(1, 1, 24, 24, generator=torch.Generator().manual_seed(3))


def test_vdsr_forward_keeps_its_residual_under_bf16_autocast() -> None:
    model, x = _small_residual_vdsr(), _bright_input()
    with torch.no_grad():
        residual = model(x) - x
        with torch.autocast("cpu", dtype=torch.bfloat16):
            output = model(x)
            half_input_output = model(x.bfloat16())
    scale = residual.abs().max().item()
    assert 1 / 255 < scale < 8 / 255  # small, as the test intends
    assert output.dtype == torch.float32 and half_input_output.dtype == torch.float32
    # bf16 convs give the residual ~3 significant digits; a bf16 add would be off by up to 1/512 = 0.25 * scale
    assert (output - x - residual).abs().max().item() < 0.05 * scale
    assert (half_input_output - x.bfloat16().float() - residual).abs().max().item() < 0.1 * scale


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_engine_adds_the_vdsr_residual_in_float32(precision: str) -> None:
    model, x = _small_residual_vdsr(), _bright_input()
    try:
        upscaler = Upscaler(model, 2, UpscaleOptions(device="cpu", precision=precision))
        output = upscaler.network_forward(x)
    except RuntimeError as error:  # some CPU builds lack half-precision convolutions
        pytest.skip(f"no {precision} convolution on this CPU build: {error}")
    with torch.no_grad():
        residual = model(x) - x
    assert output.dtype == torch.float32
    assert (output - x - residual).abs().max().item() < 0.05 * residual.abs().max().item()


def _held_out_crop(benchmark_dir: Path) -> np.ndarray:
    """A Set5 crop (never trained on): the PSNR the test scores."""
    hr = read_rgb(benchmark_dir / "Set5" / "HR" / "butterfly.png")
    assert hr is not None
    return modcrop(hr[64:160, 64:160], 2)


def _vdsr_psnr(model: torch.nn.Module | None, hr: np.ndarray, scale: int) -> float:
    """Y PSNR (shave = scale) of VDSR, or of the bicubic input when model is None."""
    lr = downscale(hr, scale)
    upscaled = rgb_to_y(imresize(lr.astype(np.float64), size=hr.shape[:2])) / 255.0
    if model is not None:
        with torch.no_grad():
            upscaled = model(torch.from_numpy(upscaled).float()[None, None])[0, 0].double().numpy()
    return psnr(upscaled * 255.0, hr, shave=scale)


@pytest.mark.slow
def test_vdsr_recipe_moves_psnr_above_bicubic_on_real_images(
    train_dir: Path, benchmark_dir: Path, tmp_path: Path
) -> None:
    """The recipe's own loss, optimiser, lr 0.1, momentum, weight decay and clipping, on real T91 images:
    the collapse this guards against left the output exactly bicubic (a dead residual)."""
    images = sorted((train_dir / "T91").iterdir())[:8]
    settings = {"data": [str(p) for p in images], "out": str(tmp_path / "run"), "steps": STEPS, "batch": 8,
                "patch": 24, "scales": [2], "lr_step": 10_000, "log_every": 10, "checkpoint_every": 10_000}
    config, _ = configure("vdsr", settings, resume=False)
    assert (config.optimizer, config.lr, config.momentum, config.weight_decay, config.clip) == (
        "sgd", 0.1, 0.9, 1e-4, 0.01)
    result = Trainer(config).run()
    model, _ = load_checkpoint(result.weights)
    hr = _held_out_crop(benchmark_dir)
    gain = _vdsr_psnr(model.float().eval(), hr, 2) - _vdsr_psnr(None, hr, 2)
    assert gain > 0.3, f"VDSR is {gain:+.3f} dB over bicubic after {STEPS} steps"


STEPS = 100
