"""Which device, precision and backend to run on, and how much memory is free there: one chooser for upscale,
eval and training."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, NamedTuple

import torch

from srcli.engine import speed
from srcli.errors import BackendError, DeviceError

if TYPE_CHECKING:
    from srcli.models import Architecture

_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
PRECISION_NAMES = {dtype: name for name, dtype in _DTYPES.items()}


def choose_device(name: str = "auto", local_rank: int | None = None) -> torch.device:
    """auto: cuda, then mps, then cpu. An explicit device that is absent is the user's error.

    Under torchrun (`local_rank` given) a bare CUDA device means this process's own GPU.
    """
    if name == "auto":
        if torch.cuda.is_available():
            device = torch.device("cuda")
        elif torch.backends.mps.is_available():
            device = torch.device("mps")
        else:
            device = torch.device("cpu")
    else:
        try:
            device = torch.device(name)
        except RuntimeError:
            raise DeviceError(f"unknown device {name!r}: use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(f"device {name!r} asked for, but this torch sees no CUDA GPU; use --device cpu")
    if device.type == "cuda" and device.index is None and local_rank is not None:
        device = torch.device("cuda", local_rank % torch.cuda.device_count())
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise DeviceError(f"device {name!r} asked for, but only {torch.cuda.device_count()} CUDA GPU(s) exist")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise DeviceError("device 'mps' asked for, but Metal is not available here; use --device cpu")
    if device.type not in ("cpu", "cuda", "mps"):
        raise DeviceError(f"device {name!r} is not supported: use auto, cpu, cuda, cuda:N or mps")
    return device


def choose_dtype(precision: str, device: torch.device) -> torch.dtype:
    """auto: fp16 on CUDA (tensor cores; 3 more mantissa bits than bf16, and any overflow falls back to
    fp32 per batch), fp32 elsewhere; `resolve_placement` then measures whether bf16 pays on this CPU."""
    if precision == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    if precision not in _DTYPES:
        raise DeviceError(f"unknown precision {precision!r}: use auto, fp32, fp16, bf16 or int8")
    return _DTYPES[precision]


BACKENDS = ("auto", "torch", "openvino")


def choose_backend(name: str, device: torch.device, dtype: torch.dtype, convertible: bool = True) -> str:
    """auto: OpenVINO for fp32 on the CPU where `srcli[openvino]` is installed (faster there) and the network is
    one auto may convert, torch otherwise (always on CUDA and MPS). An explicit `openvino` that cannot run is
    the user's error."""
    from srcli.engine.openvino import load_openvino, openvino_available

    if name not in BACKENDS:
        raise BackendError(f"unknown backend {name!r}: use auto, torch or openvino")
    if name == "torch":
        return name
    runs_here = device.type == "cpu" and dtype in (torch.float32, torch.bfloat16)
    if name == "auto":
        return "openvino" if runs_here and convertible and openvino_available() else "torch"
    if device.type != "cpu":
        raise BackendError(
            f"--backend openvino runs on the CPU, not {device.type}: use --device cpu or --backend torch"
        )
    if dtype not in (torch.float32, torch.bfloat16):
        raise BackendError(f"--backend openvino runs fp32 or bf16, not {precision_name(dtype)}: use --precision auto")
    load_openvino()
    return name


class Placement(NamedTuple):
    """Where and how a network runs, resolved once from what the user asked, and why that precision."""

    device: torch.device
    dtype: torch.dtype
    backend: str  # torch | openvino
    reason: str = ""  # "bf16: measured 2.3x faster on this CPU"
    warning: str | None = None  # one line a user should read (an explicit bf16 that measured slower)
    quantised: bool = False  # int8: a shipped int8 network on OpenVINO (float32 in and out)

    @property
    def precision(self) -> str:
        """What runs, as a user names it: int8, fp32, fp16 or bf16."""
        return "int8" if self.quantised else precision_name(self.dtype)


def resolve_placement(
    device: str = "auto",
    precision: str = "auto",
    backend: str = "auto",
    *,
    architecture: Architecture | None = None,
    asked_on_command_line: bool = False,
    measured: speed.Speed | None = None,
) -> Placement:
    """Device, precision and backend in one call, each chosen once.

    `architecture` (None: any network) steps an automatic half precision down where it does not support it,
    refuses an explicit one, and lets auto convert for OpenVINO only networks that declare a fold (a zoo module
    may hold ops a converter does not know). `asked_on_command_line` also refuses fp16 on a CPU. On the CPU,
    auto runs bf16 only where `srcli.engine.speed` measured it faster for the backend that will run (and only for
    folded networks, whose output side the runners keep in fp32); `measured` gives that measurement instead.
    """
    chosen = choose_device(device)
    if precision == "int8":
        return _int8_placement(chosen, backend)
    dtype = choose_dtype(precision, chosen)
    if asked_on_command_line:
        refuse_cpu_half(chosen, precision)
    convertible = architecture is None or architecture.fold is not None
    if architecture is not None:
        dtype = _supported_dtype(dtype, precision, chosen, architecture)
    chosen_backend = choose_backend(backend, chosen, dtype, convertible=convertible)
    asked = "asked for" if precision != "auto" else f"auto on {chosen.type}"
    if chosen.type != "cpu" or not (precision == "bf16" or (precision == "auto" and _bf16_allowed(architecture))):
        return Placement(chosen, dtype, chosen_backend, f"{precision_name(dtype)}: {asked}")
    measured = measured or speed.bf16_speed(chosen_backend)
    if precision == "bf16" and measured.bf16_ms is None:
        raise BackendError(f"{measured.describe()} (OpenVINO lists no BF16 capability): use --backend torch")
    if precision == "bf16":
        warning = None if measured.faster else (
            f"--precision bf16 runs slower than fp32 here ({measured.describe()}); --precision auto runs fp32")
        return Placement(chosen, dtype, chosen_backend, f"bf16: asked for; {measured.describe()}", warning)
    if not measured.pays:
        return Placement(chosen, dtype, chosen_backend, f"fp32: {measured.describe()}")
    dtype = torch.bfloat16
    reason = f"bf16: {measured.describe().removeprefix('bf16 ')}"
    return Placement(chosen, dtype, choose_backend(backend, chosen, dtype, convertible=convertible), reason)


def _int8_placement(device: torch.device, backend: str) -> Placement:
    """int8 runs a shipped int8 network on OpenVINO on the CPU (srcli.engine.int8), fp32 at its edges."""
    if device.type != "cpu":
        raise DeviceError(f"--precision int8 runs on the CPU (OpenVINO), not {device.type}: use --device cpu")
    if backend == "torch":
        raise BackendError("--precision int8 runs on OpenVINO: use --backend auto or openvino")
    chosen = choose_backend("openvino" if backend == "auto" else backend, device, torch.float32)
    return Placement(device, torch.float32, chosen, "int8: asked for (a shipped int8 network)", quantised=True)


def _bf16_allowed(architecture: Architecture | None) -> bool:
    """Auto tries bf16 on the CPU only for folded networks (their runners keep the output side in fp32) that
    declare bf16 safe; any other module would run end to end in bf16."""
    return architecture is None or (architecture.fold is not None and architecture.bf16_precision)


def _supported_dtype(dtype: torch.dtype, precision: str, device: torch.device, record: Architecture) -> torch.dtype:
    """Half precision only where the architecture supports it: auto steps down, an explicit ask is refused."""
    supported = {torch.float16: record.half_precision, torch.bfloat16: record.bf16_precision}
    if supported.get(dtype, True):
        return dtype
    if precision != "auto":
        raise DeviceError(f"{record.name} does not support {precision_name(dtype)}; use --precision fp32")
    return torch.bfloat16 if record.bf16_precision and device.type == "cuda" else torch.float32


def refuse_cpu_half(device: torch.device, precision: str) -> None:
    """What a user asks for on the command line: fp16 on a CPU only costs time (no CPU srcli meets computes it
    natively); bf16 is allowed, with a warning where it measured slower."""
    if device.type == "cpu" and precision == "fp16":
        raise DeviceError(
            "--precision fp16 needs a GPU: on the CPU fp16 is many times slower than fp32; "
            "use --precision auto (bf16 where this CPU runs it faster, else fp32) or bf16"
        )


def precision_name(dtype: torch.dtype) -> str:
    return PRECISION_NAMES.get(dtype, str(dtype).removeprefix("torch."))


def available_memory(device: torch.device) -> int:
    """Bytes free for activations now: CUDA's free memory, or the machine's available RAM."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    if device.type == "mps":
        return int(torch.mps.recommended_max_memory() - torch.mps.current_allocated_memory())
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 4 * 2**30
