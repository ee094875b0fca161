"""Training speed: srcli's loop (real patches from decoded images) against a bare PyTorch loop (synthetic tensors).

Same model (EDSR-baseline x2 by default), batch, patch, optimiser, loss and precision on both sides; the bare
loop is the ceiling, srcli's target is >= 0.9x of it.

    PYTHONPATH=. python benchmarks/bench_train.py                      # CPU, fp32
    PYTHONPATH=. python benchmarks/bench_train.py --device cuda        # CUDA, bf16 autocast, channels_last
    PYTHONPATH=. python benchmarks/bench_train.py --device cuda --amp fp16 --recipe vdsr
    PYTHONPATH=. python benchmarks/bench_train.py --data ../shared/datasets/train/T91

Without --data it writes a few synthetic 480x320 images to a temporary folder (speed does not depend on
image content).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from srcli.training import Trainer, make_config
from srcli.training.events import Logged, TrainEvent


def synthetic_images(folder: Path, count: int = 24) -> Path:
    rng = np.random.default_rng(0)
    for index in range(count):
        small = rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)
        image = cv2.resize(small, (480, 320), interpolation=cv2.INTER_CUBIC)
        cv2.imwrite(str(folder / f"{index:03d}.png"), image)
    return folder


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bare_loop(args: argparse.Namespace, device: torch.device, amp: torch.dtype | None) -> float:
    """The ceiling: the same network, optimiser and loss on tensors already on the device."""
    config = make_config(args.recipe, scales=[args.scale] if args.recipe != "vdsr" else None,
                         batch=args.batch, patch=args.patch)
    torch.manual_seed(0)
    trainer = Trainer(config)
    model = trainer._build_model().to(device).to(memory_format=torch.channels_last)
    optimizer = trainer._optimizer(model)
    if args.recipe == "vdsr":
        inputs = torch.rand(config.batch, 1, config.patch, config.patch, device=device)
        targets = torch.rand_like(inputs)
        scale = None
    else:
        scale = config.scales[0]
        inputs = torch.rand(config.batch, 3, config.patch, config.patch, device=device) * 255
        targets = torch.rand(config.batch, 3, config.patch * scale, config.patch * scale, device=device) * 255
        inputs = inputs.contiguous(memory_format=torch.channels_last)

    def one_step() -> None:
        # The loop anyone would write first: no loss scaling, no clipping (a ceiling for srcli's loop).
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            output = model(inputs, scale)
        loss = trainer._loss(output.float(), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(args.warmup):
        one_step()
    sync(device)
    start = time.perf_counter()
    for _ in range(args.steps):
        one_step()
    sync(device)
    return args.steps / (time.perf_counter() - start)


def srcli_loop(args: argparse.Namespace, data: Path, out: Path) -> float:
    """srcli's Trainer on real patches; the median of its own log windows, the first (warm-up) one dropped."""
    speeds: list[float] = []
    window = args.steps // 4
    config = make_config(
        args.recipe, scales=[args.scale] if args.recipe != "vdsr" else None, batch=args.batch, patch=args.patch,
        data=[str(data)], out=str(out), steps=5 * window, log_every=window,
        checkpoint_every=10**9, device=args.device, amp=args.amp, workers=args.workers,
        cache_dir=str(out.parent / "cache"),
    )
    def on_event(event: TrainEvent) -> None:
        if isinstance(event, Logged):
            speeds.append(event.steps_per_s)

    Trainer(config, on_event=on_event).run()
    return statistics.median(speeds[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default="edsr-baseline")
    parser.add_argument("--scale", type=int, default=2)
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--patch", type=int, default=None)
    parser.add_argument("--steps", type=int, default=40, help="timed steps (after warm-up)")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--amp", default="auto")
    parser.add_argument("--workers", type=int, default=-1)
    parser.add_argument("--data", type=Path, default=None)
    args = parser.parse_args()
    device = torch.device(args.device if args.device != "cuda" else "cuda:0")
    amp_name = args.amp if args.amp != "auto" else ("bf16" if device.type == "cuda" else "none")
    amp = {"bf16": torch.bfloat16, "fp16": torch.float16, "none": None}[amp_name]
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data or synthetic_images(Path(tmp))
        args.steps = max(4, args.steps - args.steps % 4)
        ceiling = bare_loop(args, device, amp)
        ours = srcli_loop(args, data, Path(tmp) / "run")
    result = {
        "recipe": args.recipe, "scale": args.scale, "device": str(device), "amp": amp_name,
        "torch": torch.__version__, "threads": torch.get_num_threads(),
        "bare_steps_per_s": round(ceiling, 3), "srcli_steps_per_s": round(ours, 3), "ratio": round(ours / ceiling, 3),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
