"""The OpenVINO backend: within one level of torch, tiled exactly, its converted models cached, and a one-line
hint where the extra is missing. CI installs `srcli[openvino]` (.ci/run); without it the backend tests skip."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from precision_helpers import pin_fp32
from upscale_helpers import REPO, assert_one_error_line, run_cli, srcli_command, write_image

from srcli.engine import UpscaleOptions, Upscaler, choose_backend
from srcli.engine.tiling import window_size
from srcli.errors import BackendError
from srcli.models import build

HINT = 'pip install "srcli[openvino]"'


@pytest.fixture
def openvino():
    """The backend's module, with conversions counted from zero and a cache of this test's own."""
    pytest.importorskip("openvino", reason="the OpenVINO backend is an extra: pip install 'srcli[openvino]'")
    from srcli.engine import openvino

    return openvino


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("SRCLI_CACHE", str(folder))
    pin_fp32()  # auto stays fp32, as in the rest of the suite
    return folder


def _seeded(arch: str, **config) -> torch.nn.Module:
    torch.manual_seed(0)
    return build(arch, **config).eval()


def _image(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


@pytest.mark.parametrize(("preset", "config", "scale"), [("edsr-baseline", {"scale": 4, "blocks": 2}, 4),
                                                        ("mdsr-baseline", {"blocks": 1}, 3),
                                                        ("vdsr", {"layers": 6}, 2)])
def test_openvino_is_within_one_level_of_torch_and_tiles_exactly(openvino, preset, config, scale) -> None:
    model, image = _seeded(preset, **config), _image(30, 34, seed=1)
    torch_out = Upscaler(model, scale, UpscaleOptions(device="cpu", backend="torch", tile=0)).upscale(image).image
    whole, whole_plan = Upscaler(model, scale, UpscaleOptions(device="cpu", backend="openvino", tile=0)).upscale(image)
    tiled, plan = Upscaler(model, scale, UpscaleOptions(device="cpu", backend="openvino", tile=12)).upscale(image)
    assert (whole_plan.backend, plan.backend, whole_plan.tiles) == ("openvino", "openvino", 1)
    assert plan.tiles > 1 and plan.overlap > 1.0
    assert np.array_equal(tiled, whole)
    assert np.abs(whole.astype(int) - torch_out.astype(int)).max() <= 1


def test_a_runner_runs_the_model_it_is_given(openvino, cache) -> None:
    """use_model swaps the converted network (how a quantised copy would run): the next image runs the new one."""
    options = UpscaleOptions(device="cpu", backend="openvino", tile=0)
    torch.manual_seed(1)
    other = build("edsr-baseline", scale=2, blocks=1).eval()
    first = Upscaler(_seeded("edsr-baseline", scale=2, blocks=1), 2, options)
    second = Upscaler(other, 2, options)
    image = _image(20, 24, seed=4)
    before, expected = first.upscale(image).image, second.upscale(image).image
    assert not np.array_equal(before, expected)
    first.runner.use_model(second.runner.model)
    assert np.array_equal(first.upscale(image).image, expected)


def test_openvino_ensemble_batches_and_tiles_exactly(openvino) -> None:
    model, image = _seeded("edsr-baseline", scale=2, blocks=1), _image(30, 30, seed=3)
    whole = Upscaler(model, 2, UpscaleOptions(device="cpu", backend="openvino", ensemble=True, tile=0)).upscale(image)
    tiled = Upscaler(model, 2, UpscaleOptions(device="cpu", backend="openvino", ensemble=True, tile=12, batch=8))
    reference = Upscaler(model, 2, UpscaleOptions(device="cpu", backend="torch", ensemble=True, tile=0))
    assert np.array_equal(tiled.upscale(image).image, whole.image)
    assert np.abs(whole.image.astype(int) - reference.upscale(image).image.astype(int)).max() <= 1


def test_openvino_compiles_one_shape_for_all_tiles(openvino, cache) -> None:
    """Every window has one shape, so the model is compiled once, for that static shape (faster than a dynamic
    one, and no slow first inference per new shape)."""
    model, image = _seeded("edsr-baseline", scale=4, blocks=1), _image(75, 40, seed=2)
    whole = Upscaler(model, 4, UpscaleOptions(device="cpu", backend="openvino", tile=0)).upscale(image).image
    upscaler = Upscaler(model, 4, UpscaleOptions(device="cpu", backend="openvino", tile=30))
    tiled, plan = upscaler.upscale(image)
    assert plan.tiles == 6 and np.array_equal(tiled, whole)
    shape = (1, window_size(75, 30, plan.pad), window_size(40, 30, plan.pad), 3)
    assert list(upscaler.runner._compiled) == [(*shape, torch.float32)]


def test_a_folded_network_is_one_model_with_the_windows_torch_plans(openvino, cache) -> None:
    """A folded network converts as one OpenVINO model, whose windows are planned as torch's are."""
    model = _seeded("edsr-baseline", scale=4, blocks=1)
    budget = Upscaler(model, 4, UpscaleOptions(device="cpu", backend="torch")).bytes_per_window(60 * 60)

    def tile(backend: str) -> int:
        upscaler = Upscaler(model, 4, UpscaleOptions(device="cpu", backend=backend, memory_budget=budget))
        return upscaler.plan(200, 300).tile

    torch_tile = tile("torch")
    assert 0 < torch_tile < 200 and tile("openvino") == torch_tile


def test_a_converted_model_is_cached_and_reused(openvino, cache) -> None:
    model = _seeded("edsr-baseline", scale=2, blocks=1)
    before = openvino.conversions
    first = Upscaler(model, 2, UpscaleOptions(device="cpu", backend="openvino"))
    assert openvino.conversions == before + 1
    [entry] = [p for p in (cache / "openvino").iterdir()]  # one folder, no temp left behind
    assert sorted(p.name for p in entry.iterdir()) == ["entry.sha256", "network.bin", "network.xml"]  # one model
    second = Upscaler(model, 2, UpscaleOptions(device="cpu", backend="openvino"))
    assert openvino.conversions == before + 1  # read from the cache, not converted again
    image = _image(20, 24)
    assert np.array_equal(first.upscale(image).image, second.upscale(image).image)
    other = _seeded("edsr-baseline", scale=2, blocks=1)
    with torch.no_grad():
        other.head[0].bias += 1.0  # other weights: another key
    Upscaler(other, 2, UpscaleOptions(device="cpu", backend="openvino"))
    assert openvino.conversions == before + 2 and len(list((cache / "openvino").iterdir())) == 2


def test_a_second_cli_run_converts_nothing(openvino, cache, tmp_path) -> None:
    """In fresh processes: the second run reads the IR the first wrote and does not write it again."""
    torch.manual_seed(0)
    checkpoint = tmp_path / "tiny_x2.pt"
    torch.save(build("edsr", blocks=1, features=8, scale=2).state_dict(), checkpoint)
    source = write_image(tmp_path / "photo.png")
    command = srcli_command("upscale", source, "--weights", checkpoint, "--backend", "openvino", "--overwrite",
                            "--json")
    env = {**os.environ, "SRCLI_CACHE": str(cache)}
    runs = []
    for _ in range(2):
        done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False)
        assert done.returncode == 0, done.stderr
        [entry] = list((cache / "openvino").iterdir())
        stat = (entry / "network.xml").stat()
        runs.append((json.loads(done.stdout), entry.name, stat.st_ino, stat.st_mtime_ns))
    (report, *first), (_, *second) = runs
    assert first == second
    assert report["backend"] == "openvino" and report["images"][0]["plan"]["backend"] == "openvino"


def test_the_shipped_x4_model_scores_its_manifest_with_openvino(openvino, cache, benchmark_dir) -> None:
    from srcli.datasets import prepare
    from srcli.evaluate import evaluate
    from srcli.weights import read_manifest, resolve

    [entry] = [e for e in read_manifest(REPO / "weights") if e.name == "srcli-edsr-baseline-x4"]
    shipped = resolve(entry.name, 4)
    result = evaluate(prepare("Set5", benchmark_dir), 4, shipped.model, shipped.spec,
                      options=UpscaleOptions.for_scoring(device="cpu", backend="openvino"))
    assert result.psnr == pytest.approx(entry.metrics["Set5"][4].psnr, abs=1e-3)


def test_backend_choice() -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert choose_backend("torch", cpu, torch.float32) == "torch"
    assert choose_backend("auto", cuda, torch.float16) == "torch"  # always torch on CUDA
    assert choose_backend("auto", cpu, torch.float16) == "torch"  # OpenVINO runs fp32 and bf16 here
    with pytest.raises(BackendError, match="runs on the CPU"):
        choose_backend("openvino", cuda, torch.float32)
    with pytest.raises(BackendError, match="unknown backend 'onnx'"):
        choose_backend("onnx", cpu, torch.float32)


def test_auto_is_openvino_on_the_cpu_where_installed(openvino) -> None:
    assert choose_backend("auto", torch.device("cpu"), torch.float32) == "openvino"


def test_a_small_auto_run_never_imports_openvino(openvino, tmp_path) -> None:
    """auto runs torch until a conversion pays, so a cold start does not pay OpenVINO's import (about 0.1 s)."""
    source = write_image(tmp_path / "photo.png")
    probe = ("import runpy, sys\n"
             "sys.argv = ['srcli', *sys.argv[1:]]\n"
             "try:\n    runpy.run_module('srcli', run_name='__main__')\n"
             "except SystemExit as done:\n    assert not done.code, done.code\n"
             "print('openvino imported:', 'openvino' in sys.modules)\n")
    env = {**os.environ, "SRCLI_CACHE": str(tmp_path / "cache")}
    done = subprocess.run([sys.executable, "-c", probe, "upscale", str(source), "--scale", "2", "--precision", "fp32"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    assert "openvino imported: False" in done.stdout
    assert openvino.openvino_available()


def test_the_cache_key_version_is_the_installed_one(openvino) -> None:
    from importlib.metadata import version

    assert openvino.openvino_version() == version("openvino")
    assert openvino.openvino_version() in openvino.load_openvino().get_version()


# --- without the extra ---------------------------------------------------------------------------------------

_WITHOUT_OPENVINO = (
    "import runpy, sys\n"
    "sys.modules['openvino'] = None  # `import openvino` now raises ImportError, as where it is not installed\n"
    "sys.argv = ['srcli', *sys.argv[1:]]\n"
    "runpy.run_module('srcli', run_name='__main__')\n"
)


def _run_without_openvino(*arguments: object) -> subprocess.CompletedProcess:
    command = [sys.executable, "-c", _WITHOUT_OPENVINO, *map(str, arguments)]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300, check=False)


def test_backend_openvino_without_the_extra_is_a_one_line_hint(tmp_path) -> None:
    source = write_image(tmp_path / "photo.png")
    done = _run_without_openvino("upscale", source, "--backend", "openvino")
    assert HINT in assert_one_error_line(done.returncode, done.stderr)
    assert not (tmp_path / "photo_x2.png").exists()
    done = _run_without_openvino("upscale", source, "--scale", "2", "--json")  # auto: torch, quietly
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["backend"] == "torch"


def test_eval_backend_openvino_without_the_extra_is_a_one_line_hint(tmp_path) -> None:
    done = _run_without_openvino("eval", "set5", "--model", "srcli-edsr-baseline-x2", "--scale", "2",
                                 "--backend", "openvino", "--data-dir", tmp_path)
    assert HINT in assert_one_error_line(done.returncode, done.stderr)


def test_an_unknown_backend_is_one_line(tmp_path, capsys, monkeypatch) -> None:
    source = write_image(tmp_path / "photo.png")
    code, _, err = run_cli(["upscale", str(source), "--backend", "onnx"], capsys, monkeypatch)
    assert "unknown backend 'onnx'" in assert_one_error_line(code, err)
