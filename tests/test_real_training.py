"""`srcli train --degradation real`: each patch's LR degraded on the fly from its HR, seeded per patch; the
preview grid; bicubic stays the default."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from upscale_helpers import assert_one_error_line

from srcli.errors import TrainingError
from srcli.imageio import read_image, write_image
from srcli.training import Trainer, configure, make_config
from srcli.training.data import PatchSampler, drop_small, load_training_data
from srcli.training.recipes import degradation_recipe
from srcli.weights import load_checkpoint


@pytest.fixture
def hr_folder(tmp_path: Path) -> Path:
    """Four small HR images: a ramp with a coloured block (edges and flat areas for the degradations to damage)."""
    (tmp_path / "hr").mkdir()
    ramp = np.linspace(0, 255, 80)[None, :, None]
    for index in range(4):
        image = np.broadcast_to(ramp * (index + 1) / 4, (64, 80, 3)).astype(np.uint8)
        image[16:48, 20 + 8 * index : 40 + 8 * index] = (200, 40 * index, 90)
        write_image(tmp_path / "hr" / f"{index}.png", image)
    return tmp_path / "hr"


def _train(out: Path, data: Path, resume: bool = False, **overrides):
    settings = {"data": [str(data)], "out": str(out), "batch": 2, "patch": 12, "log_every": 1, "seed": 3,
                "checkpoint_every": 1000, **overrides}
    config, state = configure(None if resume else "edsr-baseline", settings, resume)
    return Trainer(config, state).run()


def _losses(run: Path) -> list[float]:
    lines = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    return [line["loss"] for line in lines if "loss" in line]


def test_bicubic_stays_the_default(hr_folder, tmp_path):
    config = make_config("edsr-baseline")
    assert (config.degradation, config.degradation_set, degradation_recipe(config)) == ("bicubic", [], None)
    _train(tmp_path / "run", hr_folder, steps=1)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["degradation"] == "bicubic"


def test_real_patches_are_degraded_from_their_hr_and_seeded_per_patch(hr_folder, tmp_path):
    data = drop_small(load_training_data([str(hr_folder)], [2], "lr", tmp_path / "cache"), 12)
    recipe = degradation_recipe(make_config("edsr-baseline", degradation="real"))
    real = PatchSampler(data, 12, 3, seed=7, recipe=recipe)
    bicubic = PatchSampler(data, 12, 3, seed=7)
    inputs, targets, scale = real.batch(5)
    plain_inputs, plain_targets, _ = bicubic.batch(5)
    assert inputs.shape == (3, 12, 12, 3) and inputs.dtype == np.uint8 and scale == 2
    assert np.array_equal(targets, plain_targets)  # the same HR patches...
    assert not np.array_equal(inputs, plain_inputs)  # ...with another LR
    again = PatchSampler(data, 12, 3, seed=7, recipe=recipe).batch(5)[0]
    assert np.array_equal(inputs, again)  # a pure function of seed, rank and step
    assert not np.array_equal(inputs, real.batch(6)[0])


def test_a_short_real_run_trains_resumes_exactly_and_exports(hr_folder, tmp_path):
    settings = {"degradation": "real", "degradation_set": ["jpeg_range=40,95", "noise_range2=1,10"]}
    _train(tmp_path / "once", hr_folder, steps=4, **settings)
    _train(tmp_path / "twice", hr_folder, steps=2, **settings)
    result = _train(tmp_path / "twice", hr_folder, resume=True, steps=4)
    once, twice = _losses(tmp_path / "once"), _losses(tmp_path / "twice")
    assert len(once) == len(twice) == 4
    assert np.allclose(once, twice, rtol=1e-5, atol=1e-6)
    stored = json.loads((tmp_path / "twice" / "config.json").read_text())
    assert stored["degradation"] == "real" and stored["degradation_set"] == settings["degradation_set"]
    model, spec = load_checkpoint(result.weights)
    assert spec.scales == (2,) and model(torch.zeros(1, 3, 8, 8)).shape == (1, 3, 16, 16)
    bicubic = _train(tmp_path / "bicubic", hr_folder, steps=4)
    assert _losses(tmp_path / "bicubic") != once  # the LR really changed what was learned
    assert bicubic.weights is not None


def test_resume_keeps_the_runs_degradation(hr_folder, tmp_path):
    _train(tmp_path / "run", hr_folder, steps=1, degradation="real")
    with pytest.raises(TrainingError, match="keeps the run's degradation"):
        configure(None, {"out": str(tmp_path / "run"), "degradation": "bicubic"}, resume=True)


def test_preview_writes_a_grid_of_the_expected_size_and_trains_nothing(cli, hr_folder, tmp_path):
    out = tmp_path / "run"
    code, _, err = cli("train", "--data", hr_folder, "--degradation", "real", "--preview-degradation", "2",
                       "--patch", "12", "-s", "2", "-o", out, "--degradation-set", "jpeg_prob=1")
    assert code == 0, err
    grid = read_image(out / "degradation-preview.png")
    side = 12 * 2
    assert grid.shape == (2 * side + 4, 2 * side + 4, 3)  # two rows of HR | gap | LR, a gap between rows
    assert not (out / "latest.pt").exists() and sorted(p.name for p in out.iterdir()) == ["degradation-preview.png"]


@pytest.mark.parametrize(("arguments", "expected"), [
    (["--degradation", "real", "--degradation-set", "jpeg_range=40"], "jpeg_range must be (low, high)"),
    (["--degradation", "real", "--degradation-set", "blurry=1"], "unknown degradation setting(s) blurry"),
    (["--degradation", "real", "--degradation-set", "jpeg_range"], "write NAME=VALUE"),
    (["--degradation-set", "jpeg_range=40,95"], "add --degradation real"),
    (["--degradation", "jpeg"], "--degradation must be bicubic or real"),
    (["--degradation", "real", "--recipe", "vdsr"], "bicubic-upscaled image"),
])
def test_bad_degradation_settings_are_one_line(cli, hr_folder, tmp_path, arguments, expected):
    out = tmp_path / "run"
    code, _, err = cli("train", "--data", hr_folder, "--out", out, "--steps", "1", *arguments)
    assert expected in assert_one_error_line(code, err)
    assert not out.exists()
