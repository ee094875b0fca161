"""Speed and memory of the engine against the plain way of running the same weights, side by side.

    python benchmarks/bench_upscale.py            # CPU: MP/s, conv GFLOP/s, ensemble ratio, peak RSS 4000x3000 x4
    python benchmarks/bench_upscale.py --quick    # the same with small images (a minute)
    python benchmarks/bench_upscale.py --cuda     # adds fp32/fp16/bf16 MP/s and an out-of-memory back-off demo
    python benchmarks/bench_upscale.py --rss-size 2000x1500   # another size for the peak-memory run

"Plain" is how the paper's code runs a model: NCHW fp32, the whole image in one forward, nothing folded,
`model(x)` under no_grad. Both runs see the same pixels. Weights are random (seeded): speed does not
depend on their values. Timings are the best of a few runs; the machine's load is printed beside them.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from srcli.engine import UpscaleOptions, Upscaler
from srcli.models import build


def best_time(run: Callable[[], object], repeats: int, synchronize: bool = False) -> float:
    run()  # warm-up: oneDNN/cuDNN primitive creation
    best = float("inf")
    for _ in range(repeats):
        if synchronize:
            torch.cuda.synchronize()
        start = time.perf_counter()
        run()
        if synchronize:
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best


def model_flops(model: nn.Module, x: torch.Tensor) -> float:
    """Multiply-adds x 2 of every conv in one forward, counted with hooks on the unfolded model."""
    total = 0.0

    def count(module: nn.Conv2d, _inputs: object, output: torch.Tensor) -> None:
        nonlocal total
        k = module.kernel_size[0] * module.kernel_size[1]
        total += 2.0 * output.numel() * module.in_channels * k / module.groups

    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        model(x)
    for hook in hooks:
        hook.remove()
    return total


def conv_gflops(repeats: int, size: int) -> float:
    """The machine's conv throughput: one 64->64 3x3 conv on a big tensor, best of NCHW and channels_last."""
    conv = nn.Conv2d(64, 64, 3, padding=1)
    x = torch.randn(1, 64, size, size)
    flops = 2.0 * 64 * 64 * 9 * size * size
    best = 0.0
    with torch.inference_mode():
        for layout in (torch.contiguous_format, torch.channels_last):
            c, xx = conv.to(memory_format=layout), x.contiguous(memory_format=layout)
            best = max(best, flops / best_time(lambda c=c, xx=xx: c(xx), repeats) / 1e9)
    return best


def random_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def cpu_section(quick: bool, repeats: int) -> None:
    print(f"threads {torch.get_num_threads()}, load average {os.getloadavg()}")
    conv = conv_gflops(repeats, 256 if quick else 512)
    print(f"conv 64->64 3x3 throughput: {conv:.1f} GFLOP/s\n")
    cases = [("edsr-baseline", 2, 96 if quick else 256), ("edsr-baseline", 4, 64 if quick else 192),
             ("edsr", 4, 24 if quick else 48)]
    print(f"{'model':<18}{'LR px':>9}{'plain MP/s':>12}{'srcli MP/s':>12}{'speed-up':>10}{'GFLOP/s':>9}{'% conv':>8}")
    for preset, scale, side in cases:
        torch.manual_seed(0)
        model = build(preset, scale=scale).eval()
        image = random_image(side, side)
        x = torch.from_numpy(image).permute(2, 0, 1)[None].float().contiguous()
        flops = model_flops(model, x)
        upscaler = Upscaler(model, scale, UpscaleOptions(device="cpu"))

        def plain(model: nn.Module = model, x: torch.Tensor = x) -> None:
            with torch.no_grad():
                model(x).clamp(0, 255).round().byte()

        plain_s = best_time(plain, repeats)
        engine_s = best_time(lambda u=upscaler, i=image: u.upscale(i), repeats)
        megapixels = side * side * scale * scale / 1e6
        gflops = flops / engine_s / 1e9
        print(f"{preset + ' x' + str(scale):<18}{f'{side}x{side}':>9}{megapixels / plain_s:>12.4f}"
              f"{megapixels / engine_s:>12.4f}{plain_s / engine_s:>9.2f}x{gflops:>9.1f}{100 * gflops / conv:>7.0f}%")
    torch.manual_seed(0)
    model = build("edsr-baseline", scale=2).eval()
    side = 64 if quick else 128
    image = random_image(side, side)
    single = best_time(lambda: Upscaler(model, 2, UpscaleOptions(device="cpu")).upscale(image), repeats)
    ensemble = best_time(
        lambda: Upscaler(model, 2, UpscaleOptions(device="cpu", ensemble=True)).upscale(image), max(1, repeats - 1)
    )
    print(f"\nensemble x8 cost (edsr-baseline x2, {side}x{side}): {ensemble / single:.2f}x a plain upscale")
    print(f"load average after: {os.getloadavg()}")


def peak_rss(width: int, height: int) -> None:
    """In a fresh process: upscale a width x height photo x4 with edsr-baseline, report ru_maxrss."""
    code = (
        "import resource, time, numpy as np, torch\n"
        "from srcli.engine import Upscaler, UpscaleOptions\n"
        "from srcli.models import build\n"
        "torch.manual_seed(0)\n"
        f"image = np.random.default_rng(0).integers(0, 256, ({height}, {width}, 3), dtype=np.uint8)\n"
        "upscaler = Upscaler(build('edsr-baseline', scale=4).eval(), 4, UpscaleOptions(device='cpu'))\n"
        "start = time.perf_counter()\n"
        "out, plan = upscaler.upscale(image)\n"
        "seconds = time.perf_counter() - start\n"
        "rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20\n"
        "print(f'{out.shape[1]}x{out.shape[0]} in {seconds:.0f} s, plan {plan}, peak RSS {rss:.2f} GB')\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")])}
    print(f"\npeak memory, edsr-baseline x4 of a {width}x{height} image (target < 3 GB):")
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False)
    print("  " + (result.stdout.strip() or result.stderr.strip()[-2000:]))


def cuda_section(repeats: int) -> None:
    device = torch.device("cuda")
    print(f"\nCUDA: {torch.cuda.get_device_name(device)}")
    print(f"{'model':<18}{'LR px':>9}{'fp32 MP/s':>12}{'fp16 MP/s':>12}{'bf16 MP/s':>12}{'plain fp32':>12}")
    for preset, scale, side in (("edsr-baseline", 2, 1024), ("edsr-baseline", 4, 512), ("edsr", 4, 256)):
        torch.manual_seed(0)
        model = build(preset, scale=scale).eval()
        image = random_image(side, side)
        megapixels = side * side * scale * scale / 1e6
        rates = []
        for precision in ("fp32", "fp16", "bf16"):
            upscaler = Upscaler(model, scale, UpscaleOptions(device="cuda", precision=precision))
            rates.append(megapixels / best_time(lambda u=upscaler, i=image: u.upscale(i), repeats, synchronize=True))
        plain_model = model.to(device)
        x = torch.from_numpy(image).permute(2, 0, 1)[None].float().to(device)

        def plain(m: nn.Module = plain_model, x: torch.Tensor = x) -> None:
            with torch.no_grad():
                m(x).clamp(0, 255).round().byte().cpu()

        plain_rate = megapixels / best_time(plain, repeats, synchronize=True)
        model.cpu()
        print(f"{preset + ' x' + str(scale):<18}{f'{side}x{side}':>9}" + "".join(f"{r:>12.2f}" for r in rates)
              + f"{plain_rate:>12.2f}")
    # out-of-memory back-off: ask for the whole image in one forward when it cannot fit
    torch.manual_seed(0)
    model = build("edsr-baseline", scale=4).eval()
    upscaler = Upscaler(model, 4, UpscaleOptions(device="cuda", tile=0))
    free = torch.cuda.mem_get_info(device)[0]
    per_pixel = upscaler.bytes_per_window(1_000_000) / 1e6
    side = int(np.sqrt(2.0 * free / per_pixel))
    image = random_image(side, side)
    start = time.perf_counter()
    out, plan = upscaler.upscale(image)
    torch.cuda.synchronize()
    print(f"\nOOM back-off: whole {side}x{side} -> {out.shape[1]}x{out.shape[0]} asked on {free / 2**30:.0f} GiB free: "
          f"{plan} in {time.perf_counter() - start:.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small images: a check in about a minute")
    parser.add_argument("--cuda", action="store_true", help="also measure CUDA precisions and OOM back-off")
    parser.add_argument("--skip-cpu", action="store_true", help="only the peak-memory and CUDA sections")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rss-size", default=None, help="WxH of the peak-memory run (4000x3000; quick: 1000x750)")
    args = parser.parse_args()
    if not args.skip_cpu:
        cpu_section(args.quick, args.repeats)
    width, height = map(int, (args.rss_size or ("1000x750" if args.quick else "4000x3000")).split("x"))
    peak_rss(width, height)
    if args.cuda:
        cuda_section(args.repeats)
    print(f"\nthis process: peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GB")


if __name__ == "__main__":
    main()
