"""Training curves in the run folder: curves.png (loss and validation PSNR against steps, as EDSR-PyTorch's
plots) when matplotlib is installed, TensorBoard event files when tensorboard is. Both are optional extras
(`srcli[plots]`, `srcli[tensorboard]`): without them a run says so once and goes on, never fails.

The plot is redrawn from log.jsonl at each validation, so a resumed run's curves cover the whole run.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

CURVES = "curves.png"
PLOTS_HINT = "curves.png needs matplotlib: pip install \"srcli[plots]\" (the run goes on without it)"


def read_log(path: Path) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
    """(step, loss) of each log line and (step, PSNR) of each validation in log.jsonl; unreadable lines skipped."""
    losses, psnrs = [], []
    if not path.is_file():
        return losses, psnrs
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record.get("val"), dict) and "psnr" in record["val"]:
            psnrs.append((int(record["step"]), float(record["val"]["psnr"])))
        elif "loss" in record and "step" in record:
            losses.append((int(record["step"]), float(record["loss"])))
    return losses, psnrs


def plot(log: Path, target: Path) -> bool:
    """Draw curves.png from log.jsonl (atomically); False when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # no display: runs are often headless
        from matplotlib import pyplot
    except ImportError:
        return False

    from srcli.files import atomic_path

    losses, psnrs = read_log(log)
    figure, (left, right) = pyplot.subplots(1, 2, figsize=(10, 4))
    try:
        left.plot([step for step, _ in losses], [value for _, value in losses], color="tab:blue")
        left.set(title="training loss", xlabel="step", ylabel="loss")
        right.plot([step for step, _ in psnrs], [value for _, value in psnrs], marker="o", color="tab:red")
        right.set(title="validation PSNR", xlabel="step", ylabel="PSNR (dB)")
        for axes in (left, right):
            axes.grid(alpha=0.3)
        figure.tight_layout()
        with atomic_path(target) as temp:
            figure.savefig(temp, format="png", dpi=100)
    finally:
        pyplot.close(figure)
    return True


class Curves:
    """Follows one run: each log line and validation to TensorBoard, curves.png at each validation."""

    def __init__(self, run_dir: Path, note: Callable[[str], None]):
        self.run_dir = run_dir
        self.note = note
        self.hinted = False
        self.writer: Any = None
        if importlib.util.find_spec("tensorboard") is not None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # a tensorboard that torch cannot use: the curves.png still come
                return
            self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))

    def logged(self, step: int, loss: float, lr: float) -> None:
        if self.writer is not None:
            self.writer.add_scalar("train/loss", loss, step)
            self.writer.add_scalar("train/lr", lr, step)

    def validated(self, step: int, psnr: float, ssim: float) -> None:
        if self.writer is not None:
            self.writer.add_scalar("val/psnr", psnr, step)
            self.writer.add_scalar("val/ssim", ssim, step)
            self.writer.flush()
        if not plot(self.run_dir / "log.jsonl", self.run_dir / CURVES) and not self.hinted:
            self.hinted = True
            self.note(PLOTS_HINT)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
