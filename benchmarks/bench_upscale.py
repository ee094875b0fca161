"""Speed and memory of the engine's backends against the plain way of running the same weights, side by side.

    python benchmarks/bench_upscale.py            # CPU: whole runs, model-only, ensemble, peak RSS 4000x3000 x4
    python benchmarks/bench_upscale.py --quick    # the same with small images (a few minutes)
    python benchmarks/bench_upscale.py --cuda     # adds fp32/fp16/bf16 MP/s and an out-of-memory back-off demo
    python benchmarks/bench_upscale.py --rss-size 2000x1500   # another size for the peak-memory run
    python benchmarks/bench_upscale.py --sizes 480x320 --ensemble-runs --skip-rss   # --ensemble, whole runs

Whole runs: EDSR-baseline x4 with random (seeded) weights saved as a checkpoint in the official layout, each
run a fresh process timed from start to exit, with its peak RSS: `srcli upscale --backend torch`,
`srcli upscale --backend openvino` (its cache filled first by a timed converting run on a small image) and
"plain", the paper's code path (EDSR-PyTorch: NCHW fp32, nothing folded, `model(x)` under no_grad; over 160k LR
pixels its `--chop`: quarters with a 10 px shave, 4 per forward). The variants are interleaved, round after
round, so the machine's load hits them alike; medians (and best) are printed with the load average. Model-only:
the two backends' forward on one 480x320 input against one channels_last 64->64 3x3 conv on the same input,
interleaved in one process.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run from a checkout without installing

from srcli.engine import UpscaleOptions, Upscaler  # noqa: E402
from srcli.models import build  # noqa: E402
from srcli.models.folding import Conv, multiply_adds_per_pixel  # noqa: E402

BACKENDS = ("torch", "openvino")


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


def folded_flops(upscaler: Upscaler, pixels: int) -> float:
    """Multiply-adds x 2 of what the folded network runs (the composed tail's edge strips not counted)."""
    net = upscaler.runner.network
    features = 3
    trunk = multiply_adds_per_pixel(net.trunk, features)
    features = next(s.weight.shape[0] for s in reversed(net.trunk) if isinstance(s, Conv))
    return 2.0 * pixels * (trunk + multiply_adds_per_pixel(net.tail, features))


def random_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


PLAIN = """
import sys, cv2, numpy as np, torch
from srcli.models import load_state_dict
weights, source, target = sys.argv[1:4]
model = load_state_dict(torch.load(weights, map_location="cpu", weights_only=True)).eval()

def chop(x, shave=10, min_size=160000):  # EDSR-PyTorch's forward_chop (one process, 4 patches per forward)
    h, w = x.shape[2:]
    hh, ww = h // 2 + shave, w // 2 + shave
    parts = [x[..., :hh, :ww], x[..., :hh, w - ww:], x[..., h - hh:, :ww], x[..., h - hh:, w - ww:]]
    if hh * ww < min_size:
        outs = list(model(torch.cat(parts)).split(1))
    else:
        outs = [chop(p, shave, min_size) for p in parts]
    s = model.scale
    h, w, hh, ww = s * h, s * w, s * hh, s * ww
    half_h, half_w = h // 2, w // 2
    y = x.new_empty(1, 3, h, w)
    y[..., :half_h, :half_w] = outs[0][..., :half_h, :half_w]
    y[..., :half_h, half_w:] = outs[1][..., :half_h, ww - w + half_w:]
    y[..., half_h:, :half_w] = outs[2][..., hh - h + half_h:, :half_w]
    y[..., half_h:, half_w:] = outs[3][..., hh - h + half_h:, ww - w + half_w:]
    return y

image = cv2.imread(source, cv2.IMREAD_COLOR)[:, :, ::-1]
x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float()
with torch.no_grad():
    y = model(x) if x.shape[2] * x.shape[3] < 160000 else chop(x)
out = y[0].clamp(0, 255).round().byte().permute(1, 2, 0).numpy()
cv2.imwrite(target, np.ascontiguousarray(out[:, :, ::-1]))
"""


# Linux keeps a process's peak RSS across fork and exec: a child started by this process (grown to GBs by the
# model-only section) would report at least this process's peak. A small launcher starts each timed command, so
# its peak is its own, and reports (exit code, wall s, CPU s, peak KB) from os.wait4.
LAUNCHER = """
import json, os, subprocess, sys, time
start = time.perf_counter()
child = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
_, status, usage = os.wait4(child.pid, 0)
wall = time.perf_counter() - start
sys.stderr.write(child.stderr.read().decode()[-1000:])
print(json.dumps([os.waitstatus_to_exitcode(status), wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss]))
"""


def timed_process(command: list[str], env: dict[str, str]) -> tuple[float, float, float]:
    """(wall seconds, CPU seconds, peak RSS GB) of one fresh process, from os.wait4 in a small launcher."""
    result = subprocess.run([sys.executable, "-c", LAUNCHER, *command], cwd=REPO, env=env, capture_output=True,
                            text=True, check=False)
    if result.returncode != 0 or not result.stdout.strip():
        raise RuntimeError(f"{command[:4]} launcher failed: {result.stderr[-1000:]}")
    code, wall, cpu, peak_kb = json.loads(result.stdout.strip().splitlines()[-1])
    if code != 0:
        raise RuntimeError(f"{command[:4]} failed ({code}): {result.stderr[-1000:]}")
    return wall, cpu, peak_kb / 2**20


def whole_runs(sizes: list[tuple[int, int]], repeats: int, folder: Path, ensemble: bool = False) -> None:
    torch.manual_seed(0)
    weights = folder / "edsr_baseline_x4.pt"
    torch.save(build("edsr-baseline", scale=4).state_dict(), weights)
    env = {**os.environ, "SRCLI_CACHE": str(folder / "cache"), "PYTHONPATH": str(REPO)}
    print(f"whole runs, edsr-baseline x4 (random weights), fresh process each, {repeats} interleaved rounds")
    print(f"load average before: {os.getloadavg()}")
    tiny = folder / "tiny.png"
    cv2.imwrite(str(tiny), random_image(48, 64))
    convert = [sys.executable, "-m", "srcli", "upscale", str(tiny), "--weights", str(weights), "--backend",
               "openvino", "-o", str(folder / "tiny_x4.png"), "--overwrite", "--border", "zero"]
    first, cached = timed_process(convert, env), timed_process(convert, env)
    print(f"openvino, a 64x48 image: first run (converts) {first[0]:.2f} s, second run (cached) {cached[0]:.2f} s")
    for width, height in sizes:
        source = folder / f"in_{width}x{height}.png"
        rng = np.random.default_rng(0)  # smooth random content: a real-looking photo costs the same
        small = rng.integers(0, 256, (height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8)
        cv2.imwrite(str(source), cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC))
        commands = {"plain": [sys.executable, "-c", PLAIN, str(weights), str(source), str(folder / "plain.png")]}
        for backend in BACKENDS:
            commands[backend] = [sys.executable, "-m", "srcli", "upscale", str(source), "--weights", str(weights),
                                 "--backend", backend, "-o", str(folder / f"{backend}.png"), "--overwrite",
                                 "--border", "zero"]  # the plain run's zero padding: the same pixels and work
        if ensemble:  # what a user waits for with --ensemble, against the same backend's plain upscale
            for b in BACKENDS:
                own = [str(folder / f"{b}_ensemble.png") if part == str(folder / f"{b}.png") else part
                       for part in commands[b]]
                commands[f"{b} --ensemble"] = [*own, "--ensemble"]
        runs: dict[str, list[tuple[float, float, float]]] = {name: [] for name in commands}
        for _ in range(repeats):
            for name, command in commands.items():
                runs[name].append(timed_process(command, env))
        plain = statistics.median(r[0] for r in runs["plain"])
        print(f"\n{width}x{height} -> x4   {'median s':>9}{'best s':>8}{'CPU s':>7}{'peak GB':>8}{'vs plain':>9}")
        for name, results in runs.items():
            wall = statistics.median(r[0] for r in results)
            cpu = statistics.median(r[1] for r in results)
            print(f"  {name:<16}{wall:>9.2f}{min(r[0] for r in results):>8.2f}{cpu:>7.1f}"
                  f"{max(r[2] for r in results):>8.2f}{plain / wall:>8.2f}x")
        for backend in BACKENDS if ensemble else ():
            ratio = statistics.median(r[0] for r in runs[f"{backend} --ensemble"]) / statistics.median(
                r[0] for r in runs[backend])
            print(f"  {backend} --ensemble, whole process: {ratio:.2f}x its plain upscale")
        levels = [cv2.imread(str(folder / f"{name}.png")).astype(int) for name in ("plain", *BACKENDS)]
        print(f"  max level difference: torch vs plain {np.abs(levels[1] - levels[0]).max()}, "
              f"openvino vs torch {np.abs(levels[2] - levels[1]).max()}")
    print(f"load average after: {os.getloadavg()}")


CONV_SAMPLES = 10  # the single conv takes ~30 ms: the best of 10 per round is its best, a strict reference


def model_only(repeats: int, height: int = 320, width: int = 480) -> None:
    """The network alone on one input: both backends and the single-conv reference, interleaved."""
    torch.manual_seed(0)
    model = build("edsr-baseline", scale=4).eval()
    x = torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(0)) * 255
    flops = model_flops(model, x)
    upscalers = {b: Upscaler(model, 4, UpscaleOptions(device="cpu", backend=b, tile=0)) for b in BACKENDS}
    executed = folded_flops(upscalers["torch"], height * width)
    conv = nn.Conv2d(64, 64, 3, padding=1).to(memory_format=torch.channels_last)
    features = torch.randn(1, 64, height, width).contiguous(memory_format=torch.channels_last)
    conv_flops = 2.0 * 64 * 64 * 9 * height * width
    runs: dict[str, Callable[[], object]] = {b: (lambda u=u: u.network_forward(x)) for b, u in upscalers.items()}
    runs["conv 64->64"] = lambda: conv(features)
    times: dict[str, list[float]] = {name: [] for name in runs}
    with torch.inference_mode():
        for run in runs.values():
            run()  # warm-up: primitive creation
        for _ in range(repeats):
            for name, run in runs.items():
                for _ in range(CONV_SAMPLES if name.startswith("conv") else 1):  # a short run: more samples
                    start = time.perf_counter()
                    run()
                    times[name].append(time.perf_counter() - start)
    rate = {name: (conv_flops if name.startswith("conv") else executed) / min(t) / 1e9 for name, t in times.items()}
    print(f"\nmodel only, edsr-baseline x4 on {width}x{height} (the paper's network: {flops / 1e9:.0f} GFLOP; as "
          f"folded, what runs: {executed / 1e9:.0f} GFLOP), best of {repeats} interleaved (the conv: of "
          f"{CONV_SAMPLES} x {repeats}), load {os.getloadavg()}")
    for name, t in times.items():
        print(f"  {name:<12} best {min(t):.3f} s  median {statistics.median(t):.3f} s  {rate[name]:6.1f} GFLOP/s  "
              f"{100 * rate[name] / rate['conv 64->64']:5.1f}% of the conv")
    print(f"  openvino / torch speed: {rate['openvino'] / rate['torch']:.2f}x; GFLOP/s count what runs; against the "
          f"paper's count the plain path's would be {flops / executed:.2f}x these")


def ensemble_cost(repeats: int, side: int) -> None:
    torch.manual_seed(0)
    model = build("edsr-baseline", scale=2).eval()
    image = random_image(side, side)
    for backend in BACKENDS:
        single = Upscaler(model, 2, UpscaleOptions(device="cpu", backend=backend))
        ensemble = Upscaler(model, 2, UpscaleOptions(device="cpu", backend=backend, ensemble=True))
        times = {"single": [], "ensemble": []}
        single.upscale(image), ensemble.upscale(image)
        for _ in range(repeats):
            for name, upscaler in (("single", single), ("ensemble", ensemble)):
                start = time.perf_counter()
                upscaler.upscale(image)
                times[name].append(time.perf_counter() - start)
        print(f"ensemble x8 cost ({backend}, edsr-baseline x2, {side}x{side}): "
              f"{min(times['ensemble']) / min(times['single']):.2f}x a plain upscale")


def cpu_section(quick: bool, repeats: int, sizes: list[tuple[int, int]], ensemble: bool) -> None:
    print(f"threads {torch.get_num_threads()}, load average {os.getloadavg()}")
    with tempfile.TemporaryDirectory() as folder:
        whole_runs(sizes, repeats, Path(folder), ensemble)
    model_only(max(repeats, 3), *((160, 240) if quick else (320, 480)))
    print()
    ensemble_cost(repeats, 64 if quick else 128)
    print(f"load average after: {os.getloadavg()}")


def peak_rss(width: int, height: int, backend: str) -> None:
    """In a fresh process: upscale a width x height photo x4 with edsr-baseline, report ru_maxrss."""
    code = (
        "import os, resource, time, numpy as np, torch\n"
        "from srcli.engine import Upscaler, UpscaleOptions\n"
        "from srcli.models import build\n"
        "torch.manual_seed(0)\n"
        f"image = np.random.default_rng(0).integers(0, 256, ({height}, {width}, 3), dtype=np.uint8)\n"
        "model = build('edsr-baseline', scale=4).eval()\n"
        f"upscaler = Upscaler(model, 4, UpscaleOptions(device='cpu', backend='{backend}'))\n"
        "start = time.perf_counter()\n"
        "out, plan = upscaler.upscale(image)\n"
        "seconds = time.perf_counter() - start\n"
        "status = open('/proc/self/status').read() if os.path.exists('/proc/self/status') else ''\n"
        "hwm = [int(line.split()[1]) for line in status.splitlines() if line.startswith('VmHWM:')]\n"
        "rss = (hwm[0] if hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) / 2**20\n"
        "print(f'{out.shape[1]}x{out.shape[0]} in {seconds:.0f} s, plan {plan}, peak RSS {rss:.2f} GB')\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")])}
    print(f"\npeak memory, edsr-baseline x4 of a {width}x{height} image, {backend} (target < 3 GB):")
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
    parser.add_argument("--quick", action="store_true", help="small images: a check in a few minutes")
    parser.add_argument("--cuda", action="store_true", help="also measure CUDA precisions and OOM back-off")
    parser.add_argument("--skip-cpu", action="store_true", help="only the peak-memory and CUDA sections")
    parser.add_argument("--skip-rss", action="store_true", help="no peak-memory run")
    parser.add_argument("--ensemble-runs", action="store_true", help="whole runs with --ensemble too (8x longer)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sizes", default=None, help="WxH,... of the whole runs (480x320,1600x1200; quick: 240x160)")
    parser.add_argument("--rss-size", default=None, help="WxH of the peak-memory run (4000x3000; quick: 1000x750)")
    args = parser.parse_args()
    sizes = [tuple(map(int, size.split("x"))) for size in (args.sizes or ("240x160" if args.quick
                                                                          else "480x320,1600x1200")).split(",")]
    if not args.skip_cpu:
        cpu_section(args.quick, args.repeats, sizes, args.ensemble_runs)
    if not args.skip_rss:
        width, height = map(int, (args.rss_size or ("1000x750" if args.quick else "4000x3000")).split("x"))
        for backend in BACKENDS:
            peak_rss(width, height, backend)
    if args.cuda:
        cuda_section(args.repeats)
    print(f"\nthis process: peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GB")


if __name__ == "__main__":
    main()
