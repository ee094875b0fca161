"""Make README's "Real photos" before/after with srcli itself: a Set14 image, MATLAB-bicubic downscaled, saved as
a quality-30 JPEG, upscaled by the default model, by the default model after a `--pre` restorer, and by a
real-world upscaler (`--weights`).

    python docs/real_photos.py HR.png [--scale 2] [--pre FILE] [--real FILE] [--crop Y X SIZE] [--out PNG]

Prints PSNR (Y, shave = scale) of each against the HR; writes the side-by-side crop (JPEG | default | ... | HR,
each nearest-enlarged 2x so the pixels show) with srcli's own writer.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

from srcli.imageio import read_image, write_image
from srcli.metrics import psnr
from srcli.resize import downscale, imresize, modcrop


def _upscale(source: Path, target: Path, scale: int, *extra: str) -> np.ndarray:
    command = [sys.executable, "-m", "srcli", "upscale", str(source), "-o", str(target), "-s", str(scale),
               "--overwrite", "--device", "cpu", *extra]
    subprocess.run(command, check=True)
    return read_image(target)


def _panel(label: str, image: np.ndarray, y: int, x: int, size: int) -> np.ndarray:
    crop = cv2.resize(image[y : y + size, x : x + size], (size * 2, size * 2), interpolation=cv2.INTER_NEAREST)
    bar = np.full((20, size * 2, 3), 255, np.uint8)
    cv2.putText(bar, label, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([bar, crop])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("hr", type=Path)
    parser.add_argument("--scale", type=int, default=2)
    parser.add_argument("--pre", type=Path, help="a 1x restorer file, run before the default model")
    parser.add_argument("--real", type=Path, help="a real-world upscaler file of this scale (--weights)")
    parser.add_argument("--crop", type=int, nargs=3, default=(200, 220, 120), metavar=("Y", "X", "SIZE"))
    parser.add_argument("--out", type=Path, default=Path("docs/real-photos.png"))
    args = parser.parse_args()
    scale = args.scale
    hr = modcrop(read_image(args.hr)[..., :3], scale)
    with tempfile.TemporaryDirectory() as folder:
        jpeg_path = Path(folder) / "photo_q30.jpg"
        write_image(jpeg_path, downscale(hr, scale), quality=30)
        jpeg = read_image(jpeg_path)
        results = {f"q30 JPEG, bicubic x{scale}": imresize(jpeg, scale),
                   "default model": _upscale(jpeg_path, Path(folder) / "default.png", scale)}
        if args.pre:
            results[f"--pre {args.pre.stem}, then default"] = _upscale(
                jpeg_path, Path(folder) / "pre.png", scale, "--pre", str(args.pre))
        if args.real:
            results[f"--weights {args.real.stem}"] = _upscale(
                jpeg_path, Path(folder) / "real.png", scale, "--weights", str(args.real))
    for name, image in results.items():
        print(f"{name:40s} PSNR(Y) {psnr(image, hr, shave=scale, y_channel=True):.2f} dB")
    y, x, size = args.crop
    gap = np.full((size * 2 + 20, 6, 3), 255, np.uint8)
    panels = []
    for label, image in [*results.items(), ("HR", hr)]:
        panels += [_panel(label, image, y, x, size), gap]
    write_image(args.out, np.concatenate(panels[:-1], axis=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
