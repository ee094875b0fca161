"""Defaults come from the model, in every command: the default model, its scales, a native scale for --outscale."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from upscale_helpers import assert_one_error_line, run_cli, tiny_checkpoint, write_image

from srcli import weights
from srcli.imageio import read_image


@pytest.fixture
def cli(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")
    return lambda *argv: run_cli([str(a) for a in argv], capsys, monkeypatch)


def _scored(out: str) -> list[tuple[str, int, float]]:
    return [(r["method"], r["scale"], r["psnr"]) for r in json.loads(out)["results"]]


def test_eval_with_no_flag_scores_the_default_model_at_its_scales(cli, benchmark_dir):
    code, out, err = cli("eval", "set5", "--data-dir", benchmark_dir, "--json")
    assert code == 0, err
    default = weights.catalogue()[weights.default_model(4)]
    assert default.name == weights.default_model(2) == weights.default_model(3) == "srcli-mdsr-baseline"
    scored = _scored(out)
    assert [(method, scale) for method, scale, _ in scored] == [(default.name, 2), (default.name, 3), (default.name, 4)]
    for _, scale, psnr in scored:  # the same network `srcli upscale` uses by default, as its manifest says
        assert psnr == pytest.approx(default.psnr("Set5", scale), abs=1e-3)


def test_eval_table_names_the_default_model(cli, benchmark_dir):
    code, _, err = cli("eval", "set5", "--data-dir", benchmark_dir, "--scale", "4")
    assert code == 0, err
    [row] = [line for line in err.splitlines() if "Set5" in line]
    assert row.split()[:3] == ["Set5", "x4", "srcli-mdsr-baseline"]


def test_eval_scores_an_export_at_its_own_scale(cli, benchmark_dir, tmp_path):
    export = tiny_checkpoint(tmp_path / "model.pt", scale=2)
    code, out, err = cli("eval", "set5", "--weights", export, "--data-dir", benchmark_dir, "--json")
    assert code == 0, err
    assert [scale for _, scale, _ in _scored(out)] == [2]


def test_eval_single_scale_catalogue_model_means_its_scale(cli, benchmark_dir):
    code, out, err = cli("eval", "set5", "--model", "srcli-edsr-baseline-x4", "--data-dir", benchmark_dir, "--json")
    assert code == 0, err
    [(method, scale, psnr)] = _scored(out)
    assert (method, scale) == ("srcli-edsr-baseline-x4", 4)
    assert psnr == pytest.approx(weights.catalogue()[method].psnr("Set5", 4), abs=1e-3)


def test_eval_asked_scale_the_model_lacks_is_one_line(cli, benchmark_dir, tmp_path):
    export = tiny_checkpoint(tmp_path / "model.pt", scale=2)
    code, _, err = cli("eval", "set5", "--weights", export, "--scale", "3", "--data-dir", benchmark_dir)
    assert "cannot upscale x3" in assert_one_error_line(code, err)


def test_upscale_single_scale_model_alone_means_its_scale(cli, tmp_path):
    source = write_image(tmp_path / "a.png")
    code, out, err = cli("upscale", source, "--model", "srcli-edsr-baseline-x4", "--json")
    assert code == 0, err
    assert json.loads(out)["scale"] == 4
    assert read_image(tmp_path / "a_x4_srcli-edsr-baseline.png").shape == (48, 64, 3)


def test_outscale_alone_runs_a_native_model_without_resizing(cli, tmp_path):
    source = write_image(tmp_path / "a.png")
    code, out, err = cli("upscale", source, "--outscale", "2", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert (report["model"], report["scale"], report["output_scale"]) == ("srcli-mdsr-baseline", 2, 2)
    assert "resize" not in err
    target = tmp_path / "a_x2.png"
    assert read_image(target).shape == (24, 32, 3)
    # Byte-equal to asking for the x2 model itself: no x4 run shrunk to x2.
    code, _, err = cli("upscale", source, "--scale", "2", "-o", tmp_path / "b.png")
    assert code == 0, err
    assert read_image(tmp_path / "b.png").tobytes() == read_image(target).tobytes()


def test_a_resize_is_said_in_the_summary(cli, tmp_path):
    source = write_image(tmp_path / "a.png")
    code, _, err = cli("upscale", source, "--outscale", "3.5", "--backend", "torch")
    assert code == 0, err
    target = tmp_path / "a_x3.5.png"
    assert f"wrote {target} (16x12 -> 56x42, srcli-mdsr-baseline on cpu fp32 torch, x4 model + resize to x3.5, " in err
    write_image(tmp_path / "in" / "b.png")
    write_image(tmp_path / "in" / "c.png", seed=1)
    code, _, err = cli("upscale", tmp_path / "in", "--outscale", "2.5")
    assert code == 0, err
    assert "with srcli-mdsr-baseline (x3 model + resize to x2.5)" in err


@pytest.mark.parametrize(("outscale", "scales", "expected"), [
    (2, (2, 3, 4), 2), (3.5, (2, 3, 4), 4), (2.5, (2, 3, 4), 3), (1.5, (2, 3, 4), 2), (6, (2, 3, 4), 4), (3, (4,), 4),
])
def test_nearest_scale_prefers_native_then_the_next_up(outscale, scales, expected):
    assert weights.nearest_scale(outscale, scales) == expected


def test_own_scales_of_an_any_scale_model_are_the_usual_three(vdsr_checkpoint: Path):
    resolved = weights.resolve(str(vdsr_checkpoint), None)
    assert weights.own_scales(resolved.spec) == (2, 3, 4)
    assert list(weights.select_scales(path=vdsr_checkpoint)) == [2, 3, 4]
