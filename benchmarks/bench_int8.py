"""What int8 gives on this CPU: OpenVINO fp32 against NNCF post-training int8 of the same converted network, Set5
PSNR (the paper's protocol) and speed side by side in one run; with --write, the files `--precision int8` ships.

    pip install nncf                                   # not an srcli dependency
    python benchmarks/bench_int8.py                    # the default model at x2, x3 and x4
    python benchmarks/bench_int8.py --scales 4 --images 100
    python benchmarks/bench_int8.py --write            # also (re)write weights/int8/ for the scales within the gate

Calibration: 48x48 LR patches (the papers' training patch) from the 291 training images (T91 + BSD200, never a
benchmark image), bicubic-downscaled as srcli trains, through the network's own input normalisation. Two
variants: every convolution int8, and the first and last two convolutions kept in fp32 (the output side,
which decides the last levels); 7-bit weights in both, so a CPU without VNNI cannot overflow. Speed: one
480x320 image upscaled in process, after a first compiling run.
The shared fixtures folder is $SRCLI_SHARED (default ../shared beside the repository).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from bench_coldstart import cpu_description  # noqa: E402

from srcli.datasets import dataset_spec, open_dataset  # noqa: E402
from srcli.engine.module import weights_digest  # noqa: E402
from srcli.engine.openvino import OpenVINORunner  # noqa: E402
from srcli.evaluate import SetResult, score_pairs, scoring_upscaler  # noqa: E402
from srcli.resize import imresize  # noqa: E402
from srcli.weights import resolve  # noqa: E402

PATCH = 48
GATE_DB = 0.05  # the most Set5 PSNR an int8 file may cost against fp32 to be shipped
INT8_DIR = HERE.parent / "weights" / "int8"


def shared_folder() -> Path:
    return Path(os.environ.get("SRCLI_SHARED", HERE.parent.parent / "shared"))


def calibration_patches(runner: OpenVINORunner, scale: int, pixel_max: float, images: int) -> list[np.ndarray]:
    """Up to two LR patches per training image, as the converted network takes them (normalised, NHWC)."""
    files = sorted(p for name in ("T91", "BSD200") for p in (shared_folder() / "datasets" / "train" / name).iterdir())
    random.Random(0).shuffle(files)
    patches = []
    for path in files[:images]:
        hr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if hr is None:
            continue
        lr = imresize(cv2.cvtColor(hr, cv2.COLOR_BGR2RGB).astype(np.float64) / 255, scale=1 / scale)
        height, width = lr.shape[:2]
        for top, left in ((0, 0), (height - PATCH, width - PATCH))[: 1 + (height >= 2 * PATCH)]:
            if top < 0 or left < 0:
                continue
            crop = torch.from_numpy(lr[top : top + PATCH, left : left + PATCH].copy()).permute(2, 0, 1)[None]
            patches.append(np.ascontiguousarray(runner.normalise(crop.float() * pixel_max).permute(0, 2, 3, 1).numpy()))
    return patches


def quantised(nncf: object, model: object, patches: list[np.ndarray], keep_ends: bool) -> object:
    """The model in int8. Weights use 7 bits in every layer (NNCF's overflow fix): a CPU without VNNI (AVX2 only)
    sums pairs of u8 x s8 products in 16 bits, which 8-bit weights can overflow; measured on Set5 it cost x3
    0.006 dB more and x4 0.004 dB less than 8 bits."""
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix

    options = {"advanced_parameters": AdvancedQuantizationParameters(overflow_fix=OverflowFix.ENABLE)}
    if keep_ends:
        convolutions = [op.get_friendly_name() for op in model.get_ordered_ops() if op.get_type_name() == "Convolution"]
        options["ignored_scope"] = nncf.IgnoredScope(names=[convolutions[0], *convolutions[-2:]])
    return nncf.quantize(model, nncf.Dataset(patches), subset_size=len(patches), fast_bias_correction=True, **options)


def measure(upscaler: object, dataset: object, scale: int, image: np.ndarray) -> tuple[float, float]:
    """Set5 mean PSNR (Y, the paper's shave) and seconds per 480x320 upscale."""
    result = SetResult(dataset.name, scale, "int8-bench", "paper", False, reference=None)
    score_pairs(result, dataset.pairs(scale), len(dataset), upscaler)
    upscaler.upscale(image)  # compiles this shape
    started = time.perf_counter()
    upscaler.upscale(image)
    return float(np.mean([row.psnr for row in result.rows])), time.perf_counter() - started


def write(nncf: object, model: object, name: str, scale: int, digest: str, psnr: tuple[float, float],
          patches: int) -> dict:
    """Save the int8 network beside srcli's weights; its manifest record."""
    import openvino

    stem = f"{name.replace('-', '_')}_x{scale}_int8"
    INT8_DIR.mkdir(parents=True, exist_ok=True)
    openvino.save_model(model, str(INT8_DIR / f"{stem}.xml"), compress_to_fp16=False)
    files = {suffix: f"{stem}.{suffix}" for suffix in ("xml", "bin")}
    return {
        "model": name, "scale": scale, "weights_digest": digest, **files,
        **{f"{suffix}_sha256": hashlib.sha256((INT8_DIR / file).read_bytes()).hexdigest()
           for suffix, file in files.items()},
        "set5_psnr_fp32": round(psnr[0], 4), "set5_psnr_int8": round(psnr[1], 4),
        "made_with": f"openvino {openvino.get_version()}, nncf {nncf.__version__}",
        "calibration": f"{patches} 48x48 LR patches of T91 + BSD200; first and last two convolutions in fp32; "
                       "7-bit weights (overflow fix, for CPUs without VNNI)",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="srcli-mdsr-baseline")
    parser.add_argument("--scales", type=int, nargs="+", default=[2, 3, 4])
    parser.add_argument("--images", type=int, default=291, help="training images to take calibration patches from")
    parser.add_argument("--write", action="store_true", help=f"write weights/int8/ for scales costing <= {GATE_DB} dB")
    arguments = parser.parse_args()
    try:
        import nncf
    except ImportError:
        raise SystemExit("this benchmark needs NNCF: pip install nncf") from None
    if not (shared_folder() / "datasets" / "train").is_dir():
        raise SystemExit(f"{shared_folder()} has no datasets/train: set SRCLI_SHARED to the shared fixtures folder")
    dataset = open_dataset(dataset_spec("set5"), shared_folder() / "datasets")
    image = np.random.default_rng(0).integers(0, 256, (320, 480, 3), dtype=np.uint8)
    records = []
    print(f"{arguments.model}: OpenVINO fp32 vs NNCF int8   [{cpu_description()}; load {os.getloadavg()[0]:.1f}]")
    for scale in arguments.scales:
        resolved = resolve(arguments.model, scale, offline=True)
        upscaler = scoring_upscaler(resolved.model, scale, spec=resolved.spec, backend="openvino")
        runner = upscaler.runner
        fp32 = runner.model
        psnr, seconds = measure(upscaler, dataset, scale, image)
        print(f"  x{scale} fp32                     Set5 {psnr:7.3f} dB            480x320 {seconds:5.2f} s")
        patches = calibration_patches(runner, scale, resolved.spec.pixel_max, arguments.images)
        for keep_ends in (False, True):
            started = time.perf_counter()
            runner.use_model(quantised(nncf, fp32, patches, keep_ends))
            took = time.perf_counter() - started
            q_psnr, q_seconds = measure(upscaler, dataset, scale, image)
            label = "int8, ends fp32" if keep_ends else "int8, all convs"
            print(f"  x{scale} {label:24s} Set5 {q_psnr:7.3f} dB ({q_psnr - psnr:+.3f})  480x320 {q_seconds:5.2f} s "
                  f"(x{seconds / q_seconds:.2f})   {len(patches)} patches, quantised in {took:.0f} s")
            if arguments.write and keep_ends and psnr - q_psnr <= GATE_DB:
                records.append(write(nncf, runner.model, arguments.model, scale, weights_digest(resolved.model),
                                     (psnr, q_psnr), len(patches)))
    if arguments.write:
        (INT8_DIR / "manifest.json").write_text(json.dumps({"format": 1, "models": records}, indent=2) + "\n")
        print(f"wrote {INT8_DIR / 'manifest.json'}: " + ", ".join(f"x{r['scale']}" for r in records))


if __name__ == "__main__":
    main()
