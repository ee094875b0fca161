"""The training loop: one Trainer runs a TrainConfig to its last step, resumable and DDP-aware.

Never prints: everything a user sees goes through `on_event` as the typed events of srcli.training.events.
Only rank 0 writes files or emits events. The loop reads top to bottom: restore the state, step it (the
Learner owns the optimisation step), report, validate, checkpoint, export.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from srcli import __version__, distributed
from srcli.datasets import Dataset
from srcli.engine.devices import choose_device
from srcli.errors import TrainingError
from srcli.files import check_writable_folder
from srcli.models import architecture, parameter_count
from srcli.training import checkpoint as ckpt
from srcli.training.curves import Curves
from srcli.training.data import (
    PatchSampler,
    TrainingData,
    drop_small,
    epoch_steps,
    find_images,
    load_training_data,
    resolve_data_folders,
)
from srcli.training.events import (
    EventCallback,
    Finished,
    Logged,
    Note,
    Progress,
    Saved,
    Started,
    TrainEvent,
    Validated,
)
from srcli.training.learner import CHECKPOINT_FORMAT, Batches, Learner, TrainState, amp_dtype
from srcli.training.recipes import RUNTIME_FIELDS, TrainConfig, check_config, degradation_recipe, make_config
from srcli.training.validate import Validator, resolve_val_set
from srcli.weights.checkpoints import non_finite_tensor

PROGRESS_SECONDS = 1.0  # how often a Progress event feeds the live panel


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
    check_writable_folder(out, "--out")
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


def resolve_epochs(config: TrainConfig, data: TrainingData) -> None:
    """Turn a recipe counted in epochs (VDSR) into steps, now that the data is known."""
    if not (config.epoch_steps or config.steps_epochs or config.lr_step_epochs):
        return
    config.epoch_steps = config.epoch_steps or epoch_steps(data, config.patch, config.batch)
    if config.steps_epochs:
        config.steps = max(1, round(config.steps_epochs * config.epoch_steps))
        config.steps_epochs = 0.0
    if config.lr_step_epochs:
        config.lr_step = max(1, round(config.lr_step_epochs * config.epoch_steps))
        config.lr_step_epochs = 0.0


class _Meter:
    """The running loss and speed between log lines, and the pace of the live panel's Progress events."""

    def __init__(self, step: int, device: torch.device):
        self.loss_sum = torch.zeros((), device=device)
        self.window_steps, self.window_start, self.window_time = 0, time.perf_counter(), 0.0
        # The live panel's feed, between --log-every lines: the first step, then about once a second.
        self.pace_step, self.pace_start, self.next_pace = step, time.perf_counter(), 0.0

    def add(self, loss: torch.Tensor) -> None:
        self.loss_sum += loss
        self.window_steps += 1

    def progress(self, step: int, steps: int, now: float) -> Progress:
        speed = (step - self.pace_step) / max(now - self.pace_start, 1e-9)
        self.next_pace = now + PROGRESS_SECONDS
        return Progress(step, steps, self.loss_sum.item() / self.window_steps, speed, (steps - step) / speed)

    def logged(self, step: int, steps: int, lr: float) -> Logged:
        """The window's mean loss and speed; starts the next window."""
        mean_loss = self.loss_sum.item() / self.window_steps
        speed = self.window_steps / max(self.window_time + time.perf_counter() - self.window_start, 1e-9)
        if not math.isfinite(mean_loss):
            raise TrainingError(f"the loss became {mean_loss} by step {step}; lower --lr")
        event = Logged(step=step, loss=mean_loss, lr=lr, steps_per_s=speed, time=time.time(), steps=steps,
                       eta_s=(steps - step) / speed)
        self.loss_sum.zero_()
        self.window_steps, self.window_start, self.window_time = 0, time.perf_counter(), 0.0
        return event

    def pause(self) -> None:
        """Validation begins: the window's training time so far is kept, what follows is not counted."""
        self.window_time += time.perf_counter() - self.window_start

    def restart(self, step: int) -> None:
        """Validation time is not training speed."""
        self.window_start = time.perf_counter()
        self.pace_step, self.pace_start = step, self.window_start


def _best(best: dict[str, Any], val_set: str | None) -> dict[str, Any]:
    """model.json's best, saying why PSNR is null when it is: a reader should not guess."""
    if best.get("psnr") is not None:
        return best
    why = ("no --val-set: nothing was validated, so there is no best.pt (model.pt is the last step)"
           if not val_set else "no validation ran before the run ended")
    return {**best, "note": why}


class Trainer:
    """Runs one TrainConfig; `request_stop()` (e.g. from a SIGINT handler) ends it after the current step.

    `state` is the checkpoint `configure` loaded for --resume (None for a new run).
    """

    def __init__(self, config: TrainConfig, state: dict | None = None, on_event: EventCallback | None = None):
        self.config = config
        self.stored = state
        self.on_event = on_event
        self.ranks = distributed.environment()
        self.run_dir = Path(config.out)
        self._stop_requested = False
        self.curves: Curves | None = None  # rank 0, once the run folder exists

    def request_stop(self) -> None:
        self._stop_requested = True

    # --- helpers -------------------------------------------------------------------------------------

    @property
    def is_main(self) -> bool:
        return self.ranks.is_main

    def _emit(self, event: TrainEvent) -> None:
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

    def _load_data(self) -> TrainingData:
        config = self.config
        mode = "ilr" if architecture(config.preset).bicubic_input else "lr"
        cache = Path(config.cache_dir) if config.cache_dir else self.run_dir / "cache"
        if not self.is_main:
            self.ranks.barrier()  # rank 0 decodes and fills the cache first
        data = load_training_data(config.data, config.scales, mode, cache, on_event=self._emit)
        if self.is_main:
            self.ranks.barrier()
        return drop_small(data, config.patch, self._emit)

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
        device = choose_device(config.device, local_rank=self.ranks.local_rank)
        dtype = amp_dtype(config.amp, device)
        if device.type == "cuda":
            torch.cuda.set_device(device)
            torch.backends.cudnn.benchmark = True
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        owns_group = distributed.start(self.ranks, "nccl" if device.type == "cuda" else "gloo")
        created = self.is_main and not self.run_dir.exists()
        finished = False
        try:
            result = self._run(device, dtype, val_data)
            finished = True
            return result
        except TrainingError:
            if created and not (self.run_dir / "latest.pt").exists():
                shutil.rmtree(self.run_dir, ignore_errors=True)  # a refused run leaves nothing behind
            raise
        finally:
            if owns_group:
                distributed.stop(finished)

    def _run(self, device: torch.device, dtype: torch.dtype | None, val_data: Dataset | None) -> TrainResult:
        config = self.config
        if self.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self.curves = Curves(self.run_dir, lambda message: self._emit(Note(message)))
        data = self._load_data()
        resolve_epochs(config, data)
        state = self._restore(device, dtype)
        learner = Learner(state, config, device, dtype, self.ranks)
        validator = Validator(val_data, config.scales, device) if (val_data is not None and self.is_main) else None
        sampler = PatchSampler(data, config.patch, config.batch, config.seed, rank=self.ranks.rank,
                               recipe=degradation_recipe(config))
        threads = config.workers if config.workers >= 0 else (4 if device.type == "cuda" else 1)
        batches = Batches(sampler, state.step, threads, device, config.channels_last, state.model.pixel_max)
        self._emit(Started(
            step=state.step, steps=config.steps, device=str(device),
            amp=str(dtype).removeprefix("torch.") if dtype else "none", images=len(data),
            parameters=parameter_count(state.model), world=self.ranks.world, threads=threads,
            epoch_steps=config.epoch_steps, config=config.to_dict(),
        ))
        interrupted = self._train(state, learner, batches, validator)
        return self._finish(state, interrupted)

    def _restore(self, device: torch.device, dtype: torch.dtype | None) -> TrainState:
        """The seeded fresh state, or the checkpoint's (log lines past it dropped); config.json written."""
        config = self.config
        random.seed(config.seed)
        np.random.seed(config.seed)
        torch.manual_seed(config.seed)
        init_from = config.init_from if self.stored is None else None
        state = TrainState.create(config, device, dtype, init_from, lambda message: self._emit(Note(message)))
        if self.stored is not None:
            state.restore(self.stored)
            self._truncate_log(state.step)
        if self.is_main:
            ckpt.atomic_write_text(json.dumps(config.to_dict(), indent=2) + "\n", self.run_dir / "config.json")
        return state

    def _train(self, state: TrainState, learner: Learner, batches: Batches, validator: Validator | None) -> bool:
        """Step to the last step, a stop request or --max-minutes; True when a stop request ended it."""
        config = self.config
        meter = _Meter(state.step, learner.device)
        saved_step, interrupted = state.step, False
        deadline = time.monotonic() + config.max_minutes * 60 if config.max_minutes > 0 else math.inf
        state.model.train()
        try:
            while state.step < config.steps:
                if self._stop_requested:
                    interrupted = True
                    break
                if time.monotonic() > deadline:
                    self._emit(Note(f"--max-minutes {config.max_minutes} reached, step {state.step}"))
                    break
                meter.add(learner.step(*batches.get(state.step)))
                self._report(state, meter)
                if validator is not None and (state.step % config.val_every == 0 or state.step == config.steps):
                    meter.pause()
                    self._validate(state, validator)
                    meter.restart(state.step)
                if state.step % config.checkpoint_every == 0:
                    self._checkpoint(state, "latest.pt")
                    saved_step = state.step
        finally:
            batches.close()
        if saved_step != state.step or not (self.run_dir / "latest.pt").exists():
            self._checkpoint(state, "latest.pt")
        return interrupted

    def _report(self, state: TrainState, meter: _Meter) -> None:
        """A Progress event about once a second (the live panel), a log line every --log-every steps."""
        steps = self.config.steps
        now = time.perf_counter()
        if now >= meter.next_pace and self.is_main and self.on_event is not None:
            self._emit(meter.progress(state.step, steps, now))
        if state.step % self.config.log_every == 0 or state.step == steps:
            logged = meter.logged(state.step, steps, state.scheduler.get_last_lr()[0])
            self._log(logged.record())
            self._emit(logged)
            if self.curves is not None:
                self.curves.logged(logged.step, logged.loss, logged.lr)

    def _validate(self, state: TrainState, validator: Validator) -> None:
        """Score the model on the validation set; a new best PSNR writes best.pt."""
        results = validator(state.model)
        event = Validated(
            step=state.step,
            set=validator.name,
            psnr=float(np.mean([r.psnr for r in results.values()])),
            ssim=float(np.mean([r.ssim for r in results.values()])),
            per_scale={f"x{s}": {"psnr": r.psnr, "ssim": r.ssim} for s, r in results.items()},
        )
        state.last_val = event.record()
        self._log({"val": state.last_val, "step": state.step})
        self._emit(event)
        if self.curves is not None:
            self.curves.validated(event.step, event.psnr, event.ssim)
        if state.best["psnr"] is None or event.psnr > state.best["psnr"]:
            state.best = {"psnr": event.psnr, "step": state.step}
            self._checkpoint(state, "best.pt")

    def _check_weights(self, state: TrainState) -> None:
        """Non-finite weights are never saved or exported: the last step can break them after its loss (computed
        before the update) looked fine, and every image they make would be black or white."""
        damaged = non_finite_tensor(state.model.state_dict())
        if damaged is not None:
            kept = " (the last good checkpoint is kept)" if (self.run_dir / "latest.pt").exists() else ""
            raise TrainingError(f"the weights became NaN or infinite at step {state.step} ({damaged}); nothing was "
                                f"saved or exported{kept}: lower --lr")

    def _checkpoint(self, state: TrainState, name: str) -> None:
        self._check_weights(state)
        if self.is_main:
            ckpt.atomic_torch_save(state.payload(self.config), self.run_dir / name)
            self._emit(Saved(state.step, str(self.run_dir / name)))

    def _finish(self, state: TrainState, interrupted: bool) -> TrainResult:
        """Export model.pt + model.json (rank 0), wait for every rank, report Finished."""
        config, weights = self.config, None
        self._check_weights(state)
        if self.is_main:
            metadata = {
                "recipe": config.recipe, "arch": state.model.arch, "config": state.model.config,
                "scales": config.scales, "steps": state.step, "data": config.data, "val_set": config.val_set,
                "val": state.last_val, "best": _best(state.best, config.val_set), "fp16": config.export_fp16,
                "srcli": __version__,
                "complete": state.step >= config.steps,
            }
            state_dict = ckpt.plain_state_dict(state.model, config.export_fp16)
            weights = ckpt.export_weights(state_dict, self.run_dir, metadata)
        if self.curves is not None:
            self.curves.close()
        self.ranks.barrier()
        self._emit(Finished(state.step, interrupted, str(weights)))
        return TrainResult(self.run_dir, state.step, interrupted, weights, state.last_val, state.best["psnr"])
