"""Habits from the tools users know: Real-ESRGAN's flags get srcli's name, --suffix, one short flag one meaning."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import typer
from upscale_helpers import assert_one_error_line, run_cli, tiny_checkpoint, write_image

from srcli.cli import app
from srcli.imageio import read_image


@pytest.fixture
def cli(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    return lambda *argv: run_cli([str(a) for a in argv], capsys, monkeypatch)


@pytest.mark.parametrize(("argv", "hint"), [
    (["-i", "{image}"], "inputs are arguments: srcli upscale photo.png"),
    (["{image}", "-n", "RealESRGAN_x4plus"], "use --model NAME"),
    (["{image}", "-t", "200"], "use --tile N"),
    (["{image}", "-g", "0"], "use --device cuda:N"),
    (["{image}", "--fp32"], "use --precision fp32"),
    (["{image}", "--ext", "png"], "use --format png"),
    (["{image}", "-s", "3.5"], "use --outscale 3.5"),
    (["{image}", "--scale=2.5"], "use --outscale 2.5"),
])
def test_real_esrgan_flags_get_a_one_line_hint(cli, tmp_path, argv, hint):
    image = write_image(tmp_path / "a.png")
    code, out, err = cli("upscale", *(str(image) if a == "{image}" else a for a in argv))
    line = assert_one_error_line(code, err)
    assert hint in line and "--help`)" in line
    assert out == "" and sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]


def test_a_bad_scale_that_is_no_number_gets_no_outscale_hint(cli, tmp_path):
    code, _, err = cli("upscale", write_image(tmp_path / "a.png"), "-s", "two")
    assert "--outscale" not in assert_one_error_line(code, err)


def test_suffix_names_the_outputs(cli, tmp_path):
    checkpoint = tiny_checkpoint(tmp_path / "tiny_x2.pt")
    source = write_image(tmp_path / "in" / "a.png")
    code, _, err = cli("upscale", source, "-w", checkpoint, "--suffix", "out")
    assert code == 0, err
    assert read_image(tmp_path / "in" / "a_out.png").shape == (24, 32, 3)
    code, _, err = cli("upscale", tmp_path / "in", "-w", checkpoint, "--suffix", "", "-o", tmp_path / "big")
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "big").iterdir()) == ["a.png", "a_out.png"]


def test_every_short_flag_has_one_meaning_across_commands():
    same = {"--out": "--output"}  # train's run folder and upscale's output: both "where results go"
    meanings: dict[str, set[str]] = {}
    for command in typer.main.get_command(app).commands.values():
        for param in (p for p in command.params if p.param_type_name == "option"):
            longs = [same.get(o, o) for o in param.opts if o.startswith("--")]
            for short in (o for o in param.opts if not o.startswith("--")):
                meanings.setdefault(short, set()).update(longs)
    assert meanings["-r"] == {"--recursive"}
    assert meanings["-s"] == {"--scale"}
    assert {flag: names for flag, names in meanings.items() if len(names) != 1} == {}


@pytest.mark.parametrize(("typed", "suggested"), [
    ("srcli-mdsr", "did you mean srcli-mdsr-baseline?"),
    ("edsr-basline-x2", "did you mean edsr-baseline-x2?"),
])
def test_unknown_model_suggests_a_prefix_match_first(cli, tmp_path, typed, suggested):
    code, _, err = cli("upscale", write_image(tmp_path / "a.png"), "--model", typed)
    assert suggested in assert_one_error_line(code, err)


def test_rgba_written_as_jpeg_warns_that_alpha_was_flattened(cli, tmp_path):
    rgba = np.random.default_rng(0).integers(0, 256, (12, 16, 4), dtype=np.uint8)
    rgba[:4, :, 3] = 0
    source = tmp_path / "logo.png"
    assert cv2.imwrite(str(source), rgba)
    checkpoint = tiny_checkpoint(tmp_path / "tiny_x2.pt")
    code, _, err = cli("upscale", source, "-w", checkpoint, "--format", "jpg")
    assert code == 0, err
    [warning] = [line for line in err.splitlines() if line.startswith("warning:")]
    assert "logo_x2.jpg: JPG has no alpha channel, so transparency was flattened onto white" in warning
    opaque = tmp_path / "opaque.png"
    rgba[..., 3] = 255
    assert cv2.imwrite(str(opaque), rgba)
    code, _, err = cli("upscale", opaque, "-w", checkpoint, "--format", "jpg")
    assert code == 0 and "warning" not in err
