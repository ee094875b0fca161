"""Clean borders: `srcli upscale` extends the image past its edges before the network (reflect by default),
so flat borders stay flat and transparent areas stay transparent; `srcli eval` keeps the papers' zero padding."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch

from srcli.engine import BORDERS, UpscaleOptions, Upscaler
from srcli.imageio import read_image
from srcli.models import build


def _upscale(cli, tmp_path, image: np.ndarray, *extra: str) -> np.ndarray:
    source = tmp_path / "in.png"
    assert cv2.imwrite(str(source), image)  # BGR(A) on disk; read_image gives RGB(A)
    target = tmp_path / "out.png"
    code, _, err = cli("upscale", source, "--scale", "4", "-o", target, "--overwrite", *extra)
    assert code == 0, err
    return read_image(target)


@pytest.mark.parametrize(("value", "name"), [(0, "black"), (255, "white")])
def test_a_flat_image_stays_flat_to_its_corners(cli, tmp_path, value, name):
    out = _upscale(cli, tmp_path, np.full((64, 64, 3), value, np.uint8))
    assert out.shape == (256, 256, 3)
    assert np.abs(out.astype(int) - value).max() <= 2, name


def test_the_papers_zero_padding_is_still_there_on_request(cli, tmp_path):
    out = _upscale(cli, tmp_path, np.zeros((64, 64, 3), np.uint8), "--border", "zero")
    assert out.max() > 2  # what the networks' zero padding does to a black image's border


def test_a_single_pixel_keeps_its_colour(cli, tmp_path):
    colour = np.array([[[90, 40, 200]]], np.uint8)  # BGR on disk
    out = _upscale(cli, tmp_path, colour)
    assert out.shape == (4, 4, 3)
    assert np.abs(out.astype(int) - colour[0, 0, ::-1]).max() <= 2


def test_transparent_areas_of_a_logo_stay_transparent(cli, tmp_path):
    logo = np.zeros((64, 64, 4), np.uint8)
    cv2.circle(logo, (32, 32), 16, (220, 120, 30, 255), -1)  # BGRA: an opaque disc on full transparency
    out = _upscale(cli, tmp_path, logo)
    alpha, hidden = out[..., 3], logo[..., 3] == 0
    # Away from the disc's edge (2 LR px outside, 4 inside: the network rings a little by a sharp edge), alpha
    # is exactly 0 outside and within 2 levels of 255 inside.
    outside = cv2.erode(hidden.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    inside = cv2.erode((~hidden).astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool)
    grow = lambda mask: np.kron(mask, np.ones((4, 4), bool))  # noqa: E731 - LR mask -> output pixels
    assert alpha[grow(outside)].max() == 0
    assert alpha[grow(inside)].min() >= 253
    assert np.abs(out[grow(inside)][:, :3].astype(int) - [30, 120, 220]).max() <= 2
    # Wherever the input was transparent and the upscaled alpha is under half, it is 0: no faint residue.
    faint = grow(hidden) & (alpha < 128)
    assert faint.any() and alpha[faint].max() == 0


@pytest.mark.parametrize("border", [b for b in BORDERS if b != "zero"])
def test_an_extended_border_is_still_exact_under_any_tiling(border):
    torch.manual_seed(0)
    model = build("edsr-baseline", scale=2, blocks=2).eval()
    image = np.random.default_rng(0).integers(0, 256, (37, 29, 3), dtype=np.uint8)
    whole = Upscaler(model, 2, UpscaleOptions(device="cpu", tile=0, border=border)).upscale(image).image
    for tile, batch in ((8, 1), (16, 3)):
        tiled = Upscaler(model, 2, UpscaleOptions(device="cpu", tile=tile, batch=batch, border=border))
        assert tiled.upscale(image).image.tobytes() == whole.tobytes()
    zero = Upscaler(model, 2, UpscaleOptions(device="cpu", tile=0)).upscale(image).image
    assert whole.shape == zero.shape and not np.array_equal(whole, zero)


def test_eval_keeps_zero_padding_and_offers_the_border(cli, benchmark_dir):
    def scored(*extra: str) -> float:
        code, out, err = cli("eval", "set5", "--scale", "4", "--data-dir", benchmark_dir, "--json", *extra)
        assert code == 0, err
        report = json.loads(out)
        assert report["border"] == (extra[1] if extra else "zero")
        return report["results"][0]["psnr"]

    paper, reflect = scored(), scored("--border", "reflect")
    assert paper == scored("--border", "zero")
    assert paper == pytest.approx(31.569, abs=1e-3)  # the default model's manifest score
    assert reflect != paper and abs(reflect - paper) < 0.1


def test_each_default_lives_in_one_preset_that_the_api_and_the_commands_read():
    import inspect

    from srcli import api
    from srcli.cli import eval_cmd, upscale_cmd

    upscale, scoring = UpscaleOptions.for_upscale(), UpscaleOptions.for_scoring()
    assert (upscale.border, upscale.backend, upscale.tile) == ("reflect", "auto", None)
    assert (scoring.border, scoring.backend, scoring.tile) == ("zero", "torch", 0)
    assert UpscaleOptions.for_scoring(border="reflect", device="cpu").border == "reflect"
    assert inspect.signature(api.load).parameters["border"].default == upscale.border
    assert inspect.signature(api.upscale).parameters["border"].default == upscale.border
    command = inspect.signature(upscale_cmd.upscale_command).parameters
    assert (command["border"].default.value, command["backend"].default) == (upscale.border, upscale.backend)
    command = inspect.signature(eval_cmd.eval_command).parameters
    assert (command["border"].default.value, command["backend"].default) == (scoring.border, scoring.backend)
