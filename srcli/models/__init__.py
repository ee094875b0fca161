"""The networks, their named presets, and recognition of any checkpoint's architecture from its tensors."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from srcli.errors import CheckpointError
from srcli.models.edsr import EDSR
from srcli.models.mdsr import MDSR
from srcli.models.vdsr import VDSR

ARCHITECTURES: dict[str, type[nn.Module]] = {"edsr": EDSR, "mdsr": MDSR, "vdsr": VDSR}

PRESETS: dict[str, tuple[str, dict[str, Any]]] = {
    "edsr-baseline": ("edsr", {"blocks": 16, "features": 64, "res_scale": 1.0}),
    "edsr": ("edsr", {"blocks": 32, "features": 256, "res_scale": 0.1}),
    "mdsr-baseline": ("mdsr", {"blocks": 16, "features": 64}),
    "mdsr": ("mdsr", {"blocks": 80, "features": 64}),
    "vdsr": ("vdsr", {"layers": 20, "features": 64, "channels": 1}),
    "vdsr-rgb": ("vdsr", {"layers": 20, "features": 64, "channels": 3, "bias": True}),
}

__all__ = ["ARCHITECTURES", "EDSR", "MDSR", "PRESETS", "VDSR", "ModelSpec", "build", "detect", "load_state_dict"]


@dataclass(frozen=True)
class ModelSpec:
    """What a state dict is: enough to rebuild the network that loads it."""

    arch: str
    config: dict[str, Any] = field(default_factory=dict)
    layout: str = "official"

    @property
    def scales(self) -> tuple[int, ...]:
        if "scale" in self.config:
            return (int(self.config["scale"]),)
        return tuple(self.config.get("scales", (2, 3, 4)))


def build(arch: str, **config: Any) -> nn.Module:
    """Build a network by architecture name (`edsr`, `mdsr`, `vdsr`) or preset (`edsr-baseline`, ...)."""
    if arch in PRESETS:
        base_arch, preset = PRESETS[arch]
        return ARCHITECTURES[base_arch](**{**preset, **config})
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; known: {', '.join(sorted(ARCHITECTURES))}")
    return ARCHITECTURES[arch](**config)


def parameter_count(model: nn.Module) -> int:
    """Trainable parameters, as the papers count them (the fixed mean shifts excluded)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# --- recognising checkpoints -------------------------------------------------------------------------

_BASICSR_RENAMES = (
    (re.compile(r"^conv_first\."), "head.0."),
    (re.compile(r"^body\.(\d+)\.conv1\."), r"body.\1.body.0."),
    (re.compile(r"^body\.(\d+)\.conv2\."), r"body.\1.body.2."),
    (re.compile(r"^upsample\."), "tail.0."),
    (re.compile(r"^conv_last\."), "tail.1."),
)


def _strip_wrappers(state: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Unwrap the containers checkpoints come in: {'params': ...}, {'state_dict': ...}, DDP's 'module.'."""
    for key in ("params_ema", "params", "state_dict", "model"):
        if isinstance(state.get(key), dict):
            state = state[key]
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if tensors and all(k.startswith("module.") for k in tensors):
        tensors = {k[len("module."):]: v for k, v in tensors.items()}
    return tensors


def _upsampler_scale(weights: list[torch.Tensor], features: int) -> int:
    """Scale of a sub-pixel upsampler from its conv output channels: 4F per x2 step, 9F for x3."""
    ratios = [w.shape[0] // features for w in weights]
    if ratios == [9]:
        return 3
    if ratios and all(r == 4 for r in ratios):
        return 2 ** len(ratios)
    raise CheckpointError(f"upsampler with output channels {[w.shape[0] for w in weights]} is not a known scale")


def _convert_basicsr(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a BasicSR EDSR state dict into the official layout (conv_after_body becomes body.{B})."""
    blocks = 1 + max(int(m.group(1)) for k in state if (m := re.match(r"body\.(\d+)\.conv1\.", k)))
    converted: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.startswith("conv_after_body."):
            converted[f"body.{blocks}." + key[len("conv_after_body."):]] = value
            continue
        for pattern, replacement in _BASICSR_RENAMES:
            key = pattern.sub(replacement, key)
        converted[key] = value
    return converted


def _res_scale_for(features: int) -> float:
    """Residual scaling is not visible in tensors; the papers use 0.1 exactly for the 256-feature EDSR."""
    return 0.1 if features >= 256 else 1.0


def _count(state: dict[str, torch.Tensor], pattern: str) -> int:
    indices = {int(m.group(1)) for k in state if (m := re.match(pattern, k))}
    return len(indices)


def _detect_edsr(state: dict[str, torch.Tensor]) -> ModelSpec:
    head = state["head.0.weight"]
    features, channels = int(head.shape[0]), int(head.shape[1])
    blocks = _count(state, r"body\.(\d+)\.body\.0\.weight")
    tail_convs = sorted(
        (int(m.group(1)), v) for k, v in state.items() if (m := re.match(r"tail\.0\.(\d+)\.weight$", k))
    )
    scale = _upsampler_scale([w for _, w in tail_convs], features)
    config = {"scale": scale, "blocks": blocks, "features": features, "res_scale": _res_scale_for(features)}
    if channels != 3:
        config["channels"] = channels
    return ModelSpec("edsr", config)


def _detect_mdsr(state: dict[str, torch.Tensor]) -> ModelSpec:
    features = int(state["head.0.weight"].shape[0])
    blocks = _count(state, r"body\.(\d+)\.body\.0\.weight")
    count = _count(state, r"upsample\.(\d+)\.")
    scales = []
    for index in range(count):
        convs = sorted(
            (int(m.group(1)), v)
            for k, v in state.items()
            if (m := re.match(rf"upsample\.{index}\.(\d+)\.weight$", k))
        )
        scales.append(_upsampler_scale([w for _, w in convs], features))
    return ModelSpec("mdsr", {"scales": scales, "blocks": blocks, "features": features, "res_scale": 1.0})


def _detect_vdsr(state: dict[str, torch.Tensor]) -> ModelSpec:
    first = state["input.weight"]
    layers = _count(state, r"residual_layer\.(\d+)\.conv\.weight") + 2
    config = {
        "layers": layers,
        "features": int(first.shape[0]),
        "channels": int(first.shape[1]),
        "bias": "input.bias" in state,
    }
    return ModelSpec("vdsr", config)


def normalise_state_dict(state: dict[str, Any]) -> tuple[ModelSpec, dict[str, torch.Tensor]]:
    """Recognise a checkpoint and return its spec with the state dict in srcli's (the official) layout."""
    tensors = _strip_wrappers(state)
    if not tensors:
        raise CheckpointError("the file holds no tensors: not a model checkpoint")
    try:
        if "conv_first.weight" in tensors and any(k.startswith("body.0.conv1.") for k in tensors):
            official = _convert_basicsr(tensors)
            spec = _detect_edsr(official)
            return ModelSpec(spec.arch, spec.config, layout="basicsr"), official
        if "head.0.weight" in tensors and any(k.startswith("pre_process.") for k in tensors):
            return _detect_mdsr(tensors), tensors
        if "head.0.weight" in tensors and any(k.startswith("tail.0.") for k in tensors):
            return _detect_edsr(tensors), tensors
        if "input.weight" in tensors and "output.weight" in tensors:
            return _detect_vdsr(tensors), tensors
    except (KeyError, ValueError, IndexError) as error:
        raise CheckpointError(f"checkpoint looks like a known layout but is incomplete ({error})") from error
    sample = ", ".join(sorted(tensors)[:4])
    raise CheckpointError(f"unknown architecture: keys like {sample} match no EDSR, MDSR or VDSR layout")


def detect(state: dict[str, Any]) -> ModelSpec:
    """Recognise EDSR, MDSR (official and BasicSR layouts) and VDSR state dicts from their tensor shapes."""
    return normalise_state_dict(state)[0]


def load_state_dict(state: dict[str, Any]) -> nn.Module:
    """Build the network a state dict describes and load it strictly; mean shifts may be absent (BasicSR)."""
    spec, tensors = normalise_state_dict(state)
    model = build(spec.arch, **spec.config)
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    missing = [k for k in missing if not k.startswith(("sub_mean.", "add_mean."))]
    if missing or unexpected:
        raise CheckpointError(
            f"checkpoint does not fit {spec.arch} {spec.config}: "
            f"missing {missing[:3]}, unexpected {unexpected[:3]}"
        )
    return model
