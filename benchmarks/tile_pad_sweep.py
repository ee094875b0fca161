"""Where does the saved 8-bit output stop changing as the tile overlap grows? (the default pad's evidence)

Runs whole-image inference and tiled inference with growing `tile_pad` on a real Set14 crop, for a seeded
random EDSR-baseline (x2, x4) and the shared VDSR checkpoint, and prints how many output bytes differ.

    python benchmarks/tile_pad_sweep.py [--shared ../shared]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from srcli.engine import UpscaleOptions, Upscaler
from srcli.models import build
from srcli.weights import load_checkpoint


def sweep(model: torch.nn.Module, scale: int, image: np.ndarray, tile: int, pads: list[int]) -> None:
    whole = Upscaler(model, scale, UpscaleOptions(device="cpu", tile=0)).upscale(image).image
    default = Upscaler(model, scale, UpscaleOptions(device="cpu")).receptive_field
    print(f"  {model.arch} x{scale}: receptive field (default pad) {default} LR px, tile {tile}")
    for pad in [*pads, default]:
        tiled = Upscaler(model, scale, UpscaleOptions(device="cpu", tile=tile, tile_pad=pad)).upscale(image).image
        differing = int((tiled != whole).sum())
        print(f"    pad {pad:3d}: {differing:7d} bytes differ of {whole.size} (max |diff| "
              f"{int(np.abs(tiled.astype(int) - whole).max())})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = os.environ.get("SRCLI_SHARED", Path(__file__).resolve().parents[1].parent / "shared")
    parser.add_argument("--shared", type=Path, default=Path(default))
    args = parser.parse_args()
    torch.manual_seed(0)
    hr = cv2.imread(str(args.shared / "datasets/benchmark/Set14/HR/baboon.png"))[:, :, ::-1]
    crop = np.ascontiguousarray(hr[100:196, 40:232])  # 96 x 192 LR pixels
    pads = [0, 2, 4, 8, 12, 16, 20, 24, 28, 32]
    for scale in (2, 4):
        sweep(build("edsr-baseline", scale=scale).eval(), scale, crop, 32, pads)
    vdsr, _ = load_checkpoint(args.shared / "weights/third_party/vdsr_291_epoch50.pth")
    sweep(vdsr, 2, crop[:64, :128], 24, [0, 1, 2, 4, 6, 8, 10])


if __name__ == "__main__":
    main()
