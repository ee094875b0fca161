"""The Python API: srcli.upscale / load / catalogue / default_weights, RGB in and out, and the README example."""

from __future__ import annotations

import re

import cv2
import numpy as np
import pytest
from upscale_helpers import REPO, run_cli, write_image

import srcli
from srcli.errors import UnknownModelError
from srcli.imageio import read_image


def test_the_readme_example_runs_as_written(capsys):
    text = (REPO / "README.md").read_text()
    section = text.split("### Python API", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    exec(compile(code, "README.md (Python API)", "exec"), {})
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == "srcli-edsr-baseline-x2 2"
    default = srcli.catalogue()["srcli-mdsr-baseline"]
    assert printed[1].split()[:2] == [default.name, str(default.psnr("Set5", 4))]
    assert "'bicubic'" in printed[2]


def test_upscale_equals_the_cli_byte_for_byte(tmp_path, capsys, monkeypatch):
    source = write_image(tmp_path / "a.png", shape=(10, 14, 3))
    code, _, err = run_cli(["upscale", str(source), "--scale", "2", "--tile", "0"], capsys, monkeypatch)
    assert code == 0, err
    from_cli = read_image(tmp_path / "a_x2.png")
    assert srcli.upscale(source, scale=2).tobytes() == from_cli.tobytes()  # a path
    assert srcli.upscale(read_image(source), scale=2).tobytes() == from_cli.tobytes()  # an RGB array


def test_channel_order_is_rgb_and_layouts_survive():
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[..., 0] = 255  # pure red in RGB
    out = srcli.upscale(rgb, scale=2, model="bicubic")
    assert np.array_equal(out[..., 0], np.full((16, 16), 255)) and out[..., 1:].max() == 0
    grey = srcli.upscale(np.full((5, 6), 7, np.uint16), scale=3, model="bicubic")
    assert grey.shape == (15, 18) and grey.dtype == np.uint16 and grey.max() == grey.min() == 7
    rgba = np.dstack([rgb, np.full((8, 8), 255, np.uint8)])
    assert srcli.upscale(rgba, scale=2, model="bicubic").shape == (16, 16, 4)


def test_load_once_upscale_many_and_its_attributes():
    model = srcli.load("srcli-edsr-baseline-x4")
    assert (model.name, model.scale, model.weights.name) == ("srcli-edsr-baseline-x4", 4, "srcli-edsr-baseline-x4")
    image = np.random.default_rng(0).integers(0, 256, (9, 11, 3), dtype=np.uint8)
    assert np.array_equal(model(image), model.upscale(image))
    assert srcli.load(srcli.catalogue()["srcli-edsr-baseline-x3"]).scale == 3  # an entry, its own scale
    assert srcli.load(srcli.default_weights(2), scale=2).scale == 2
    assert srcli.load(outscale=3).scale == 3  # a native model for the final scale, as the CLI


def test_catalogue_entries_carry_their_meta():
    entries = srcli.catalogue()
    meta = entries["edsr-baseline-x4"].meta
    assert meta["metrics"]["Set5"][4]["psnr"] == 32.09
    assert meta["parameters"] == 1517571 and meta["sha256"].startswith("6b446fab") and meta["bytes"] == 6081831
    default = srcli.default_weights()
    assert default.name == "srcli-mdsr-baseline" and default.meta["recipe"]
    assert entries["bicubic"].meta["parameters"] == 0


def test_wrong_inputs_are_clear():
    with pytest.raises(TypeError, match="uint8 or uint16"):
        srcli.upscale(np.zeros((4, 4, 3), np.float32))
    with pytest.raises(UnknownModelError, match="srcli-mdsr-baseline"):
        srcli.load("srcli-mdsr")


def test_a_bgr_file_written_by_opencv_comes_back_rgb(tmp_path):
    bgr = np.zeros((6, 6, 3), np.uint8)
    bgr[..., 0] = 255  # blue, in OpenCV's order
    assert cv2.imwrite(str(tmp_path / "blue.png"), bgr)
    out = srcli.upscale(tmp_path / "blue.png", scale=2, model="bicubic")
    assert out[..., 2].min() == 255 and out[..., :2].max() == 0
