"""--precision int8: the int8 networks shipped in weights/int8/, run by OpenVINO on the CPU."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from upscale_helpers import assert_one_error_line, run_cli, tiny_checkpoint

from srcli import paths
from srcli.datasets import dataset_spec, open_dataset
from srcli.engine import UpscaleOptions, Upscaler, int8
from srcli.engine.module import weights_digest
from srcli.errors import BackendError
from srcli.evaluate import evaluate
from srcli.imageio import read_image
from srcli.weights import resolve

pytest.importorskip("openvino", reason="int8 runs on the OpenVINO extra: pip install 'srcli[openvino]'")


@pytest.fixture(autouse=True)
def _fresh_manifest():
    int8.shipped.cache_clear()
    yield
    int8.shipped.cache_clear()


def test_what_ships_passes_the_gate_and_belongs_to_the_catalogue() -> None:
    networks = int8.shipped()
    assert {(network.model, network.scale) for network in networks} >= {("srcli-mdsr-baseline", 4)}
    for network in networks:
        assert 0 <= network.cost_db <= int8.GATE_DB
        assert weights_digest(resolve(network.model, network.scale, offline=True).model) == network.weights_digest


def test_int8_scores_set5_as_recorded_and_within_the_gate_of_fp32(benchmark_dir) -> None:
    [network] = [n for n in int8.shipped() if n.model == "srcli-mdsr-baseline" and n.scale == 4]
    resolved = resolve(network.model, 4, offline=True)
    dataset = open_dataset(dataset_spec("set5"), benchmark_dir.parent)
    scored = evaluate(dataset, 4, resolved.model, resolved.spec, options=UpscaleOptions.for_scoring(precision="int8"))
    assert scored.precision == "int8"
    assert scored.psnr == pytest.approx(network.psnr_int8, abs=0.01)
    assert network.psnr_fp32 - scored.psnr <= int8.GATE_DB


def test_upscale_int8_says_so_and_stays_close_to_fp32(tmp_path, capsys, monkeypatch, benchmark_dir) -> None:
    source = benchmark_dir / "Set5" / "LR_bicubic" / "X4" / "birdx4.png"
    code, out, err = run_cli(["upscale", str(source), "--scale", "4", "--precision", "int8", "--json",
                              "-o", str(tmp_path / "int8.png")], capsys, monkeypatch)
    assert code == 0, err
    report = json.loads(out)
    assert (report["precision"], report["backend"]) == ("int8", "openvino")
    code, _, err = run_cli(["upscale", str(source), "--scale", "4", "--precision", "fp32", "-o",
                            str(tmp_path / "fp32.png")], capsys, monkeypatch)
    assert code == 0, err
    difference = np.abs(read_image(tmp_path / "int8.png").astype(int) - read_image(tmp_path / "fp32.png").astype(int))
    assert difference.mean() < 1.0 and difference.max() <= 40


@pytest.mark.parametrize(("arguments", "expected"), [
    (["--scale", "2"], "no int8 network ships for this model at x2"),
    (["--scale", "4", "--backend", "torch"], "--precision int8 runs on OpenVINO"),
])
def test_int8_where_none_ships_is_one_line(tmp_path, capsys, monkeypatch, benchmark_dir, arguments, expected) -> None:
    source = benchmark_dir / "Set5" / "LR_bicubic" / "X4" / "birdx4.png"
    code, _, err = run_cli(["upscale", str(source), "--precision", "int8", *arguments, "-o", str(tmp_path / "o.png")],
                           capsys, monkeypatch)
    assert expected in assert_one_error_line(code, err)
    assert not (tmp_path / "o.png").exists()


def test_int8_for_other_weights_names_what_ships(tmp_path) -> None:
    from srcli.weights import load_checkpoint

    model, spec = load_checkpoint(tiny_checkpoint(tmp_path / "tiny.pt"))
    with pytest.raises(BackendError, match="int8 runs srcli-mdsr-baseline"):
        Upscaler(model, 2, UpscaleOptions(device="cpu", precision="int8"), spec=spec)


def test_a_damaged_int8_file_is_refused(tmp_path, monkeypatch) -> None:
    [shipped] = [d for d in paths.shipped_dirs() if (d / "int8" / int8.MANIFEST).is_file()][:1]
    shutil.copytree(shipped / "int8", tmp_path / "int8")
    [network] = [n for n in int8.shipped() if n.scale == 4]
    damaged = bytearray((tmp_path / "int8" / network.bin.name).read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    (tmp_path / "int8" / network.bin.name).write_bytes(bytes(damaged))
    monkeypatch.setattr(int8, "shipped_dirs", lambda: [tmp_path])
    int8.shipped.cache_clear()
    resolved = resolve(network.model, 4, offline=True)
    with pytest.raises(BackendError, match="does not match its sha256"):
        Upscaler(resolved.model, 4, UpscaleOptions(device="cpu", precision="int8"), spec=resolved.spec)
