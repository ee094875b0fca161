"""int8 networks shipped beside srcli's weights (weights/int8/), for `--precision int8` on the CPU.

Each is the OpenVINO conversion of one embedded model at one scale, quantised by NNCF with the first and last
two convolutions left in fp32, calibrated on the 291 training images. One ships only where it costs at most
GATE_DB of Set5 PSNR against fp32 (benchmarks/bench_int8.py makes, measures and records them). They are found
by the fp32 weights' digest and the scale, so any copy of the same weights finds its int8 network, and are
verified by sha256 before OpenVINO reads them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from srcli.errors import BackendError
from srcli.files import sha256_file
from srcli.paths import shipped_dirs

GATE_DB = 0.05
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class Int8Network:
    """One shipped int8 network and what it costs."""

    model: str  # the catalogue name of the fp32 weights it was made from
    scale: int
    weights_digest: str  # srcli.engine.module.weights_digest of those weights
    xml: Path
    bin: Path
    xml_sha256: str
    bin_sha256: str
    psnr_fp32: float  # Set5, Y channel, the paper's protocol
    psnr_int8: float

    @property
    def cost_db(self) -> float:
        return self.psnr_fp32 - self.psnr_int8


@cache
def shipped() -> tuple[Int8Network, ...]:
    """Every int8 network in the first weights folder that has an int8 manifest (none: an empty tuple)."""
    for folder in (d / "int8" for d in shipped_dirs()):
        if (folder / MANIFEST).is_file():
            records = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))["models"]
            return tuple(
                Int8Network(r["model"], int(r["scale"]), r["weights_digest"], folder / r["xml"], folder / r["bin"],
                            r["xml_sha256"], r["bin_sha256"], float(r["set5_psnr_fp32"]), float(r["set5_psnr_int8"]))
                for r in records
            )
    return ()


def describe_shipped() -> str:
    """'srcli-mdsr-baseline x3 -0.033 dB, x4 -0.011 dB': what --precision int8 can run, and its Set5 cost."""
    names: dict[str, list[str]] = {}
    for network in shipped():
        names.setdefault(network.model, []).append(f"x{network.scale} {-network.cost_db:+.3f} dB")
    return "; ".join(f"{name} {', '.join(scales)}" for name, scales in names.items()) or "none"


def find(weights_digest: str, scale: int) -> Int8Network:
    """The int8 network of these weights at this scale, or a one-line BackendError naming what ships."""
    for network in shipped():
        if network.weights_digest == weights_digest and network.scale == scale:
            return network
    raise BackendError(f"no int8 network ships for this model at x{scale}; int8 runs {describe_shipped()} "
                       f"(Set5 cost at most {GATE_DB} dB); use --precision auto")


def read(ov: Any, network: Int8Network) -> Any:
    """The network as an ov.Model, its files checked against the manifest first."""
    for path, expected in ((network.xml, network.xml_sha256), (network.bin, network.bin_sha256)):
        if not path.is_file() or sha256_file(path) != expected:
            raise BackendError(f"{path} is missing or does not match its sha256 in {MANIFEST}; "
                               "reinstall srcli or use --precision auto")
    return ov.Core().read_model(str(network.xml))
