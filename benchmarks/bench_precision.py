"""What precision chosen by measurement gives on this CPU: the plain fp32 whole-image run against `srcli upscale`
in fp32 and with `--precision auto` (bf16 where the probe measured it faster), side by side in one run.

    python benchmarks/bench_precision.py                         # 480x320 and 1600x1200 -> x4, 2 rounds
    python benchmarks/bench_precision.py --sizes 480x320 --repeats 3 --backends torch

Each run is a fresh process timed from start to exit (bench_upscale's launcher: wall, CPU seconds, peak RSS),
EDSR-baseline x4 with random (seeded) weights, `--border zero` (the plain run's padding: the same work and
pixels). The variants are interleaved round after round, so the machine's load hits them alike; medians are
printed. The probe runs once, in an untimed first `auto` run per backend (its answer is cached as a user's
would be); that run's time is printed apart. Every row names the CPU model and its flags (amx, avx512_bf16), and
the largest level difference of each srcli output against the plain one is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from bench_upscale import PLAIN, REPO, timed_process  # noqa: E402

from srcli.engine import speed  # noqa: E402
from srcli.models import build  # noqa: E402


def cpu_label() -> str:
    flags = speed.cpu_flags()
    shown = [f"{flag}={'yes' if flag in flags else 'no'}" for flag in ("amx_bf16", "avx512_bf16")]
    return f"{speed.cpu_model()} ({', '.join(shown)}, {os.cpu_count()} CPUs)"


def smooth_image(path: Path, width: int, height: int) -> None:
    small = np.random.default_rng(0).integers(0, 256, (height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8)
    cv2.imwrite(str(path), cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC))


def srcli_command(source: Path, weights: Path, target: Path, precision: str, backend: str) -> list[str]:
    return [sys.executable, "-m", "srcli", "upscale", str(source), "--weights", str(weights), "-o", str(target),
            "--overwrite", "--border", "zero", "--precision", precision, "--backend", backend, "--json"]


def placement(command: list[str], env: dict[str, str]) -> str:
    """The precision a run chose and why (one untimed run: it also fills the probe's and OpenVINO's caches)."""
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, check=True)
    report = json.loads(result.stdout)
    return f"{report['precision']} {report['backend']} ({report['precision_reason']})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="480x320,1600x1200", help="LR sizes WxH, comma-separated")
    parser.add_argument("--repeats", type=int, default=2, help="interleaved rounds")
    parser.add_argument("--backends", default="auto", help="srcli --backend values, comma-separated")
    args = parser.parse_args()
    sizes = [tuple(int(v) for v in size.split("x")) for size in args.sizes.split(",")]
    backends = args.backends.split(",")
    label = cpu_label()
    print(f"CPU: {label}; torch {torch.__version__}; load average {os.getloadavg()}")
    with tempfile.TemporaryDirectory() as temp:
        folder = Path(temp)
        torch.manual_seed(0)
        weights = folder / "edsr_baseline_x4.pt"
        torch.save(build("edsr-baseline", scale=4).state_dict(), weights)
        env = {**os.environ, "SRCLI_CACHE": str(folder / "cache"), "PYTHONPATH": str(REPO)}
        tiny = folder / "tiny.png"
        smooth_image(tiny, 64, 48)
        for backend in backends:
            for precision in ("fp32", "auto"):
                chosen = placement(srcli_command(tiny, weights, folder / "tiny_x4.png", precision, backend), env)
                print(f"srcli --precision {precision} --backend {backend}: {chosen}")
        for width, height in sizes:
            source = folder / f"in_{width}x{height}.png"
            smooth_image(source, width, height)
            commands = {"plain fp32": [sys.executable, "-c", PLAIN, str(weights), str(source),
                                       str(folder / "plain.png")]}
            for backend in backends:
                for precision in ("fp32", "auto"):
                    target = folder / f"{backend}_{precision}.png"
                    commands[f"srcli {precision} ({backend})"] = srcli_command(source, weights, target, precision,
                                                                                backend)
            runs: dict[str, list[tuple[float, float, float]]] = {name: [] for name in commands}
            for _ in range(args.repeats):
                for name, command in commands.items():
                    runs[name].append(timed_process(command, env))
            plain = statistics.median(r[0] for r in runs["plain fp32"])
            reference = cv2.imread(str(folder / "plain.png")).astype(int)
            print(f"\n{width}x{height} -> x4, whole process, median of {args.repeats}, load {os.getloadavg()}")
            for name, results in runs.items():
                wall = statistics.median(r[0] for r in results)
                output = folder / ("plain.png" if name == "plain fp32" else
                                   f"{name.split('(')[1][:-1]}_{name.split()[1]}.png")
                levels = np.abs(cv2.imread(str(output)).astype(int) - reference).max()
                print(f"  {name:<22}{wall:>8.2f} s{statistics.median(r[1] for r in results):>7.1f} CPU-s"
                      f"{max(r[2] for r in results):>6.2f} GB{plain / wall:>7.2f}x plain  max diff {levels}  | {label}")


if __name__ == "__main__":
    main()
