"""Whether bf16 pays on this CPU: measured, never guessed from flags (avx512_bf16 alone was slower than fp32 with
some torch builds; AMX is several times faster), and remembered per CPU, torch version and backend.

The probe times one representative conv (64 -> 64 channels, 3x3, channels_last, as the folded networks run) in
fp32 and bf16, interleaved and warmed up, keeping each one's fastest run: a fraction of a second, once. It runs on
one thread: what bf16 gains is per core, and a multi-thread region on a busy machine waits for its slowest
thread's time slice (tens of ms), which would drown a few-ms conv. For OpenVINO the same probe decides, where
its CPU plugin lists BF16 (its own tiny-model timings were no guide to a whole network's). The result lives in
srcli's cache folder (`precision.json`); where that cannot be written, in this process only.
`srcli.engine.devices.resolve_placement` is the one reader.
"""

from __future__ import annotations

import functools
import json
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from srcli.errors import OutputError
from srcli.files import write_atomic
from srcli.paths import cache_home

FORMAT = 2  # bump when what an entry means changes
PAYS = 1.2  # auto picks bf16 only where it measured at least this much faster: a margin over timing noise
MIN_ROUNDS, ROUNDS = 8, 60  # timed rounds: at least, at most (see _fastest)
MAX_SECONDS = 3.0  # a probe stops here even unsettled (a machine so busy that nothing runs clean)
FLAGS = ("amx_bf16", "amx_tile", "avx512_bf16", "avx512_fp16", "avx512f", "avx2")  # what the key and reports name
FILE_NAME = "precision.json"

_unstored: dict[str, Speed] = {}  # measured where the cache could not be written: this process only


@dataclass(frozen=True)
class Speed:
    """One probe's result: the fastest conv in each precision (bf16_ms None: no bf16 for this backend here)."""

    fp32_ms: float
    bf16_ms: float | None

    @property
    def ratio(self) -> float:
        """How many times faster bf16 ran than fp32 (0: not available)."""
        return self.fp32_ms / self.bf16_ms if self.bf16_ms else 0.0

    @property
    def faster(self) -> bool:
        return self.ratio > 1.0

    @property
    def pays(self) -> bool:
        return self.ratio >= PAYS

    def describe(self) -> str:
        """What the measurement says, for a plan's precision_reason and a warning."""
        if not self.bf16_ms:
            return "bf16 is not available to this backend on this CPU"
        if self.faster:
            only = "" if self.pays else "only "
            return f"bf16 measured {only}{self.ratio:.1f}x faster than fp32 on this CPU"
        return f"bf16 measured {1 / self.ratio:.1f}x slower than fp32 on this CPU"


@functools.cache
def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux, else what the platform says)."""
    for line in _cpuinfo():
        if line.startswith("model name"):
            return line.partition(":")[2].strip()
    return platform.processor() or platform.machine() or "unknown CPU"


@functools.cache
def cpu_flags() -> tuple[str, ...]:
    """Which of FLAGS this CPU reports (empty where the platform does not list flags)."""
    for line in _cpuinfo():
        if line.startswith(("flags", "Features")):
            present = set(line.partition(":")[2].split())
            return tuple(flag for flag in FLAGS if flag in present)
    return ()


def _cpuinfo() -> list[str]:
    try:
        with open("/proc/cpuinfo") as handle:
            return handle.read(1 << 16).splitlines()
    except OSError:
        return []


def probe_key(backend: str) -> str:
    """What a measurement holds for: this CPU (model and flags: VMs share model names), torch, the backend."""
    parts = [f"v{FORMAT}", cpu_model(), "+".join(cpu_flags()), f"torch {torch.__version__}", backend]
    if backend == "openvino":
        from srcli.engine.openvino import openvino_version

        parts.append(f"openvino {openvino_version()}")
    return "|".join(parts)


def cache_file() -> Path:
    return cache_home() / FILE_NAME


def _entries(path: Path) -> dict[str, dict]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    entries = data.get("entries") if isinstance(data, dict) else None
    return entries if isinstance(entries, dict) else {}


def _from_entry(entry: object) -> Speed | None:
    try:
        assert isinstance(entry, dict)
        bf16 = entry["bf16_ms"]
        return Speed(float(entry["fp32_ms"]), None if bf16 is None else float(bf16))
    except (AssertionError, KeyError, TypeError, ValueError):
        return None


def remember(backend: str, speed: Speed) -> None:
    """Store a measurement for this CPU and `backend` (what the probe does; tests give their own)."""
    key, path = probe_key(backend), cache_file()
    entries = _entries(path)
    entries[key] = {**asdict(speed), "measured": time.strftime("%Y-%m-%dT%H:%M:%S")}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, json.dumps({"format": FORMAT, "entries": entries}, indent=1).encode())
        _unstored.pop(key, None)
    except (OSError, OutputError):
        _unstored[key] = speed


def bf16_speed(backend: str) -> Speed:
    """bf16 against fp32 on this CPU for `backend` (torch | openvino): from the cache, else measured now."""
    key = probe_key(backend)
    known = _from_entry(_entries(cache_file()).get(key)) or _unstored.get(key)
    if known is not None:
        return known
    measured = _measure_openvino() if backend == "openvino" else _measure_torch()
    remember(backend, measured)
    return measured


def _fastest(runs: dict[str, object], call: object) -> dict[str, float]:
    """Each variant's fastest timed call, in milliseconds, after one untimed call each, interleaved.

    A busy machine only ever adds time, so the fastest call is the estimate; it is trusted once each variant has
    come within 10% of its fastest at least twice (one lucky or one lone clean run decides nothing: a probe on a
    machine loaded 10x over its cores once read 18x where 2x was true), after MIN_ROUNDS and within MAX_SECONDS."""
    samples: dict[str, list[float]] = {name: [] for name in runs}
    until = time.perf_counter() + MAX_SECONDS
    for round_ in range(ROUNDS + 1):
        for name, run in runs.items():
            start = time.perf_counter()
            call(run)  # type: ignore[operator]
            if round_:
                samples[name].append((time.perf_counter() - start) * 1000)
        if round_ >= MIN_ROUNDS and (_settled(samples) or time.perf_counter() > until):
            break
    return {name: min(times) for name, times in samples.items()}


def _settled(samples: dict[str, list[float]]) -> bool:
    return all(sum(t <= 1.1 * min(times) for t in times) >= 2 for times in samples.values())


def _measure_torch() -> Speed:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(1, 64, 64, 64, generator=generator).contiguous(memory_format=torch.channels_last)
    weight = (torch.randn(64, 64, 3, 3, generator=generator) * 0.05).contiguous(memory_format=torch.channels_last)
    bias = torch.zeros(64)
    runs = {name: (x.to(dtype), weight.to(dtype), bias.to(dtype))
            for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16))}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.inference_mode():
            best = _fastest(runs, lambda run: F.conv2d(run[0], run[1], run[2], padding=1))
    finally:
        torch.set_num_threads(threads)
    return Speed(round(best["fp32"], 4), round(best["bf16"], 4))


def _measure_openvino() -> Speed:
    """The torch probe's conv, where OpenVINO's CPU plugin lists BF16 among its capabilities (else no bf16).

    It measures what the CPU's bf16 units give a 64->64 conv; timing OpenVINO itself on so small a model timed
    its f32 single-thread path at a quarter of torch's, far from what a whole network shows (bf16 2.0x f32 for
    EDSR-baseline x4 on this EPYC, as the torch probe says)."""
    from srcli.engine.openvino import load_openvino

    capabilities = load_openvino().Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    measured = _measure_torch()
    return measured if "BF16" in capabilities else Speed(measured.fp32_ms, None)
