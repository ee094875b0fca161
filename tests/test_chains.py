"""Chains (`--pre`): 1x restorers run before the upscaler, each its own engine; grey-only restorers on luma."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import shared_path
from upscale_helpers import assert_one_error_line, tiny_checkpoint, write_image

from srcli import zoo
from srcli.colour import rgb_to_ycbcr
from srcli.engine import UpscaleOptions, Upscaler
from srcli.imageio import read_image
from srcli.pipeline import ImagePipeline, load_restorers
from srcli.weights import load_checkpoint

pytestmark = pytest.mark.skipif(not zoo.available(), reason='spandrel is not installed (pip install "srcli[zoo]")')
OPTIONS = UpscaleOptions.for_upscale(device="cpu", backend="torch")


@pytest.fixture(scope="module")
def restorer_file(tmp_path_factory) -> Path:
    """A real 1x network (spandrel's Real-ESRGAN compact class, seeded weights): a stand-in deJPEG model."""
    from spandrel.architectures.Compact import Compact

    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("restorer") / "compact_1x.pth"
    torch.save(Compact(num_in_ch=3, num_out_ch=3, num_feat=8, num_conv=2, upscale=1).state_dict(), path)
    return path


@pytest.fixture(scope="module")
def upscaler_file(tmp_path_factory) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("upscaler") / "tiny_x2.pt")


def _engine(path: Path, scale: int, options: UpscaleOptions = OPTIONS) -> Upscaler:
    model, spec = load_checkpoint(path)
    return Upscaler(model, scale, options, spec=spec)


@pytest.mark.parametrize("tile", [0, 8])
def test_chain_equals_the_stages_run_by_hand(restorer_file, upscaler_file, tile):
    options = UpscaleOptions.for_upscale(device="cpu", backend="torch", tile=tile)
    stages = load_restorers([str(restorer_file), str(restorer_file)], options)
    upscaler = _engine(upscaler_file, 2, options)
    image = np.random.default_rng(0).integers(0, 256, (20, 26, 3), dtype=np.uint8)
    chained = ImagePipeline(upscaler, stages, str(upscaler_file)).upscale(image)
    by_hand = image
    for engine in (stages[0].upscaler, stages[1].upscaler, upscaler):
        by_hand = engine.upscale(by_hand).image
    assert chained.image.tobytes() == by_hand.tobytes()
    assert [stage["model"] for stage in chained.plan.to_dict()["stages"]] == [str(restorer_file)] * 2 + [
        str(upscaler_file)]
    assert chained.plan.to_dict()["tile"] == upscaler.upscale(image).plan.tile  # the upscaler's keys stay


def test_grey_sixteen_bit_and_alpha_keep_their_layout_through_a_chain(restorer_file, upscaler_file):
    pipeline = ImagePipeline(_engine(upscaler_file, 2), load_restorers([str(restorer_file)], OPTIONS))
    rng = np.random.default_rng(2)
    grey = rng.integers(0, 65536, (10, 12), dtype=np.uint16)
    assert pipeline.upscale(grey).image.shape == (20, 24) and pipeline.upscale(grey).image.dtype == np.uint16
    rgba = rng.integers(0, 256, (10, 12, 4), dtype=np.uint8)
    rgba[:, :6, 3] = 0
    out = pipeline.upscale(rgba).image
    plain = ImagePipeline(pipeline.upscaler).upscale(rgba).image
    assert out.shape == (20, 24, 4)
    assert np.array_equal(out[..., 3], plain[..., 3])  # alpha goes through the upscaler alone
    assert not np.array_equal(out[..., :3], plain[..., :3])  # the colour went through the restorer too


def test_grey_only_dncnn_runs_on_luma_and_keeps_chroma():
    dncnn = shared_path("weights", "third_party", "zoo", "kair_dncnn25.pth")
    image = read_image(shared_path("datasets", "benchmark", "Set5", "HR", "baby.png"))[100:164, 200:264]
    noisy = np.clip(image + np.random.default_rng(3).normal(0, 25, image.shape), 0, 255).astype(np.uint8)
    stage = load_restorers([str(dncnn)], OPTIONS)[0]
    assert stage.input == "luma" and stage.upscaler.scale == 1
    out = stage.upscaler.upscale(noisy).image
    before, after = rgb_to_ycbcr(noisy / 255.0), rgb_to_ycbcr(out / 255.0)
    clipped = np.any((out == 0) | (out == 255), axis=2)
    chroma = np.abs(after[..., 1:] - before[..., 1:])[~clipped]
    assert chroma.max() < 1e-9  # an equal shift of R, G and B rounds equally: chroma is kept exactly
    assert np.abs(after[..., 0] - before[..., 0]).mean() > 5  # and Y was denoised
    truth = rgb_to_ycbcr(image / 255.0)[..., 0]
    assert np.abs(after[..., 0] - truth).mean() < np.abs(before[..., 0] - truth).mean() / 2


def test_upscale_json_and_verbose_name_every_stage(cli, tmp_path, restorer_file, upscaler_file):
    source = write_image(tmp_path / "in.png", shape=(16, 18, 3))
    code, out, err = cli("upscale", source, "--pre", restorer_file, "--weights", upscaler_file, "--device", "cpu",
                         "--backend", "torch", "--json", "-v")
    assert code == 0, err
    report = json.loads(out)
    assert [s["model"] for s in report["stages"]] == [str(restorer_file), str(upscaler_file)]
    assert [s["scale"] for s in report["stages"]] == [1, 2]
    plan = report["images"][0]["plan"]
    assert [s["model"] for s in plan["stages"]] == [str(restorer_file), str(upscaler_file)]
    assert plan["stages"][0]["plan"]["tile_pad"] > 0 and "tile" in plan
    assert "compact_1x.pth (x1)" in err and "tiny_x2.pt (x2)" in err
    assert read_image(tmp_path / "in_x2.png").shape == (32, 36, 3)


def test_an_upscaler_given_to_pre_is_refused_in_one_line(cli, tmp_path, upscaler_file):
    source = write_image(tmp_path / "in.png")
    code, _, err = cli("upscale", source, "--pre", upscaler_file, "--device", "cpu")
    line = assert_one_error_line(code, err)
    assert "x2 model" in line and "1x" in line
    assert not (tmp_path / "in_x2.png").exists()


def test_eval_with_pre_scores_the_chain(cli, benchmark_dir, restorer_file, upscaler_file):
    arguments = ["eval", "set5", "--weights", upscaler_file, "--scale", "2", "--data-dir", benchmark_dir, "--json",
                 "--device", "cpu"]
    code, plain, err = cli(*arguments)
    assert code == 0, err
    code, chained, err = cli(*arguments, "--pre", restorer_file)
    assert code == 0, err
    plain_result, chained_result = json.loads(plain)["results"][0], json.loads(chained)["results"][0]
    assert chained_result["method"] == "compact_1x.pth > tiny_x2.pt"
    assert chained_result["psnr"] != pytest.approx(plain_result["psnr"], abs=1e-3)


def test_api_pre_equals_the_api_run_twice(restorer_file, upscaler_file):
    import srcli

    image = np.random.default_rng(5).integers(0, 256, (14, 18, 3), dtype=np.uint8)
    chained = srcli.load(upscaler_file, pre=[restorer_file], device="cpu", tile=0)
    assert chained.pre == [str(restorer_file)] and "pre=" in repr(chained)
    by_hand = srcli.upscale(srcli.upscale(image, model=restorer_file, device="cpu", tile=0), model=upscaler_file,
                            device="cpu", tile=0)
    assert np.array_equal(chained.upscale(image), by_hand)
    assert np.array_equal(srcli.upscale(image, model=upscaler_file, pre=[restorer_file], device="cpu", tile=0),
                          by_hand)
