"""The training loop: one Trainer runs a TrainConfig to its last step, resumable and DDP-aware.

Never prints: everything a user sees goes through `on_event(dict)` (kinds: start, data, warning, progress,
log, val, checkpoint, done). `progress` comes after the first step and then about every PROGRESS_SECONDS
(step, running loss, steps/s, ETA), so a live display moves long before the first --log-every line.
Only rank 0 writes files or emits events.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from srcli import __version__
from srcli.datasets import Dataset
from srcli.engine.devices import choose_device
from srcli.errors import CheckpointError, TrainingError
from srcli.models import architecture, build, normalise_state_dict, parameter_count
from srcli.training import checkpoint as ckpt
from srcli.training.data import (
    PatchSampler,
    Prefetcher,
    drop_small,
    epoch_steps,
    find_images,
    load_training_data,
    resolve_data_folders,
)
from srcli.training.recipes import RUNTIME_FIELDS, TrainConfig, check_config, make_config
from srcli.training.validate import Validator, resolve_val_set

EventCallback = Callable[[dict[str, Any]], None]
CHECKPOINT_FORMAT = "srcli-train-1"
PROGRESS_SECONDS = 1.0  # how often a `progress` event feeds the live panel


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    interrupted: bool
    weights: Path | None
    last_val: dict[str, Any] | None
    best_psnr: float | None


def configure(recipe: str | None, overrides: dict[str, Any], resume: bool) -> tuple[TrainConfig, dict | None]:
    """The run's config: the recipe plus overrides, or (resume) the stored config plus runtime overrides."""
    out = Path(overrides.get("out") or "runs/train")
    latest = out / "latest.pt"
    if not resume:
        if latest.exists():
            raise TrainingError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
        if overrides.get("data"):
            overrides = {**overrides, "data": resolve_data_folders(overrides["data"], overrides.get("data_dir"))}
        return make_config(recipe or "edsr-baseline", **overrides), None
    if not latest.exists():
        raise TrainingError(f"--resume: {latest} does not exist (no checkpoint to continue)")
    state = ckpt.load_state(latest)
    if state.get("format") != CHECKPOINT_FORMAT:
        raise TrainingError(f"{latest} is not an srcli training checkpoint")
    config = TrainConfig.from_dict(state["config"])
    if overrides.get("data"):
        data_dir = overrides.get("data_dir") or config.data_dir
        overrides = {**overrides, "data": resolve_data_folders(overrides["data"], data_dir)}
    if recipe is not None and recipe != config.recipe:
        raise TrainingError(f"--resume: {out} trains {config.recipe}, not {recipe}")
    for key, value in overrides.items():
        if value is None:
            continue
        if key == "steps" and config.lr_schedule == "cosine" and value != config.steps:
            # The stored scheduler brings lr to 0 at the old length and would climb again after it.
            raise TrainingError(
                f"--resume keeps a cosine run's length ({config.steps:,} steps: lr reaches 0 there); to train "
                f"longer, start a new cycle with --init-from {out / 'model.pt'} --out NEW"
            )
        if key in RUNTIME_FIELDS:
            setattr(config, key, value)
        elif value != getattr(config, key):
            raise TrainingError(
                f"--resume keeps the run's {key.replace('_', '-')} ({getattr(config, key)}); "
                f"start a new --out to train with {value}"
            )
    check_config(config)
    return config, state


def _amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    if amp == "auto":
        amp = "bf16" if device.type == "cuda" else "none"
    if amp == "none":
        return None
    if amp == "fp16" and device.type != "cuda":
        raise TrainingError("--amp fp16 needs a CUDA device; use bf16 or none on the CPU")
    return torch.bfloat16 if amp == "bf16" else torch.float16


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


class _Distributed:
    """torchrun's environment: rank, world size, local rank; a process group when world > 1."""

    def __init__(self) -> None:
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.owns_group = False

    def start(self, device: torch.device) -> None:
        import torch.distributed as dist

        if self.world > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
            self.owns_group = True

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()

    def stop(self) -> None:
        if self.owns_group:
            import torch.distributed as dist

            dist.destroy_process_group()


class Trainer:
    """Runs one TrainConfig; `request_stop()` (e.g. from a SIGINT handler) ends it after the current step."""

    def __init__(self, config: TrainConfig, state: dict | None = None, on_event: EventCallback | None = None):
        self.config = config
        self.state = state
        self.on_event = on_event
        self.dist = _Distributed()
        self.run_dir = Path(config.out)
        self._stop_requested = False

    def request_stop(self) -> None:
        self._stop_requested = True

    # --- helpers -------------------------------------------------------------------------------------

    @property
    def is_main(self) -> bool:
        return self.dist.rank == 0

    def _emit(self, event: dict[str, Any]) -> None:
        if self.is_main and self.on_event is not None:
            self.on_event(event)

    def _log(self, record: dict[str, Any]) -> None:
        if self.is_main:
            with open(self.run_dir / "log.jsonl", "a") as handle:
                handle.write(json.dumps(record) + "\n")

    def _truncate_log(self, step: int) -> None:
        """After a resume, drop log lines a killed run wrote past its last checkpoint."""
        log = self.run_dir / "log.jsonl"
        if not (self.is_main and log.exists()):
            return
        kept = [line for line in log.read_text().splitlines() if line and json.loads(line).get("step", 0) <= step]
        ckpt.atomic_write_text("".join(line + "\n" for line in kept), log)

    def _build_model(self) -> nn.Module:
        config = self.config
        record = architecture(config.preset)
        if record.multi_scale:
            model = build(config.preset, scales=tuple(config.scales))
        else:
            model = build(config.preset, scale=config.scales[0])
        if record.training.prepare is not None:
            record.training.prepare(model)
        return model

    def _optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        config = self.config
        params = [p for p in model.parameters() if p.requires_grad]
        if config.optimizer == "adam":
            return torch.optim.Adam(params, lr=config.lr, betas=tuple(config.betas), eps=config.eps,
                                    weight_decay=config.weight_decay)
        if config.optimizer == "sgd":
            return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
        raise TrainingError(f"unknown optimizer {config.optimizer!r}")

    def _scheduler(self, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler:
        config = self.config
        if config.lr_schedule == "cosine":
            return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.steps)
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=config.lr_step, gamma=config.lr_gamma)

    def _loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.config.loss == "l1":
            return F.l1_loss(output, target)
        # VDSR: 1/2 ||r - f(x)||^2 per sample, averaged over the minibatch (the paper's objective).
        return 0.5 * (output - target).pow(2).sum() / output.shape[0]

    def _load_data(self, on_event: EventCallback):
        config = self.config
        mode = "ilr" if architecture(config.preset).bicubic_input else "lr"
        cache = Path(config.cache_dir) if config.cache_dir else self.run_dir / "cache"
        if not self.is_main:
            self.dist.barrier()  # rank 0 decodes and fills the cache first
        data = load_training_data(config.data, config.scales, mode, cache, on_event=on_event)
        if self.is_main:
            self.dist.barrier()
        return drop_small(data, config.patch, on_event)

    # --- the run -------------------------------------------------------------------------------------

    def run(self) -> TrainResult:
        config = self.config
        if not config.data:
            raise TrainingError("give at least one --data folder of HR training images")
        files = find_images(config.data)
        val_data = resolve_val_set(config.val_set, config.data_dir, config.scales) if config.val_set else None
        if val_data is not None:
            held_out = {path.resolve() for path in val_data.hr_paths}
            if any(f.resolve() in held_out for f in files):
                raise TrainingError(f"the training data holds images of the validation set {config.val_set}; "
                                    "never train on it")
        device = choose_device(config.device, local_rank=self.dist.local_rank)
        amp_dtype = _amp_dtype(config.amp, device)
        if device.type == "cuda":
            torch.cuda.set_device(device)
            torch.backends.cudnn.benchmark = True
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        self.dist.start(device)
        created = self.is_main and not self.run_dir.exists()
        try:
            return self._run(device, amp_dtype, val_data)
        except TrainingError:
            if created and not (self.run_dir / "latest.pt").exists():
                shutil.rmtree(self.run_dir, ignore_errors=True)  # a refused run leaves nothing behind
            raise
        finally:
            self.dist.stop()

    def _run(self, device: torch.device, amp_dtype: torch.dtype | None, val_data: Dataset | None) -> TrainResult:
        config = self.config
        if self.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        data = self._load_data(self._emit)
        if config.epoch_steps or config.steps_epochs or config.lr_step_epochs:  # a recipe counted in epochs
            config.epoch_steps = config.epoch_steps or epoch_steps(data, config.patch, config.batch)
            if config.steps_epochs:
                config.steps = max(1, round(config.steps_epochs * config.epoch_steps))
                config.steps_epochs = 0.0
            if config.lr_step_epochs:
                config.lr_step = max(1, round(config.lr_step_epochs * config.epoch_steps))
                config.lr_step_epochs = 0.0

        random.seed(config.seed)
        np.random.seed(config.seed)
        torch.manual_seed(config.seed)
        model = self._build_model()
        if config.init_from and self.state is None:
            loaded, skipped = initialise_from(model, Path(config.init_from))
            self._emit({"kind": "data", "message": f"initialised {loaded} tensors from {config.init_from} "
                                                   f"({skipped} upsampler tensors left fresh)"})
        model.to(device)
        if config.channels_last:
            model.to(memory_format=torch.channels_last)
        optimizer = self._optimizer(model)
        scheduler = self._scheduler(optimizer)
        scaler = None
        if amp_dtype == torch.float16:
            scaler = torch.amp.GradScaler("cuda")
        step = 0
        best: dict[str, Any] = {"psnr": None, "step": None}
        last_val: dict[str, Any] | None = None
        if self.state is not None:
            model.load_state_dict(self.state["model"])
            optimizer.load_state_dict(self.state["optimizer"])
            scheduler.load_state_dict(self.state["scheduler"])
            if scaler is not None and self.state.get("scaler"):
                scaler.load_state_dict(self.state["scaler"])
            step = int(self.state["step"])
            best = dict(self.state.get("best") or best)
            last_val = self.state.get("last_val")
            ckpt.set_rng_state(self.state["rng"])
            self._truncate_log(step)
            if scheduler.optimizer.param_groups[0]["lr"] != scheduler.get_last_lr()[0]:
                raise TrainingError("the checkpoint's optimiser and scheduler disagree; it is damaged")
        if self.is_main:
            ckpt.atomic_write_text(json.dumps(config.to_dict(), indent=2) + "\n", self.run_dir / "config.json")

        forward_model: nn.Module = model
        if self.dist.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            forward_model = DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None,
                find_unused_parameters=architecture(config.preset).training.branch_per_scale,
            )
        if config.compile:
            forward_model = torch.compile(forward_model)

        validator = Validator(val_data, config.scales, device) if (val_data is not None and self.is_main) else None
        sampler = PatchSampler(data, config.patch, config.batch, config.seed, rank=self.dist.rank)
        pin = device.type == "cuda"

        def make_batch(index: int) -> tuple[torch.Tensor, torch.Tensor, int]:
            inputs, targets, scale = sampler.batch(index)
            tensors = torch.from_numpy(inputs), torch.from_numpy(targets)
            if pin:
                tensors = tuple(t.pin_memory() for t in tensors)
            return tensors[0], tensors[1], scale

        threads = config.workers if config.workers >= 0 else (4 if device.type == "cuda" else 1)
        prefetch = Prefetcher(make_batch, step, threads)

        def to_model_input(tensor: torch.Tensor) -> torch.Tensor:
            tensor = tensor.to(device, non_blocking=True)
            if tensor.dim() == 3:  # VDSR: N x H x W planes of 0..1
                return tensor.unsqueeze(1)
            tensor = tensor.permute(0, 3, 1, 2).float()  # NHWC memory = channels_last
            tensor = tensor if config.channels_last else tensor.contiguous()
            return tensor * (model.pixel_max / 255.0) if model.pixel_max != 255.0 else tensor

        self._emit({
            "kind": "start", "step": step, "steps": config.steps, "device": str(device),
            "amp": str(amp_dtype).removeprefix("torch.") if amp_dtype else "none", "images": len(data),
            "parameters": parameter_count(model), "world": self.dist.world, "threads": threads,
            "epoch_steps": config.epoch_steps, "config": config.to_dict(),
        })

        def save(name: str) -> None:
            if not self.is_main:
                return
            payload = {
                "format": CHECKPOINT_FORMAT, "model": ckpt.plain_state_dict(model), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict() if scaler else None,
                "step": step, "rng": ckpt.rng_state(), "config": config.to_dict(), "best": best,
                "last_val": last_val, "srcli": __version__,
            }
            ckpt.atomic_torch_save(payload, self.run_dir / name)
            self._emit({"kind": "checkpoint", "step": step, "path": str(self.run_dir / name)})

        model.train()
        loss_sum = torch.zeros((), device=device)
        window_steps, window_start = 0, time.perf_counter()
        # The live panel's feed, between --log-every lines: the first step, then about once a second.
        pace_step, pace_start, next_pace = step, time.perf_counter(), 0.0
        saved_step = step
        interrupted = False
        deadline = time.monotonic() + config.max_minutes * 60 if config.max_minutes > 0 else math.inf
        try:
            while step < config.steps:
                if self._stop_requested:
                    interrupted = True
                    break
                if time.monotonic() > deadline:
                    self._emit({"kind": "data", "message": f"--max-minutes {config.max_minutes} reached, step {step}"})
                    break
                inputs, targets, scale = prefetch.get(step)
                inputs, targets = to_model_input(inputs), to_model_input(targets)
                with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                    output = forward_model(inputs, scale or None)
                loss = self._loss(output.float(), targets)
                optimizer.zero_grad(set_to_none=True)  # unused MDSR branches keep grad None: Adam skips them
                if scaler is not None:
                    scaler.scale(loss).backward()
                    scaler.unscale_(optimizer)
                else:
                    loss.backward()
                if config.clip > 0:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip / scheduler.get_last_lr()[0])
                if scaler is not None:
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    optimizer.step()
                scheduler.step()
                step += 1
                loss_sum += loss.detach()
                window_steps += 1
                now = time.perf_counter()
                if now >= next_pace and self.is_main and self.on_event is not None:
                    speed = (step - pace_step) / max(now - pace_start, 1e-9)
                    self._emit({"kind": "progress", "step": step, "steps": config.steps,
                                "loss": loss_sum.item() / window_steps, "steps_per_s": speed,
                                "eta_s": (config.steps - step) / speed})
                    next_pace = now + PROGRESS_SECONDS
                if step % config.log_every == 0 or step == config.steps:
                    mean_loss = loss_sum.item() / window_steps
                    now = time.perf_counter()
                    speed = window_steps / max(now - window_start, 1e-9)
                    if not math.isfinite(mean_loss):
                        raise TrainingError(f"the loss became {mean_loss} by step {step}; lower --lr")
                    record = {"step": step, "loss": mean_loss, "lr": scheduler.get_last_lr()[0],
                              "steps_per_s": speed, "time": time.time()}
                    self._log(record)
                    self._emit({"kind": "log", "steps": config.steps, "eta_s": (config.steps - step) / speed,
                                **record})
                    loss_sum.zero_()
                    window_steps, window_start = 0, time.perf_counter()
                if validator is not None and (step % config.val_every == 0 or step == config.steps):
                    last_val = self._validate(model, validator, step)
                    if best["psnr"] is None or last_val["psnr"] > best["psnr"]:
                        best = {"psnr": last_val["psnr"], "step": step}
                        save("best.pt")
                    window_start = time.perf_counter()  # validation time is not training speed
                    pace_step, pace_start = step, window_start
                if step % config.checkpoint_every == 0:
                    save("latest.pt")
                    saved_step = step
        finally:
            prefetch.close()
        if saved_step != step or not (self.run_dir / "latest.pt").exists():
            save("latest.pt")
        weights = None
        if self.is_main:
            metadata = {
                "recipe": config.recipe, "arch": model.arch, "config": model.config, "scales": config.scales,
                "steps": step, "data": config.data, "val_set": config.val_set, "val": last_val,
                "best": best, "fp16": config.export_fp16, "srcli": __version__, "complete": step >= config.steps,
            }
            weights = ckpt.export_weights(ckpt.plain_state_dict(model, config.export_fp16), self.run_dir, metadata)
        self.dist.barrier()
        self._emit({"kind": "done", "step": step, "interrupted": interrupted, "weights": str(weights)})
        return TrainResult(self.run_dir, step, interrupted, weights, last_val, best["psnr"])

    def _validate(self, model: nn.Module, validator: Validator, step: int) -> dict[str, Any]:
        results = validator(model)
        record = {
            "step": step,
            "set": validator.name,
            "psnr": float(np.mean([r.psnr for r in results.values()])),
            "ssim": float(np.mean([r.ssim for r in results.values()])),
            "per_scale": {f"x{s}": {"psnr": r.psnr, "ssim": r.ssim} for s, r in results.items()},
        }
        self._log({"val": record, "step": step})
        self._emit({"kind": "val", **record})
        return record
