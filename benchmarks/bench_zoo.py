"""A foreign (spandrel) model through srcli's engine against spandrel's own whole-image call, side by side.

    python benchmarks/bench_zoo.py              # Real-ESRGAN compact x4 at 480x320, ESRGAN (RRDBNet) x4 at 128x128
    python benchmarks/bench_zoo.py --quick      # smaller images, fewer repeats

Both runs use the same file's weights (seeded random: speed does not depend on their values), fp32 on the
CPU, and the same pixels; srcli's time includes its quantisation to 8-bit, spandrel's its clamp. Timings
are the best of a few runs after a warm-up; the load average is printed beside them. Needs the zoo extra.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from bench_upscale import best_time, random_image

from srcli import zoo
from srcli.engine import UpscaleOptions, Upscaler
from srcli.weights import load_checkpoint


def _models() -> dict[str, torch.nn.Module]:
    from spandrel.architectures.Compact import Compact
    from spandrel.architectures.ESRGAN import ESRGAN

    torch.manual_seed(0)
    return {
        "compact x4 (64 feat, 16 conv)": Compact(num_in_ch=3, num_out_ch=3, num_feat=64, num_conv=16, upscale=4),
        "ESRGAN x4 (RRDBNet 23 blocks)": ESRGAN(in_nc=3, out_nc=3, num_filters=64, num_blocks=23, scale=4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller images and fewer repeats")
    arguments = parser.parse_args()
    repeats = 1 if arguments.quick else 3
    sizes = {"compact x4 (64 feat, 16 conv)": (160, 240) if arguments.quick else (320, 480),
             "ESRGAN x4 (RRDBNet 23 blocks)": (48, 48) if arguments.quick else (128, 128)}
    spandrel = zoo.spandrel()
    print(f"torch {torch.__version__}, spandrel {spandrel.__version__}, {torch.get_num_threads()} threads, "
          f"load average {os.getloadavg()}")
    print(f"{'model':<32}{'image':>10}{'load s':>8}{'spandrel s':>12}{'srcli s':>10}{'speed-up':>10}{'max diff':>10}")
    with tempfile.TemporaryDirectory() as folder:
        for name, network in _models().items():
            path = Path(folder) / "model.pth"
            torch.save(network.state_dict(), path)
            height, width = sizes[name]
            image = random_image(height, width)
            started = time.perf_counter()
            model, spec = load_checkpoint(path)
            upscaler = Upscaler(model, spec.scales[0], UpscaleOptions(device="cpu"), spec=spec)
            load_seconds = time.perf_counter() - started
            descriptor = spandrel.ModelLoader().load_from_file(str(path)).eval()
            x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255.0

            def theirs(descriptor=descriptor, x=x) -> np.ndarray:
                y = descriptor(x)
                return np.rint(y[0].permute(1, 2, 0).numpy() * 255.0).astype(np.uint8)

            their_seconds = best_time(theirs, repeats)
            our_seconds = best_time(lambda u=upscaler, i=image: u.upscale(i), repeats)
            difference = np.abs(upscaler.upscale(image).image.astype(int) - theirs().astype(int)).max()
            print(f"{name:<32}{f'{width}x{height}':>10}{load_seconds:>8.1f}{their_seconds:>12.2f}{our_seconds:>10.2f}"
                  f"{their_seconds / our_seconds:>9.2f}x{difference:>10}")
    print(f"load average after: {os.getloadavg()}")
    print("load s: srcli's load of the file, including the receptive-field probe (once per run)")


if __name__ == "__main__":
    main()
