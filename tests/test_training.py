"""srcli train: patch data, recipes, exact resume, init-from, export, and bad input (one line, non-zero exit)."""

from __future__ import annotations

import io
import json
import math
import os
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from loopback import free_port
from typer.testing import CliRunner

from srcli.cli import app
from srcli.errors import TrainingError
from srcli.models import build
from srcli.resize import downscale
from srcli.training import Trainer, configure, make_config
from srcli.training.data import PatchSampler, TrainingData, drop_small, load_training_data, minibatch_scale
from srcli.training.events import Finished, Logged, Note, Progress, Saved, Started, TrainEvent
from srcli.weights import load_checkpoint

REPO = Path(__file__).resolve().parent.parent
PSNR_FLOOR = 20.0  # 16 steps reach about 27.8 dB on Set5 x2 (bicubic: 33.7)


@pytest.fixture
def tiny_images(tmp_path: Path) -> Path:
    """Six smooth synthetic images of the T91 kind of size (real T91 images are used where noted)."""
    folder = tmp_path / "hr"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for index in range(6):
        small = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
        cv2.imwrite(str(folder / f"{index}.png"), cv2.resize(small, (96, 72), interpolation=cv2.INTER_CUBIC))
    return folder


def _train(out: Path, data: Path, resume: bool = False, recipe: str | None = "edsr-baseline", **overrides):
    settings = {"data": [str(data)], "out": str(out), "batch": 4, "patch": 12, "log_every": 1,
                "checkpoint_every": 1000, "seed": 5, **overrides}
    config, state = configure(None if resume else recipe, settings, resume)
    return Trainer(config, state).run()


def _losses(run: Path) -> list[float]:
    lines = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    return [line["loss"] for line in lines if "loss" in line]


def test_patches_are_aligned_with_the_bicubic_lr(tiny_images: Path, tmp_path: Path) -> None:
    data = load_training_data([str(tiny_images)], [3], "lr", tmp_path / "cache")
    sampler = PatchSampler(data, patch=8, batch=16, seed=0, augment=False)
    lr, hr, scale = sampler.batch(0)
    assert (lr.shape, hr.shape, scale) == ((16, 8, 8, 3), (16, 24, 24, 3), 3)
    # an HR patch at a multiple of the scale downscales to exactly its LR patch (MATLAB bicubic is local
    # up to the border, so compare the interior)
    again = np.stack([downscale(patch, 3) for patch in hr])
    assert np.abs(again[:, 2:-2, 2:-2].astype(int) - lr[:, 2:-2, 2:-2].astype(int)).max() <= 1


def test_batches_depend_only_on_seed_rank_step_and_augment_both_sides(tiny_images: Path, tmp_path: Path) -> None:
    data = load_training_data([str(tiny_images)], [2], "lr", tmp_path / "cache")
    first, second = PatchSampler(data, 8, 8, seed=1), PatchSampler(data, 8, 8, seed=1)
    assert np.array_equal(first.batch(7)[0], second.batch(7)[0])
    assert not np.array_equal(first.batch(7)[0], first.batch(8)[0])
    other_rank = PatchSampler(data, 8, 8, seed=1, rank=1)
    assert not np.array_equal(first.batch(7)[0], other_rank.batch(7)[0])
    # the cache gives back the same arrays without decoding
    cached = load_training_data([str(tiny_images)], [2], "lr", tmp_path / "cache")
    assert all(np.array_equal(a, b) for a, b in zip(data.lr[2], cached.lr[2], strict=True))


def test_small_images_are_dropped_and_none_left_is_an_error() -> None:
    big, small = np.zeros((40, 40, 3), np.uint8), np.zeros((10, 10, 3), np.uint8)
    data = TrainingData("lr", ["big", "small"], [big, small], {2: [big[:20, :20], small[:5, :5]]})
    warnings = []
    kept = drop_small(data, 8, warnings.append)
    assert kept.names == ["big"] and "small" in warnings[0].message
    with pytest.raises(TrainingError, match="smaller than a 30x30 patch"):
        drop_small(data, 30)


def test_recipes_hold_the_papers_settings() -> None:
    edsr = make_config("edsr-baseline")
    assert (edsr.loss, edsr.optimizer, edsr.lr, edsr.lr_step, edsr.lr_gamma, edsr.batch, edsr.patch) == (
        "l1", "adam", 1e-4, 200_000, 0.5, 16, 48)
    vdsr = make_config("vdsr")
    assert (vdsr.loss, vdsr.optimizer, vdsr.lr, vdsr.lr_gamma, vdsr.momentum, vdsr.weight_decay, vdsr.clip) == (
        "mse", "sgd", 0.1, 0.1, 0.9, 1e-4, 0.01)
    assert (vdsr.lr_step_epochs, vdsr.steps_epochs, vdsr.scales) == (20.0, 80.0, [2, 3, 4])
    with pytest.raises(TrainingError, match="single-scale"):
        make_config("edsr-baseline", scales=[2, 3])


def test_resume_continues_exactly(tiny_images: Path, tmp_path: Path) -> None:
    _train(tmp_path / "once", tiny_images, steps=6)
    _train(tmp_path / "twice", tiny_images, steps=3)
    _train(tmp_path / "twice", tiny_images, resume=True, steps=6)
    once, twice = _losses(tmp_path / "once"), _losses(tmp_path / "twice")
    assert len(once) == len(twice) == 6
    assert np.allclose(once, twice, rtol=1e-5, atol=1e-6)


def test_a_cosine_run_resumes_at_its_own_length_only(tiny_images: Path, tmp_path: Path) -> None:
    out = tmp_path / "cosine"
    _train(out, tiny_images, steps=2, lr_schedule="cosine")
    config, state = configure(None, {"out": str(out), "steps": 2}, resume=True)
    assert (config.steps, state["step"]) == (2, 2)
    with pytest.raises(TrainingError, match=r"keeps a cosine run's length \(2 steps.*--init-from"):
        configure(None, {"out": str(out), "steps": 4}, resume=True)


def test_mdsr_updates_only_the_scale_it_trained(tiny_images: Path, tmp_path: Path) -> None:
    result = _train(tmp_path / "mdsr", tiny_images, recipe="mdsr-baseline", steps=1)
    trained = torch.load(result.weights, weights_only=True)
    torch.manual_seed(5)
    fresh = build("mdsr-baseline", scales=(2, 3, 4)).state_dict()
    scale = [2, 3, 4].index(minibatch_scale([2, 3, 4], seed=5, step=0))
    for index in range(3):
        key = f"upsample.{index}.0.weight"
        changed = not torch.equal(trained[key], fresh[key])
        assert changed == (index == scale), (index, scale)


def test_export_loads_and_init_from_skips_only_the_upsampler(tiny_images: Path, tmp_path: Path) -> None:
    x2 = _train(tmp_path / "x2", tiny_images, steps=2)
    model, spec = load_checkpoint(x2.weights)
    assert (spec.arch, spec.config["scale"]) == ("edsr", 2)
    exported = torch.load(x2.weights, weights_only=True)
    assert torch.equal(model.state_dict()["body.3.body.0.weight"], exported["body.3.body.0.weight"])
    meta = json.loads((tmp_path / "x2" / "model.json").read_text())
    assert meta["steps"] == 2 and len(meta["sha256"]) == 64
    x3 = _train(tmp_path / "x3", tiny_images, scales=[3], steps=1, init_from=str(x2.weights), lr=1e-12)
    state3 = torch.load(x3.weights, weights_only=True)
    state2 = torch.load(x2.weights, weights_only=True)
    assert torch.allclose(state3["head.0.weight"], state2["head.0.weight"], atol=1e-6)
    assert state3["tail.0.0.weight"].shape[0] == 9 * 64


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "srcli", "train", *args], capture_output=True, text=True, env=env,
                          cwd=REPO, timeout=120)


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("missing", "does not exist"),
        ("empty", "holds no PNG"),
        ("too-small", "smaller than a 48x48 patch"),
        ("edsr-two-scales", "single-scale"),
        ("vdsr-x8", "cannot train x8"),
        ("resume-nothing", "no checkpoint to continue"),
        ("init-vdsr", "is a vdsr model"),
        ("bad-optimizer", "--optimizer must be adam or sgd"),
        ("bad-loss", "--loss must be l1 or mse"),
    ],
)
def test_bad_input_is_one_line_and_a_nonzero_exit(case: str, expected: str, tmp_path: Path,
                                                 tiny_images: Path) -> None:
    out = tmp_path / "run"
    empty = tmp_path / "empty"
    empty.mkdir()
    vdsr = tmp_path / "vdsr.pt"
    torch.save(build("vdsr").state_dict(), vdsr)
    args = {
        "missing": ["--data", str(tmp_path / "nowhere")],
        "empty": ["--data", str(empty)],
        "too-small": ["--data", str(tiny_images), "--scale", "4"],
        "edsr-two-scales": ["--data", str(tiny_images), "--scale", "2,3"],
        "vdsr-x8": ["--recipe", "vdsr", "--data", str(tiny_images), "--scale", "8"],
        "resume-nothing": ["--resume"],
        "init-vdsr": ["--data", str(tiny_images), "--patch", "8", "--init-from", str(vdsr)],
        "bad-optimizer": ["--data", str(tiny_images), "--optimizer", "rmsprop"],
        "bad-loss": ["--data", str(tiny_images), "--loss", "l2"],
    }[case]
    result = _cli(*args, "--out", str(out), "--steps", "1")
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode != 0
    assert len(errors) == 1 and expected in errors[0], result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists()  # a refused run writes nothing


def test_a_sets_own_lr_is_used_and_its_lr_folders_are_not_taken_as_hr(tmp_path: Path) -> None:
    hr = np.random.default_rng(2).integers(0, 256, (40, 60, 3), dtype=np.uint8)
    own = np.full((20, 30, 3), 7, np.uint8)  # deliberately not the bicubic of hr
    (tmp_path / "DIV2K_train_HR").mkdir()
    (tmp_path / "DIV2K_train_LR_bicubic" / "X2").mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "DIV2K_train_HR" / "0001.png"), hr)
    cv2.imwrite(str(tmp_path / "DIV2K_train_LR_bicubic" / "X2" / "0001x2.png"), own)
    data = load_training_data([str(tmp_path)], [2, 3], "lr", None)
    assert len(data) == 1
    assert np.array_equal(data.lr[2][0], own)
    assert np.array_equal(data.lr[3][0], downscale(hr[:, :, ::-1], 3))


@pytest.mark.slow
def test_ddp_on_two_cpu_processes_shards_patches_and_writes_once(tiny_images: Path, tmp_path: Path) -> None:
    """Rank 0 sees the single-process batch, so step 1's loss matches; step 2 differs because the update
    averaged rank 1's gradient (its own patches). Unused MDSR upsamplers stay untouched under DDP."""
    single = _train(tmp_path / "single", tiny_images, recipe="mdsr-baseline", steps=2)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    out = tmp_path / "ddp"
    port = str(free_port())
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", port,
               "-m", "srcli", "train", "--recipe", "mdsr-baseline", "--data", str(tiny_images), "--out", str(out),
               "--steps", "2", "--batch", "4", "--patch", "12", "--log-every", "1", "--seed", "5"]
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    ddp, alone = _losses(out), _losses(single.run_dir)
    assert len(ddp) == 2  # one writer
    assert ddp[0] == pytest.approx(alone[0], rel=1e-5)
    assert ddp[1] != pytest.approx(alone[1], rel=1e-4)
    trained = torch.load(out / "model.pt", weights_only=True)
    torch.manual_seed(5)
    fresh = build("mdsr-baseline", scales=(2, 3, 4)).state_dict()
    used = {minibatch_scale([2, 3, 4], seed=5, step=s) for s in range(2)}
    for index, scale in enumerate((2, 3, 4)):
        key = f"upsample.{index}.0.weight"
        assert torch.equal(trained[key], fresh[key]) == (scale not in used)


def _eval_json(*args: str) -> dict:
    """`srcli eval ... --json` in-process: its results, one per (set, scale)."""
    result = CliRunner().invoke(app, ["eval", *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)["results"]


def test_logged_validation_equals_what_srcli_eval_prints_for_the_export(tiny_images: Path, tmp_path: Path) -> None:
    """Validation runs srcli.evaluate's own loop: a run's last val is `srcli eval --weights RUN/model.pt`."""
    rng = np.random.default_rng(4)
    bench = tmp_path / "bench"
    for index in range(2):
        hr = cv2.GaussianBlur(rng.integers(0, 256, (42, 54, 3), dtype=np.uint8), (5, 5), 2)
        (bench / "Set5" / "HR").mkdir(parents=True, exist_ok=True)
        (bench / "Set5" / "LR_bicubic" / "X2").mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(bench / "Set5" / "HR" / f"im{index}.png"), hr)
        cv2.imwrite(str(bench / "Set5" / "LR_bicubic" / "X2" / f"im{index}x2.png"), downscale(hr, 2))
    run = _train(tmp_path / "run", tiny_images, steps=2, val_set="set5", data_dir=str(bench), val_every=2)
    lines = [json.loads(line) for line in (run.run_dir / "log.jsonl").read_text().splitlines()]
    # log.jsonl's layout, which tools read: loss lines, then a val line keyed by the step
    assert [list(line) for line in lines] == [["step", "loss", "lr", "steps_per_s", "time"]] * 2 + [["val", "step"]]
    assert list(lines[2]["val"]) == ["step", "set", "psnr", "ssim", "per_scale"]
    logged = [line["val"] for line in lines if "val" in line]
    assert [record["step"] for record in logged] == [2] and logged[0]["set"] == "Set5"
    [scored] = _eval_json("set5", "--weights", str(run.weights), "--scale", "2", "--data-dir", str(bench))
    assert scored["images"] == 2
    assert logged[0]["per_scale"]["x2"]["psnr"] == pytest.approx(scored["psnr"], abs=1e-6)
    assert logged[0]["per_scale"]["x2"]["ssim"] == pytest.approx(scored["ssim"], abs=1e-6)


@pytest.mark.slow
def test_short_run_on_real_images_learns_resumes_and_exports(train_dir: Path, benchmark_dir: Path,
                                                            tmp_path: Path) -> None:
    images = sorted((train_dir / "T91").iterdir())[:6]
    out = tmp_path / "run"
    settings = {"data": [str(p) for p in images], "out": str(out), "batch": 4, "patch": 16, "log_every": 1,
                "checkpoint_every": 1000, "lr": 3e-4}
    config, _ = configure("edsr-baseline", {**settings, "steps": 10}, resume=False)
    Trainer(config).run()
    config, state = configure(None, {**settings, "steps": 16}, resume=True)
    result = Trainer(config, state).run()
    losses = _losses(out)
    assert len(losses) == 16 and result.step == 16
    assert np.mean(losses[-4:]) < 0.6 * np.mean(losses[:4]), losses
    model, spec = load_checkpoint(result.weights)
    assert spec.config["scale"] == 2
    with torch.no_grad():
        assert model(torch.rand(1, 3, 10, 12) * 255).shape == (1, 3, 20, 24)
    # issue 4's "done when": the exported file is scored by `srcli eval --weights` as it is
    [scored] = _eval_json("set5", "--weights", str(result.weights), "--scale", "2", "--data-dir", str(benchmark_dir))
    assert scored["images"] == 5 and math.isfinite(scored["psnr"])
    assert scored["psnr"] > PSNR_FLOOR, scored["psnr"]


def test_the_live_panel_moves_from_the_first_step(tiny_images: Path, tmp_path: Path) -> None:
    from rich.console import Console

    from srcli.cli.train_cmd import _Display

    settings = {"data": [str(tiny_images)], "out": str(tmp_path / "run"), "batch": 4, "patch": 12, "steps": 3,
                "log_every": 100, "checkpoint_every": 1000, "seed": 5}
    config, state = configure("edsr-baseline", settings, resume=False)
    events: list[TrainEvent] = []
    Trainer(config, state, on_event=events.append).run()
    kinds = [type(event) for event in events]
    first = events[kinds.index(Progress)]
    assert isinstance(first, Progress)
    assert kinds.index(Progress) < kinds.index(Logged)  # long before --log-every (here only the last step logs)
    assert first.step == 1 and first.steps == 3
    assert math.isfinite(first.loss) and first.steps_per_s > 0 and first.eta_s >= 0
    assert kinds[0] is Note and kinds[-1] is Finished and Started in kinds and Saved in kinds

    with _Display(log_every_line=False) as display:
        display(Started(step=0, steps=3, device="cpu", amp="none", images=6, parameters=1, world=1, threads=1,
                        epoch_steps=0, config=config.to_dict()))
        display(first)
        recorder = Console(record=True, width=100, file=io.StringIO())
        recorder.print(display._render())
    text = recorder.export_text()
    assert "1 / 3" in text and f"{first.loss:.4f}" in text and "steps/s" in text
    assert "loss      -" not in text


def test_every_train_option_is_a_train_config_field() -> None:
    """TrainConfig is the one place: each CLI parameter overrides the field of its name (recipe and resume aside)."""
    import typer.main

    from srcli.cli.train_cmd import _overrides
    from srcli.training import TrainConfig

    command = typer.main.get_command(app).commands["train"]
    names = {param.name for param in command.params}
    assert names - {field.name for field in fields(TrainConfig)} == {"resume", "preview_degradation"}  # actions
    given = {"scales": "2,3", "data": ("a", "b"), "out": Path("runs/x"), "steps": None, "compile": True,
             "recipe": "mdsr", "resume": False}
    assert _overrides(given) == {"scales": [2, 3], "data": ["a", "b"], "out": "runs/x", "steps": None,
                                 "compile": True}
