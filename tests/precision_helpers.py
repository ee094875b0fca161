"""The precision probe's answer, given instead of measured (a real measurement depends on the machine)."""

from __future__ import annotations

import contextlib

from srcli.engine import speed
from srcli.errors import BackendError

SLOWER = speed.Speed(fp32_ms=1.0, bf16_ms=2.0)
FASTER = speed.Speed(fp32_ms=2.0, bf16_ms=1.0)


def pin_fp32() -> None:
    """Store "bf16 measured slower" for both backends in the current cache: auto stays fp32."""
    for backend in ("torch", "openvino"):
        with contextlib.suppress(BackendError):  # OpenVINO not installed: nothing to pin
            speed.remember(backend, SLOWER)
