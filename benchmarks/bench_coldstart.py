"""Whole-process times of what a user waits for, side by side: a cold start against `import torch`, a folder of
small images against one image, thin images against a square one of the same pixels.

    python benchmarks/bench_coldstart.py              # 3 rounds of every pair
    python benchmarks/bench_coldstart.py --rounds 1 --skip-thin

Each row is a fresh process (`python -m srcli upscale ...`, all defaults unless named) timed from start to exit.
The variants of a pair run interleaved, round after round, so a busy machine's load hits them alike; the
median and the best are printed with the ratio of medians, the load average and the CPU (model, amx, avx512_bf16,
avx2) in every row. "warm" runs read a cache the first run filled (the fold, a converted OpenVINO model); "first"
runs start from an empty cache each round, as a fresh install does.
"""

from __future__ import annotations

import argparse
import compileall
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parent.parent


def cpu_description() -> str:
    """The CPU model and the flags that decide bf16 and OpenVINO's speed."""
    model, flags = "unknown CPU", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and model == "unknown CPU":
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    shown = [name for name in ("amx_bf16", "avx512_bf16", "avx2") if name in flags]
    return f"{model} ({os.cpu_count()} cpus; {' '.join(shown) or 'no amx/avx512_bf16/avx2'})"


def write_image(path: Path, height: int, width: int, seed: int = 0) -> Path:
    cv2.imwrite(str(path), np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))
    return path


def timed(command: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
    return seconds


def srcli(*arguments: object) -> list[str]:
    return [sys.executable, "-m", "srcli", "upscale", *map(str, arguments), "--overwrite"]


def compare(title: str, variants: dict[str, tuple[list[str], bool]], rounds: int, folder: Path) -> None:
    """Run the variants interleaved (`True`: from an empty cache each time) and print median, best and ratio."""
    warm = folder / "cache-warm"
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, (command, first) in variants.items():
            cache = folder / "cache-first" if first else warm
            if first:
                shutil.rmtree(cache, ignore_errors=True)
            env = {**os.environ, "SRCLI_CACHE": str(cache), "PYTHONPATH": str(REPO)}
            times[name].append(timed(command, env))
    base = statistics.median(next(iter(times.values())))
    print(f"\n{title}   [{cpu_description()}; load {os.getloadavg()[0]:.1f}]")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"  {name:44s} median {median:7.2f} s  best {min(values):7.2f} s  x{median / base:5.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--skip-thin", action="store_true", help="no thin-image rows (the longest)")
    parser.add_argument("--only-thin", action="store_true", help="only the thin-image rows")
    parser.add_argument("--skip-first", action="store_true", help="no empty-cache rows")
    arguments = parser.parse_args()
    # An installed srcli has its bytecode (pip compiles it; an editable checkout writes it on first run). Where
    # PYTHONDONTWRITEBYTECODE is set, every run would otherwise recompile about 50 modules (~0.1 s): not a user's
    # cold start.
    compileall.compile_dir(REPO / "srcli", quiet=1)
    print(f"srcli's bytecode compiled first (PYTHONDONTWRITEBYTECODE={os.environ.get('PYTHONDONTWRITEBYTECODE')!r})")
    with tempfile.TemporaryDirectory(prefix="srcli-bench-") as name:
        folder = Path(name)
        photo = write_image(folder / "photo.png", 72, 72)
        one = write_image(folder / "one.png", 16, 16)
        small = folder / "small"
        small.mkdir()
        for index in range(100):
            write_image(small / f"{index:03d}.png", 16, 16, index)
        env = {**os.environ, "SRCLI_CACHE": str(folder / "cache-warm"), "PYTHONPATH": str(REPO)}
        for warmup in (srcli(photo), srcli(one, "--scale", "2")):  # fill the warm cache
            timed(warmup, env)
        start = {} if arguments.only_thin else {
            "python -c 'import torch'": ([sys.executable, "-c", "import torch"], False),
            "srcli upscale 72x72.png (warm cache)": (srcli(photo), False),
        }
        if start and not arguments.skip_first:
            start["srcli upscale 72x72.png (first run)"] = (srcli(photo), True)
        if start:
            compare("cold start: a 72x72 photo, all defaults", start, arguments.rounds, folder)
        if not arguments.only_thin:
            compare("small images at x2", {
                "srcli upscale one 16x16 --scale 2": (srcli(one, "--scale", "2"), False),
                "srcli upscale folder of 100 16x16 --scale 2": (srcli(small, "--scale", "2", "-o", folder / "out"),
                                                                False),
            }, arguments.rounds, folder)
        if not arguments.skip_thin:
            square = write_image(folder / "square.png", 316, 316)
            wide = write_image(folder / "wide.png", 1, 100000)
            tall = write_image(folder / "tall.png", 100000, 1)
            compare("thin images at x2 (100 kpx each)", {
                "316x316 --scale 2": (srcli(square, "--scale", "2"), False),
                "1x100000 --scale 2": (srcli(wide, "--scale", "2"), False),
                "100000x1 --scale 2": (srcli(tall, "--scale", "2"), False),
            }, arguments.rounds, folder)


if __name__ == "__main__":
    main()
