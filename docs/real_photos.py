"""Make README's "Real photos" before/after with srcli itself: a Set14 image, MATLAB-bicubic downscaled x2, saved
as a quality-30 JPEG, upscaled x2 by the default model with and without `--pre` (a grey DnCNN, run on luma).

    python docs/real_photos.py HR.png DNCNN.pth [--crop Y X SIZE] [--out docs/real-photos.png]

Prints PSNR (Y, shave 2) of each against the HR; writes the side-by-side crop (JPEG | default | --pre | HR, each
nearest-enlarged 2x so the pixels show) with srcli's own writer.
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


def _upscale(source: Path, target: Path, *extra: str) -> np.ndarray:
    command = [sys.executable, "-m", "srcli", "upscale", str(source), "-o", str(target), "-s", "2", "--overwrite",
               "--device", "cpu", *extra]
    subprocess.run(command, check=True)
    return read_image(target)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("hr", type=Path)
    parser.add_argument("dncnn", type=Path)
    parser.add_argument("--crop", type=int, nargs=3, default=(200, 220, 120), metavar=("Y", "X", "SIZE"))
    parser.add_argument("--out", type=Path, default=Path("docs/real-photos.png"))
    args = parser.parse_args()
    hr = modcrop(read_image(args.hr)[..., :3], 2)
    with tempfile.TemporaryDirectory() as folder:
        jpeg_path = Path(folder) / "photo_q30.jpg"
        write_image(jpeg_path, downscale(hr, 2), quality=30)
        jpeg = read_image(jpeg_path)
        results = {
            "bicubic": imresize(jpeg, 2),
            "default": _upscale(jpeg_path, Path(folder) / "default.png"),
            "--pre dncnn": _upscale(jpeg_path, Path(folder) / "pre.png", "--pre", str(args.dncnn)),
        }
    for name, image in results.items():
        print(f"{name:12s} PSNR(Y) {psnr(image, hr, shave=2, y_channel=True):.2f} dB")
    y, x, size = args.crop
    crops = {"q30 JPEG, bicubic x2": imresize(jpeg, 2), "default model": results["default"],
             "--pre DnCNN, then default": results["--pre dncnn"], "HR": hr}
    gap = np.full((size * 2 + 20, 6, 3), 255, np.uint8)
    panels = []
    for label, image in crops.items():
        crop = cv2.resize(image[y : y + size, x : x + size], (size * 2, size * 2), interpolation=cv2.INTER_NEAREST)
        bar = np.full((20, size * 2, 3), 255, np.uint8)
        cv2.putText(bar, label, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (0, 0, 0), 1, cv2.LINE_AA)
        panels += [np.concatenate([bar, crop]), gap]
    write_image(args.out, np.concatenate(panels[:-1], axis=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
