"""`bicubic` is one method everywhere: `srcli upscale --model bicubic`, `srcli models`, `srcli eval`."""

from __future__ import annotations

import json

import numpy as np
import pytest
from upscale_helpers import run_cli, write_image

from srcli import weights
from srcli.engine import UpscaleOptions, Upscaler
from srcli.imageio import read_image
from srcli.resize import imresize


@pytest.fixture
def cli(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    return lambda *argv: run_cli([str(a) for a in argv], capsys, monkeypatch)


def _matlab_double(image: np.ndarray, scale: int) -> np.ndarray:
    """MATLAB `imresize(im2double(image), scale, 'bicubic')`, rounded once to the image's dtype."""
    peak = np.iinfo(image.dtype).max
    return np.clip(np.floor(imresize(image / float(peak), scale=scale) * peak + 0.5), 0, peak).astype(image.dtype)


@pytest.mark.parametrize("tile", ["0", "8"])
def test_upscale_model_bicubic_is_the_matlab_resize_under_any_tiling(cli, tmp_path, tile):
    source = write_image(tmp_path / "a.png", shape=(21, 30, 3))
    code, out, err = cli("upscale", source, "--model", "bicubic", "--scale", "3", "--tile", tile, "--json")
    assert code == 0, err
    assert json.loads(out)["model"] == "bicubic"
    assert np.array_equal(read_image(tmp_path / "a_x3_bicubic.png"), _matlab_double(read_image(source), 3))


def test_bicubic_in_the_engine_keeps_sixteen_bits(tmp_path):
    image = np.random.default_rng(1).integers(0, 65536, (10, 13, 3), dtype=np.uint16)
    resolved = weights.resolve("bicubic", 2)
    out = Upscaler(resolved.model, 2, UpscaleOptions(tile=0), spec=resolved.spec).upscale(image).image
    assert out.dtype == np.uint16
    # The engine carries pixels in float32: a 16-bit value may round 1 of 65535 the other way.
    assert np.abs(out.astype(np.int64) - _matlab_double(image, 2)).max() <= 1


def test_bicubic_alone_means_x4(cli, tmp_path):
    source = write_image(tmp_path / "a.png")
    code, out, err = cli("upscale", source, "--model", "bicubic", "--json")
    assert code == 0, err
    assert json.loads(out)["scale"] == 4
    assert read_image(tmp_path / "a_x4_bicubic.png").shape == (48, 64, 3)


def test_models_lists_bicubic_with_its_reference_scores(cli):
    code, _, err = cli("models")
    assert code == 0
    [row] = [line.split() for line in err.splitlines() if line.strip().startswith("bicubic ")]
    assert row == ["bicubic", "33.66", "30.39", "28.42", "-", "-", "built-in"]
    code, out, _ = cli("models", "--json")
    record = {r["name"]: r for r in json.loads(out)}["bicubic"]
    assert (record["source"], record["status"], record["parameters"]) == ("builtin", "built-in", 0)
    assert record["path"] is None
    assert record["metrics"]["Set14"]["4"]["psnr"] == 26.0


def test_bicubic_is_not_downloadable(cli):
    code, _, err = cli("download", "bicubic")
    assert code != 0 and "bicubic" in err


def test_eval_bicubic_still_scores_the_papers_pipeline(cli, benchmark_dir):
    code, out, err = cli("eval", "set5", "--model", "bicubic", "--data-dir", benchmark_dir, "--json")
    assert code == 0, err
    scores = {r["scale"]: round(r["psnr"], 3) for r in json.loads(out)["results"]}
    entry = weights.catalogue()["bicubic"]
    assert scores == {s: entry.psnr("Set5", s) for s in (2, 3, 4)}
