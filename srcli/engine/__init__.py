"""The inference engine: a network and its spec in, images out, tiled exactly within a memory budget.

- devices: which device and precision, and the memory free there (also used by training and the CLI);
- speed: whether bf16 pays on this CPU, measured by a short probe and cached (devices' one source for it);
- tiling: where windows fall, and the self-ensemble's transforms;
- folded: the fast path for architectures that declare a fold; module: any other nn.Module as it is;
- openvino: the optional OpenVINO CPU backend (`srcli[openvino]`), its converted models cached;
- planning: window bytes, memory budgets, tiles and batches; stitch: windows in, outputs put back together;
- luma: the Y channel (BT.601 from srcli.colour) for Y-channel networks and scoring;
- upscaler: the Upscaler that ties them together.
"""

from srcli.colour import YCBCR_MATRIX, YCBCR_OFFSET
from srcli.engine.devices import (
    BACKENDS,
    available_memory,
    choose_backend,
    choose_device,
    choose_dtype,
    precision_name,
    refuse_cpu_half,
)
from srcli.engine.planning import CPU_PEAK_TARGET, MIN_TILE
from srcli.engine.tiling import window_size
from srcli.engine.upscaler import (
    BORDERS,
    Plan,
    ProgressCallback,
    Upscaled,
    UpscaleOptions,
    Upscaler,
)

__all__ = [
    "BACKENDS", "BORDERS", "CPU_PEAK_TARGET", "MIN_TILE", "YCBCR_MATRIX", "YCBCR_OFFSET", "Plan", "ProgressCallback",
    "UpscaleOptions", "Upscaled", "Upscaler",
    "available_memory", "choose_backend", "choose_device", "choose_dtype", "precision_name", "refuse_cpu_half",
    "window_size",
]
