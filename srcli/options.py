"""How to run the engine, as the user asks it: plain data (no torch), so the CLI builds it from its flags at parse
time and the API, the CLI and scoring carry one object end to end.

The presets are the one place each default lives: `for_upscale` is what `srcli upscale` and `srcli.upscale` run
(clean borders, the fastest backend), `for_scoring` what `srcli eval` and training validation score with (the
papers' zero padding, the whole image, torch).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class UpscaleOptions:
    """How to run: every field has a sensible automatic default; the bare defaults are the papers' network."""

    device: str = "auto"  # auto (cuda, then mps, then cpu) | cpu | cuda | cuda:N | mps
    precision: str = "auto"  # auto (fp16 on CUDA; on a CPU bf16 where measured faster, else fp32) | fp32 | fp16 | bf16
    tile: int | None = None  # LR pixels per tile side, overlap excluded; None: from free memory; 0: whole image
    tile_pad: int | None = None  # overlap in LR pixels; None: the receptive field (result identical to tile=0)
    ensemble: bool = False  # geometric self-ensemble x8 (EDSR+)
    outscale: float | None = None  # final scale if different from the model's
    batch: int | None = None  # forwards batched at once; None: as many as the memory budget allows
    memory_budget: int | None = None  # bytes for activations; None: from free memory (also the OOM guard)
    fold: bool = True  # use the architecture's folded fast path where it declares one
    border: str = "zero"  # zero (the papers' padding; what eval scores) | reflect | replicate (engine.BORDERS)
    backend: str = "auto"  # auto (OpenVINO for fp32 on the CPU where installed, else torch) | torch | openvino

    @classmethod
    def for_upscale(cls, **overrides: Any) -> UpscaleOptions:
        """What upscaling a photo runs with: the image reflected past its edges (no darkened border)."""
        return cls(**{"border": "reflect", **overrides})

    @classmethod
    def for_scoring(cls, **overrides: Any) -> UpscaleOptions:
        """What scoring runs with: the whole LR image at once (scores never depend on memory), the papers' zero
        padding (what the published numbers were scored with), fp32 (scores never depend on the machine: bf16 or
        fp16 is asked for, to see its cost) and torch unless asked (scores never depend on an optional package;
        training's validation never converts weights that change every time). int8 exists only on OpenVINO, so
        scoring int8 runs OpenVINO."""
        chosen = {"tile": 0, "backend": "torch", "precision": "fp32", **overrides}
        if chosen["precision"] == "int8" and chosen["backend"] == "torch":
            chosen["backend"] = "openvino"
        return cls(**chosen)
