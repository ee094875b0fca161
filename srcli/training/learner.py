"""What learns and how: the model, its optimiser and schedule (one TrainState), and the step that moves them.

BasicSR-style, the recipe's learner owns its optimisation step (autocast forward, the recipe's loss, backward,
VDSR's clipping, optimiser and schedule); the loop only feeds it minibatches and decides when to validate.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from srcli import __version__
from srcli.distributed import Ranks
from srcli.errors import CheckpointError, TrainingError
from srcli.models import architecture, build, normalise_state_dict
from srcli.training import checkpoint as ckpt
from srcli.training.data import PatchSampler, Prefetcher
from srcli.training.recipes import TrainConfig

CHECKPOINT_FORMAT = "srcli-train-1"


def amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    if amp == "auto":
        amp = "bf16" if device.type == "cuda" else "none"
    if amp == "none":
        return None
    if amp == "fp16" and device.type != "cuda":
        raise TrainingError("--amp fp16 needs a CUDA device; use bf16 or none on the CPU")
    return torch.bfloat16 if amp == "bf16" else torch.float16


def build_model(config: TrainConfig) -> nn.Module:
    record = architecture(config.preset)
    if record.multi_scale:
        model = build(config.preset, scales=tuple(config.scales))
    else:
        model = build(config.preset, scale=config.scales[0])
    if record.training.prepare is not None:
        record.training.prepare(model)
    return model


def initialise_from(model: nn.Module, path: Path) -> tuple[int, int]:
    """Load a trained model's weights except the upsampler (x3/x4 from x2, the EDSR paper's recipe).

    Returns (tensors loaded, tensors skipped); a different architecture or size is an error.
    """
    state = ckpt.load_state(path)
    try:
        spec, tensors = normalise_state_dict(state)
    except CheckpointError as error:
        raise TrainingError(f"--init-from {path}: {error}") from None
    if spec.arch != model.arch:
        raise TrainingError(f"--init-from {path} is a {spec.arch} model; this recipe trains {model.arch}")
    fresh = spec.architecture.training.fresh_keys
    own = model.state_dict()
    loaded, skipped = {}, 0
    for key, value in tensors.items():
        if key.startswith(fresh) and (key not in own or own[key].shape != value.shape):
            skipped += 1
            continue
        if key not in own or own[key].shape != value.shape:
            shape = tuple(own[key].shape) if key in own else "absent"
            raise TrainingError(
                f"--init-from {path} is {spec.arch} {spec.config}, another size than this recipe's "
                f"({key}: {tuple(value.shape)} vs {shape})"
            )
        loaded[key] = value
    model.load_state_dict(loaded, strict=False)
    return len(loaded), skipped


def make_optimizer(config: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, betas=tuple(config.betas), eps=config.eps,
                                weight_decay=config.weight_decay)
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    raise TrainingError(f"unknown optimizer {config.optimizer!r}")


def make_scheduler(config: TrainConfig, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler:
    if config.lr_schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.steps)
    return torch.optim.lr_scheduler.StepLR(optimizer, step_size=config.lr_step, gamma=config.lr_gamma)


@dataclass
class TrainState:
    """Everything a checkpoint holds besides the config and the RNGs (those are saved and set globally)."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler | None
    step: int = 0
    best: dict[str, Any] = field(default_factory=lambda: {"psnr": None, "step": None})
    last_val: dict[str, Any] | None = None

    @classmethod
    def create(cls, config: TrainConfig, device: torch.device, dtype: torch.dtype | None, init_from: str | None,
               on_init: Callable[[str], None]) -> TrainState:
        """A fresh model (or one initialised from init_from) on the device, with its optimiser and schedule."""
        model = build_model(config)
        if init_from:
            loaded, skipped = initialise_from(model, Path(init_from))
            on_init(f"initialised {loaded} tensors from {init_from} ({skipped} upsampler tensors left fresh)")
        model.to(device)
        if config.channels_last:
            model.to(memory_format=torch.channels_last)
        optimizer = make_optimizer(config, model)
        scheduler = make_scheduler(config, optimizer)
        scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
        return cls(model, optimizer, scheduler, scaler)

    def restore(self, stored: dict[str, Any]) -> None:
        """Continue exactly where a checkpoint stopped, RNGs included."""
        self.model.load_state_dict(stored["model"])
        self.optimizer.load_state_dict(stored["optimizer"])
        self.scheduler.load_state_dict(stored["scheduler"])
        if self.scaler is not None and stored.get("scaler"):
            self.scaler.load_state_dict(stored["scaler"])
        self.step = int(stored["step"])
        self.best = dict(stored.get("best") or self.best)
        self.last_val = stored.get("last_val")
        ckpt.set_rng_state(stored["rng"])
        if self.scheduler.optimizer.param_groups[0]["lr"] != self.scheduler.get_last_lr()[0]:
            raise TrainingError("the checkpoint's optimiser and scheduler disagree; it is damaged")

    def payload(self, config: TrainConfig) -> dict[str, Any]:
        """The checkpoint: plain types and tensors only, so it loads with weights_only=True."""
        return {
            "format": CHECKPOINT_FORMAT, "model": ckpt.plain_state_dict(self.model),
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler else None, "step": self.step, "rng": ckpt.rng_state(),
            "config": config.to_dict(), "best": self.best, "last_val": self.last_val, "srcli": __version__,
        }


class Learner:
    """One optimisation step of the recipe: forward (autocast), loss, backward, clipping, optimiser, schedule."""

    def __init__(self, state: TrainState, config: TrainConfig, device: torch.device, dtype: torch.dtype | None,
                 ranks: Ranks):
        self.state, self.config, self.device, self.dtype = state, config, device, dtype
        self.forward: nn.Module = state.model
        if ranks.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            self.forward = DistributedDataParallel(
                state.model, device_ids=[device.index] if device.type == "cuda" else None,
                find_unused_parameters=architecture(config.preset).training.branch_per_scale,
            )
        if config.compile:
            self.forward = torch.compile(self.forward)

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.config.loss == "l1":
            return F.l1_loss(output, target)
        # VDSR: 1/2 ||r - f(x)||^2 per sample, averaged over the minibatch (the paper's objective).
        return 0.5 * (output - target).pow(2).sum() / output.shape[0]

    def step(self, inputs: torch.Tensor, targets: torch.Tensor, scale: int) -> torch.Tensor:
        """Move the model by one minibatch and advance the state's step; returns the (detached) loss."""
        state, scaler = self.state, self.state.scaler
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype is not None):
            output = self.forward(inputs, scale or None)
        loss = self.loss(output.float(), targets)
        state.optimizer.zero_grad(set_to_none=True)  # unused MDSR branches keep grad None: Adam skips them
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(state.optimizer)
        else:
            loss.backward()
        if self.config.clip > 0:
            max_norm = self.config.clip / state.scheduler.get_last_lr()[0]
            torch.nn.utils.clip_grad_norm_(state.model.parameters(), max_norm)
        if scaler is not None:
            scaler.step(state.optimizer)
            scaler.update()
        else:
            state.optimizer.step()
        state.scheduler.step()
        state.step += 1
        return loss.detach()


class Batches:
    """Minibatches on the device in the sampler's step order, built ahead by threads (pinned on CUDA)."""

    def __init__(self, sampler: PatchSampler, start: int, threads: int, device: torch.device, channels_last: bool,
                 pixel_max: float):
        self.sampler, self.device, self.channels_last, self.pixel_max = sampler, device, channels_last, pixel_max
        self.pin = device.type == "cuda"
        self.prefetch = Prefetcher(self._make, start, threads)

    def _make(self, index: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        inputs, targets, scale = self.sampler.batch(index)
        tensors = torch.from_numpy(inputs), torch.from_numpy(targets)
        if self.pin:
            tensors = tuple(t.pin_memory() for t in tensors)
        return tensors[0], tensors[1], scale

    def _to_model(self, tensor: torch.Tensor) -> torch.Tensor:
        tensor = tensor.to(self.device, non_blocking=True)
        if tensor.dim() == 3:  # VDSR: N x H x W planes of 0..1
            return tensor.unsqueeze(1)
        tensor = tensor.permute(0, 3, 1, 2).float()  # NHWC memory = channels_last
        tensor = tensor if self.channels_last else tensor.contiguous()
        return tensor * (self.pixel_max / 255.0) if self.pixel_max != 255.0 else tensor

    def get(self, step: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        inputs, targets, scale = self.prefetch.get(step)
        return self._to_model(inputs), self._to_model(targets), scale

    def close(self) -> None:
        self.prefetch.close()
