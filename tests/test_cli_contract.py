"""The user-facing contract across commands: one-line errors, readable 80-column tables, honest summaries."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch
from upscale_helpers import REPO, assert_one_error_line, run_cli, srcli_command, tiny_checkpoint, write_image

from srcli.cli.common import parse_scales


@pytest.fixture
def cli(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")  # what CI logs and pipes get
    return lambda *argv: run_cli([str(a) for a in argv], capsys, monkeypatch)


@pytest.fixture
def image(tmp_path: Path) -> Path:
    return write_image(tmp_path / "photo.png")


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["upscale", "{image}", "--scale", "abc"], "'--scale'"),
        (["upscale"], "Missing argument 'INPUT'"),
        (["upscale", "{image}", "--tile", "-3"], "'--tile'"),
        (["upscale", "{image}", "--batch", "0"], "'--batch'"),
        (["models", "--foo"], "--foo"),
        (["eval", "set5", "--model", "bicubic", "--scale", "two"], "'--scale'"),
    ],
)
def test_usage_errors_are_one_line_that_points_at_help(cli, image, argv, expected):
    code, out, err = cli(*(str(image) if arg == "{image}" else arg for arg in argv))
    line = assert_one_error_line(code, err)
    assert code == 2
    assert expected in line and "--help`)" in line
    assert out == ""


def test_scales_may_be_written_as_the_papers_do():
    assert parse_scales("x2,x3, x4") == [2, 3, 4]
    assert parse_scales("4") == [4]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only refusal")
@pytest.mark.parametrize("precision", ["fp16"])
def test_half_precision_on_cpu_is_refused_before_anything_is_written(cli, image, tmp_path, precision):
    target = tmp_path / "out.png"
    code, _, err = cli("upscale", image, "-o", target, "--device", "cpu", "--precision", precision)
    line = assert_one_error_line(code, err)
    assert f"--precision {precision} needs a GPU" in line
    assert not target.exists()


def test_a_bad_precision_is_reported_before_the_outputs_are_looked_at(cli, image, tmp_path):
    existing = write_image(tmp_path / "taken.png", seed=1)
    code, _, err = cli("upscale", image, "-o", existing, "--precision", "fp8")
    assert "unknown precision 'fp8'" in assert_one_error_line(code, err)


def test_a_scale_without_a_built_in_model_suggests_outscale(cli, image):
    code, _, err = cli("upscale", image, "--scale", "5")
    line = assert_one_error_line(code, err)
    assert "--scale 4 --outscale 5" in line


def test_eval_with_a_missing_data_dir_prints_only_the_error(tmp_path):
    # A child process with stderr on a pipe: a progress display once left a blank line there.
    run = subprocess.run(srcli_command("eval", "set5", "--model", "bicubic", "--data-dir", tmp_path / "absent"),
                         cwd=REPO, capture_output=True, text=True, check=False)
    assert "does not exist" in assert_one_error_line(run.returncode, run.stderr)
    assert run.stderr.count("\n") == 1 and run.stdout == ""


def test_models_table_fits_80_columns_without_cutting_cells(cli):
    code, out, err = cli("models")
    assert code == 0 and out == ""
    assert "…" not in err
    assert max(len(line) for line in err.splitlines()) <= 80
    rows = {line.split()[0]: line.split() for line in err.splitlines() if line.startswith(" ") and line.strip()}
    assert rows["srcli-mdsr-baseline"][1:4] == ["37.61", "33.94", "31.57"]  # x2, x3, x4 Set5 PSNR
    assert rows["edsr-x4"][1] == "32.48"
    assert "default (no --model or --weights): srcli-mdsr-baseline" in err


def test_single_image_summary_names_the_default_model(cli, image):
    code, _, err = cli("upscale", image, "--scale", "2", "--tile", "0", "--backend", "torch")
    assert code == 0, err
    target = image.with_name("photo_x2.png")
    assert err.strip().startswith(f"wrote {target} (16x12 -> 32x24, srcli-mdsr-baseline on cpu fp32 torch, ")


def test_batch_option_and_the_engine_plan_reach_json_and_verbose(cli, image, tmp_path):
    checkpoint = tiny_checkpoint(tmp_path / "tiny_x2.pt")
    code, out, err = cli("upscale", image, "--weights", checkpoint, "--tile", "8", "--tile-pad", "2", "--batch", "3",
                         "--backend", "torch", "--json", "--verbose", "-o", tmp_path / "big.png", "--border", "zero")
    assert code == 0, err
    report = json.loads(out)
    assert report["precision"] == "fp32" and report["device"] == "cpu" and report["backend"] == "torch"
    # 16x12 in 8-px tiles: 2 x 2 windows of 12x10 (8 + 2 pad each side, kept inside the image); --batch 3 caps
    # each forward at 3 of them; 4 windows of 12x10 computed for 16x12 kept: overlap 480/192 = 2.5.
    assert report["images"][0]["plan"] == {
        "device": "cpu", "precision": "fp32", "tile": 8, "tile_pad": 2, "tiles": 4, "batch": 3,
        "backoffs": 0, "fp32_fallbacks": 0, "tiling": "exact", "backend": "torch", "overlap": 2.5,
        "precision_reason": "fp32: bf16 measured 2.0x slower than fp32 on this CPU",  # as conftest pins it
    }
    assert report["precision_reason"] == report["images"][0]["plan"]["precision_reason"]
    assert ("engine: cpu fp32 torch, 4 tiles of 8 px + 2 pad, overlap 2.50x, batch 3, fp32: bf16 measured 2.0x "
            "slower than fp32 on this CPU") in err


def test_eval_table_keeps_numbers_whole_at_80_columns(cli, tmp_path, benchmark_dir):
    checkpoint = tiny_checkpoint(tmp_path / "a_rather_long_checkpoint_file_name_x2.pt")
    code, _, err = cli("eval", "set5", "--weights", checkpoint, "--scale", "2", "--data-dir", benchmark_dir)
    assert code == 0, err
    assert "…" not in err
    [row] = [line for line in err.splitlines() if "Set5" in line]
    psnr, ssim = row.split()[3:5]
    assert len(psnr.split(".")[1]) == 3 and len(ssim.split(".")[1]) == 4
