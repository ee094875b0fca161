"""Training curves: curves.png at each validation with matplotlib, one hint without it, never a failed run."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from srcli.training import Trainer, configure
from srcli.training.curves import CURVES, PLOTS_HINT, Curves, plot, read_log
from srcli.training.events import Note


def _log(path: Path) -> Path:
    lines = [{"step": s, "loss": 1.0 / s, "lr": 1e-4, "steps_per_s": 3.0, "time": 0.0} for s in (1, 2, 3, 4)]
    lines.insert(2, {"val": {"step": 2, "set": "v", "psnr": 20.5, "ssim": 0.7, "per_scale": {}}, "step": 2})
    lines.append({"val": {"step": 4, "set": "v", "psnr": 21.5, "ssim": 0.8, "per_scale": {}}, "step": 4})
    path.write_text("".join(json.dumps(line) + "\n" for line in lines) + "not json\n")
    return path


def test_the_log_gives_both_curves(tmp_path):
    losses, psnrs = read_log(_log(tmp_path / "log.jsonl"))
    assert losses == [(1, 1.0), (2, 0.5), (3, 1 / 3), (4, 0.25)]
    assert psnrs == [(2, 20.5), (4, 21.5)]


def test_curves_png_with_matplotlib(tmp_path):
    pytest.importorskip("matplotlib")
    assert plot(_log(tmp_path / "log.jsonl"), tmp_path / CURVES)
    image = cv2.imread(str(tmp_path / CURVES))
    assert image.shape == (400, 1000, 3)
    assert (image < 200).any()  # lines, labels, not a blank page
    assert sorted(p.name for p in tmp_path.iterdir()) == [CURVES, "log.jsonl"]  # no temp file left


def test_without_matplotlib_one_hint_per_run(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` raises ImportError
    notes: list[str] = []
    curves = Curves(tmp_path, notes.append)
    _log(tmp_path / "log.jsonl")
    curves.validated(2, 20.5, 0.7)
    curves.validated(4, 21.5, 0.8)
    curves.close()
    assert notes == [PLOTS_HINT]
    assert not (tmp_path / CURVES).exists()


def _images(folder: Path, count: int, seed: int) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for index in range(count):
        small = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
        cv2.imwrite(str(folder / f"{index}.png"), cv2.resize(small, (64, 48), interpolation=cv2.INTER_CUBIC))
    return folder


def test_a_run_with_validation_writes_its_curves_or_says_why_once(tmp_path, monkeypatch):
    has_matplotlib = "matplotlib" in sys.modules or __import__("importlib").util.find_spec("matplotlib")
    settings = {"data": [str(_images(tmp_path / "train", 4, 1))], "val_set": str(_images(tmp_path / "val", 2, 2)),
                "out": str(tmp_path / "run"), "batch": 2, "patch": 12, "steps": 2, "val_every": 1, "log_every": 1,
                "checkpoint_every": 1000, "seed": 5, "scales": [2]}
    config, state = configure("edsr-baseline", settings, resume=False)
    events: list = []
    Trainer(config, state, on_event=events.append).run()
    hints = [e for e in events if isinstance(e, Note) and e.message == PLOTS_HINT]
    if has_matplotlib:
        assert (tmp_path / "run" / CURVES).is_file() and hints == []
    else:
        assert hints == [Note(PLOTS_HINT)] and not (tmp_path / "run" / CURVES).exists()
