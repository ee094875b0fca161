"""`srcli train`: parse options, run srcli.training.Trainer, show a live panel (or log lines when headless)."""

from __future__ import annotations

import signal
import sys
import time
from dataclasses import asdict, fields
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.live import Live
from rich.markup import escape
from rich.panel import Panel
from rich.progress_bar import ProgressBar
from rich.table import Table

from srcli.cli.common import console, finite, parse_scales

if TYPE_CHECKING:  # srcli.training imports torch: only a run loads it, never a help screen
    from srcli.training import Trainer, TrainResult
    from srcli.training.events import Started, TrainEvent


def _duration(seconds: float | None) -> str:
    if seconds is None or seconds != seconds or seconds == float("inf"):
        return "-"
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class _Display:
    """Renders trainer events: a live rich panel on a terminal, plain log lines when headless."""

    def __init__(self, log_every_line: bool):
        self.headless = log_every_line
        self.state: dict[str, Any] = {}
        self.live: Live | None = None

    def __enter__(self) -> _Display:
        return self  # the panel appears with the Started event: before it there is nothing true to show

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.update(self._render())
            self.live.__exit__(None, None, None)

    def _render(self) -> Panel:
        """Only what is known: a row appears once its value does (no `lr -` before the first log line)."""
        s = self.state
        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold")
        table.add_column()
        table.add_row("step", f"{s['step']:,} / {s['steps']:,}")
        table.add_row("", ProgressBar(total=s["steps"], completed=s["step"], width=40))
        val = s.get("val")
        rows = {
            "loss": f"{s['loss']:.4f}" if "loss" in s else None,
            "lr": f"{s['lr']:.3g}" if "lr" in s else None,
            "speed": f"{s['steps_per_s']:.2f} steps/s" if "steps_per_s" in s else None,
            "ETA": _duration(s["eta_s"]) if "eta_s" in s else None,
            "last val": f"{val['psnr']:.3f} dB / {val['ssim']:.4f} at step {val['step']:,}" if val else None,
            "device": f"{s['device']}  amp {s['amp']}",
        }
        for name, value in rows.items():
            if value is not None:
                table.add_row(name, value)
        return Panel(table, title=f"srcli train {s['recipe']}", expand=False)

    def __call__(self, event: TrainEvent) -> None:
        from srcli.training.events import Logged, Note, Progress, Saved, Started, TrainWarning, Validated

        match event:
            case Note() | TrainWarning():
                style = "yellow" if isinstance(event, TrainWarning) else "dim"
                console.print(f"[{style}]{event.kind}:[/] {escape(event.message)}", soft_wrap=True)
            case Started():
                self._started(event)
            case Progress():  # about once a second: the panel moves from the first step
                self.state.update(step=event.step, loss=event.loss, steps_per_s=event.steps_per_s, eta_s=event.eta_s)
            case Logged():
                self.state.update(asdict(event))
                if self.headless:
                    console.print(
                        f"step {event.step}/{event.steps} loss {event.loss:.4f} lr {event.lr:.3g} "
                        f"{event.steps_per_s:.2f} steps/s ETA {_duration(event.eta_s)}",
                        soft_wrap=True,
                    )
            case Validated():
                self.state["val"] = event.record()
                scales = ", ".join(f"{k} {v['psnr']:.3f}/{v['ssim']:.4f}" for k, v in event.per_scale.items())
                console.print(f"val step {event.step}: PSNR {event.psnr:.3f} dB, SSIM {event.ssim:.4f} "
                              f"({scales})", soft_wrap=True)
            case Saved() if self.headless:
                console.print(f"[dim]checkpoint step {event.step} -> {escape(event.path)}[/]", soft_wrap=True)
        if self.live is not None:
            self.live.update(self._render())

    def _start_panel(self) -> None:
        if not self.headless and self.live is None:
            self.live = Live(self._render(), console=console, refresh_per_second=1, transient=False)
            self.live.__enter__()

    def _started(self, event: Started) -> None:
        recipe, scales = event.config["recipe"], event.config["scales"]
        self.state.update(step=event.step, steps=event.steps, device=event.device, amp=event.amp, recipe=recipe)
        extra = f", epoch = {event.epoch_steps} steps" if event.epoch_steps else ""
        console.print(
            f"training {recipe} x{'/x'.join(map(str, scales))} ({event.parameters:,} parameters) on {event.images} "
            f"images, {event.device}, amp {event.amp}, {event.world} process(es){extra}; from step {event.step:,} "
            f"to {event.steps:,}",
            soft_wrap=True,
        )
        self._start_panel()


_OPTION_TYPES = {"scales": parse_scales}  # CLI text that needs more than str() to become a TrainConfig value


def _overrides(given: dict[str, Any]) -> dict[str, Any]:
    """The TrainConfig fields the command line gave, as plain values: a new option needs only its CLI flag.

    Each CLI parameter named like a TrainConfig field (except the recipe, chosen apart) overrides it; None means
    "the recipe's value" (or, on --resume, the run's).
    """
    from srcli.training import TrainConfig

    names = {item.name for item in fields(TrainConfig)} - {"recipe"}
    overrides: dict[str, Any] = {}
    for name, value in given.items():
        if name not in names:
            continue
        if isinstance(value, Path):
            value = str(value)
        elif isinstance(value, list | tuple):
            value = list(value) or None
        elif name in _OPTION_TYPES:
            value = _OPTION_TYPES[name](value) if value else None
        overrides[name] = value
    return overrides


def _run(trainer: Trainer) -> TrainResult:
    """Run with a live display; the first Ctrl-C (or SIGTERM) stops after the step and saves, a second aborts."""
    presses = []

    def stop(signum: int, _frame: object) -> None:
        presses.append(signum)
        if len(presses) > 1:
            raise KeyboardInterrupt
        trainer.request_stop()
        console.print("[yellow]stopping after this step and saving a checkpoint (again to abort)[/]")

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with _Display(log_every_line=not sys.stderr.isatty()) as display:
            trainer.on_event = display
            return trainer.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _report(result: TrainResult, started: float, validated: bool = True) -> None:
    if result.weights is None:  # a DDP rank other than 0
        return
    weights = escape(str(result.weights))
    summary = f"step {result.step:,} in {_duration(time.perf_counter() - started)}; weights {weights}"
    if result.last_val:
        summary += f"; last val PSNR {result.last_val['psnr']:.3f} dB"
    elif not validated:
        summary += " (no --val-set, so no best.pt: model.pt is the last step)"
    if result.interrupted:
        run_dir = escape(str(result.run_dir))
        console.print(f"[yellow]stopped[/] at {summary}; continue with --resume --out {run_dir}")
        raise typer.Exit(130)
    console.print(f"[green]done[/]: {summary}", soft_wrap=True)


# The real-photo options, declared once here to keep the command's signature readable.
Degradation = Annotated[str, typer.Option(
    "--degradation",
    help="bicubic (default: the MATLAB bicubic LR, what srcli's models undo) or real: each patch's LR made on "
    "the fly from its HR (blur, resize, noise, JPEG, twice; Real-ESRGAN style) for real photos.",
)]
DegradationSet = Annotated[list[str], typer.Option(
    "--degradation-set", metavar="NAME=VALUE",
    help="Change a real-degradation setting, e.g. jpeg_range=40,95 or noise_prob2=0.5 (repeatable; README).",
)]
PreviewDegradation = Annotated[int, typer.Option(
    "--preview-degradation", metavar="N", min=1,
    help="Write N HR/LR pairs of the real degradations to OUT/degradation-preview.png and exit.",
)]


def train_command(
    ctx: typer.Context,
    recipe: str = typer.Option(None, "--recipe",
                               help="edsr-baseline | edsr | mdsr-baseline | mdsr | vdsr (default: edsr-baseline)"),
    scales: str = typer.Option(None, "--scale", "-s", help="Scale(s): 2, or 2,3,4 for mdsr/vdsr (recipe's)."),
    data: list[str] = typer.Option(
        None, "--data", "-d", help="Folder of HR images (recursive), or div2k (its train HR); repeat for more."
    ),
    out: Path = typer.Option(Path("runs/train"), "--out", "-o", help="Run folder: checkpoints, log, model.pt."),
    steps: int = typer.Option(None, "--steps", help="Total optimiser steps (recipe's)."),
    batch: int = typer.Option(None, "--batch", help="Minibatch size (16; vdsr 64)."),
    patch: int = typer.Option(None, "--patch", help="LR patch side (48); vdsr: input patch side (41)."),
    lr: float = typer.Option(None, "--lr", parser=finite(), help="Initial learning rate (1e-4; vdsr 0.1)."),
    lr_step: int = typer.Option(None, "--lr-step", help="Steps between lr decays (2e5; vdsr 20 epochs)."),
    lr_gamma: float = typer.Option(None, "--lr-gamma", parser=finite(),
                                   help="lr multiplier at each decay (0.5; vdsr 0.1)."),
    lr_schedule: str = typer.Option(None, "--lr-schedule", help="step (the papers') or cosine (over --steps)."),
    clip: float = typer.Option(
        None, "--clip", parser=finite(),
        help="VDSR theta: gradient norm clipped to theta/lr (0.01; the paper's 0.4 collapses).",
    ),
    weight_decay: float = typer.Option(None, "--weight-decay", parser=finite(), help="L2 weight decay (0; vdsr 1e-4)."),
    optimizer: str = typer.Option(None, "--optimizer", help="adam (EDSR/MDSR) | sgd (VDSR, momentum 0.9)."),
    loss: str = typer.Option(None, "--loss", help="l1 (EDSR/MDSR) | mse (VDSR: half the sum of squares)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out exactly where it stopped."),
    init_from: Path = typer.Option(None, "--init-from",
                                   help="Start from a trained model (x2 -> x3/x4); its upsampler is skipped."),
    val_set: str = typer.Option(
        None, "--val-set", help="A set name (Set5, B100, DIV2K-valid10, ...) or a folder (HR/ + LR_bicubic/X<s>/)."
    ),
    data_dir: Path = typer.Option(
        None, "--data-dir", help="Where named sets lie, as for srcli eval (else $SRCLI_DATA, else srcli's cache)."
    ),
    val_every: int = typer.Option(None, "--val-every", help="Validate every N steps (1000)."),
    checkpoint_every: int = typer.Option(None, "--checkpoint-every", help="Write latest.pt every N steps (1000)."),
    log_every: int = typer.Option(None, "--log-every", help="Log loss/speed every N steps (100)."),
    max_minutes: float = typer.Option(None, "--max-minutes", parser=finite(),
                                      help="Stop after this many minutes of training (checkpoint + export)."),
    device: str = typer.Option(None, "--device", help="auto | cpu | cuda | cuda:N (auto)."),
    amp: str = typer.Option(None, "--amp", help="auto (bf16 on CUDA) | bf16 | fp16 | none."),
    workers: int = typer.Option(None, "--workers", help="Batch-building threads (4 on CUDA, 1 on CPU)."),
    seed: int = typer.Option(None, "--seed", help="Random seed (0)."),
    cache_dir: Path = typer.Option(None, "--cache-dir",
                                   help="Where decoded images and LR are cached (RUN/cache); share between runs."),
    compile: bool = typer.Option(None, "--compile/--no-compile", help="torch.compile the model."),
    export_fp16: bool = typer.Option(None, "--export-fp16/--export-fp32", help="Store model.pt in fp16."),
    degradation: Degradation = None,
    degradation_set: DegradationSet = None,
    preview_degradation: PreviewDegradation = None,
) -> None:
    """Train EDSR, MDSR or VDSR with the papers' recipes; resumable, validated, exported.

    The run folder (--out) gets [bold]latest.pt[/] / [bold]best.pt[/] (full state),
    [bold]log.jsonl[/], and [bold]model.pt[/] + [bold]model.json[/]: plain weights that
    `srcli upscale --weights` and `srcli eval --weights` take as they are.
    Validation uses srcli eval's own scoring (Y, shave = scale).
    Named sets are never downloaded here: run `srcli download div2k` first.

    [bold]Examples[/]

      srcli train --recipe edsr-baseline -s 2 --data T91 --out runs/x2

      srcli train -s 4 --data div2k --init-from runs/x2/model.pt --out runs/x4

      srcli train --recipe mdsr-baseline -s 2,3,4 --data div2k --val-set set5

      srcli train --resume --out runs/x2 --steps 600000

      torchrun --nproc-per-node 4 -m srcli train --data div2k --out runs/r

      srcli train -s 4 --data div2k --degradation real --preview-degradation 8
    """
    from srcli.training import Trainer, configure

    if preview_degradation is not None:
        _preview(recipe, _overrides(ctx.params), preview_degradation)
        return
    config, state = configure(recipe, _overrides(ctx.params), resume)
    started = time.perf_counter()
    _report(_run(Trainer(config, state)), started, validated=bool(config.val_set))


def _preview(recipe: str | None, overrides: dict[str, Any], count: int) -> None:
    """--preview-degradation: the grid of what --degradation real makes, written beside the run; nothing trains."""
    from srcli.errors import TrainingError
    from srcli.imageio import write_image
    from srcli.training.data import degradation_preview, resolve_data_folders
    from srcli.training.recipes import degradation_recipe, make_config

    if overrides.get("degradation") == "bicubic":
        raise TrainingError("--preview-degradation shows the real degradations; drop --degradation bicubic")
    if not overrides.get("data"):
        raise TrainingError("--preview-degradation needs --data: a folder of HR images to degrade")
    overrides = {**overrides, "degradation": "real",
                 "data": resolve_data_folders(overrides["data"], overrides.get("data_dir"))}
    config = make_config(recipe or "edsr-baseline", **overrides)
    recipe_settings = degradation_recipe(config)
    assert recipe_settings is not None
    grid = degradation_preview(config.data, config.scales[0], config.patch, count, recipe_settings, config.seed)
    target = Path(config.out) / "degradation-preview.png"
    target.parent.mkdir(parents=True, exist_ok=True)
    write_image(target, grid)
    console.print(f"wrote {escape(str(target))} ({grid.shape[1]}x{grid.shape[0]}: {count} HR | LR pair(s), "
                  f"x{config.scales[0]}, LR shown nearest-upscaled)", soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Add this module's command(s) to the app."""
    app.command("train")(train_command)
