"""The training panel and run folder say only what is true: no placeholders, honest speed, why there is no best."""

from __future__ import annotations

import io
import json
from pathlib import Path

import cv2
import numpy as np
import torch
from rich.console import Console

from srcli.cli.train_cmd import _Display
from srcli.training import Trainer, configure, loop
from srcli.training.events import Started


class _Clock:
    """perf_counter under the test's control: no sleeps, exact speeds."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_steps_per_second_leave_validation_time_out(monkeypatch):
    clock = _Clock()
    monkeypatch.setattr(loop.time, "perf_counter", clock)
    meter = loop._Meter(0, torch.device("cpu"))
    for _ in range(5):
        meter.add(torch.tensor(1.0))
    clock.now = 1.0  # 5 steps in 1 s
    meter.pause()
    clock.now = 101.0  # a 100 s validation
    meter.restart(5)
    for _ in range(5):
        meter.add(torch.tensor(1.0))
    clock.now = 102.0  # 5 more steps in 1 s
    assert meter.logged(10, 100, 1e-4).steps_per_s == 5.0


def _started() -> Started:
    return Started(step=0, steps=3, device="cpu", amp="none", images=6, parameters=1, world=1, threads=1,
                   epoch_steps=0, config={"recipe": "edsr-baseline", "scales": [2]})


def test_the_panel_shows_no_placeholders():
    with _Display(log_every_line=False) as display:
        assert display.live is None  # nothing to show before the header
        display(_started())
        recorder = Console(record=True, width=100, file=io.StringIO())
        recorder.print(display._render())
    text = recorder.export_text()
    assert "0 / 3" in text and "device" in text and "cpu  amp none" in text
    assert "?" not in text and " - " not in text and "lr" not in text and "ETA" not in text


def test_without_a_val_set_model_json_says_why_there_is_no_best(tmp_path: Path):
    folder = tmp_path / "hr"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for index in range(4):
        cv2.imwrite(str(folder / f"{index}.png"), rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))
    settings = {"data": [str(folder)], "out": str(tmp_path / "run"), "batch": 2, "patch": 12, "steps": 2,
                "log_every": 1, "checkpoint_every": 1000, "seed": 5}
    config, state = configure("edsr-baseline", settings, resume=False)
    Trainer(config, state).run()
    best = json.loads((tmp_path / "run" / "model.json").read_text())["best"]
    assert best["psnr"] is None and "no --val-set" in best["note"] and "best.pt" in best["note"]
    assert not (tmp_path / "run" / "best.pt").exists()


def test_eval_tables_name_a_run_export_by_its_folder():
    from srcli.cli.eval_cmd import method_label

    assert method_label("runs/x2/model.pt") == "x2/model.pt"
    assert method_label("runs/mdsr/best.pt") == "mdsr/best.pt"
    assert method_label("edsr-baseline-x2") == "edsr-baseline-x2"
    assert method_label("/weights/vdsr.pth") == "vdsr.pth"
