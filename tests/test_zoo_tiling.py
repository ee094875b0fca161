"""Zoo models tiled well and loaded robustly, with the real third-party files from the shared fixtures: DITN
(8x8-patch attention) probed as exact and tiled to match its whole-image run, a non-equivariant network given
a measured overlap, the probe cached by the weights' hash, OpenVINO on BatchNorm models and on DITN (sizes
frozen by tracing), and wrapped checkpoints named by their inner keys."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import shared_path
from torch import nn
from upscale_helpers import run_cli

from srcli import zoo
from srcli.engine import UpscaleOptions, Upscaler
from srcli.engine import module as module_runner
from srcli.engine.tiling import window_size, windows
from srcli.errors import BackendError, CheckpointError
from srcli.imageio import read_image
from srcli.models.spec import Architecture, ModelSpec, SizeRequirements
from srcli.weights import load_checkpoint

needs_zoo = pytest.mark.skipif(not zoo.available(), reason='spandrel is not installed (pip install "srcli[zoo]")')
DITN_FILES = ("ditn_real_x4.pth", "ditn_real_gan_x4.pth")


def _zoo_file(name: str) -> Path:
    return shared_path("weights", "third_party", "zoo", name)


def _photo_strip() -> np.ndarray:
    """A real low-resolution photo, cut to a strip wide enough that DITN's windows (57 px overlap) really tile."""
    image = read_image(shared_path("datasets", "benchmark", "Set5", "LR_bicubic", "X2", "babyx2.png"))
    return np.ascontiguousarray(image[100:124, 24:232])


def test_windows_start_on_the_networks_step_grid_and_keep_their_overlap() -> None:
    size = SizeRequirements(multiple_of=8)
    height, width, tile, pad = 96, 200, 30, 13
    cuts = windows(height, width, tile, pad, size)
    rows, columns = window_size(height, tile, pad, size), window_size(width, tile, pad, size)
    assert rows % 8 == 0 and columns % 8 == 0
    for cut in cuts:
        assert cut.y0 % 8 == 0 and cut.x0 % 8 == 0
        assert cut.y0 <= max(cut.top - pad, 0) and cut.y0 + rows >= min(cut.bottom + pad, height)
        assert cut.x0 <= max(cut.left - pad, 0) and cut.x0 + columns >= min(cut.right + pad, width)


@needs_zoo
@pytest.mark.parametrize("name", DITN_FILES)
def test_ditn_is_probed_exact_and_tile_64_matches_the_whole_image_run(name: str) -> None:
    """DITN attends within 8x8 patches: equivariant under shifts by 8, so windows on that grid are exact."""
    model, spec = load_checkpoint(_zoo_file(name))
    image = _photo_strip()
    whole = Upscaler(model, 4, UpscaleOptions(device="cpu", backend="torch", tile=0), spec=spec)
    assert whole.exact and whole.receptive_field >= 40
    tiled, plan = Upscaler(model, 4, UpscaleOptions(device="cpu", backend="torch", tile=64), spec=spec).upscale(image)
    assert plan.tiles > 1 and plan.to_dict()["tiling"] == "exact" and "measured_pad" not in plan.to_dict()
    difference = np.abs(tiled.astype(int) - whole.upscale(image).image.astype(int))
    assert difference.max() <= 1 and difference.mean() <= 0.01  # float32 reassociation only


class _GlobalGate(nn.Module):
    """A network that is not translation-equivariant: a global mean scales its features (channel attention),
    so no window can see what the whole image does; a weak gate keeps its tiles close."""

    def __init__(self) -> None:
        super().__init__()
        self.first = nn.Conv2d(3, 8, 3, padding=1)
        self.gate = nn.Conv2d(8, 8, 1)
        self.last = nn.Conv2d(8, 12, 3, padding=1)
        self.shuffle = nn.PixelShuffle(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = torch.relu(self.first(x))
        features = features * (1 + 0.05 * torch.sigmoid(self.gate(features.mean(dim=(2, 3), keepdim=True))))
        return self.shuffle(self.last(features))


def _record(module: type[nn.Module], name: str) -> Architecture:
    def unusable(state):
        raise AssertionError("never read from a file")

    return Architecture(name=name, module=module, presets={}, recognise=lambda state: False, detect=unusable,
                        scales=lambda config: (int(config["scale"]),), pixel_max=1.0)


def test_a_non_equivariant_network_gets_a_measured_overlap_in_the_plan() -> None:
    torch.manual_seed(0)
    model = _GlobalGate().eval()
    spec = ModelSpec(_record(_GlobalGate, "global-gate"), {"scale": 2})
    upscaler = Upscaler(model, 2, UpscaleOptions(device="cpu", tile=16), spec=spec)
    assert not upscaler.exact
    pad, levels = upscaler.measured_overlap, upscaler.measured_levels
    assert pad in module_runner.OVERLAP_CANDIDATES and levels is not None and levels <= module_runner.OVERLAP_LEVELS
    image = (module_runner.natural_image(48, 64, 3, seed=5) * 255).round().astype(np.uint8)
    tiled, plan = upscaler.upscale(image)
    data = plan.to_dict()
    assert plan.tiles > 1 and data["tiling"] == "approximate"
    assert data["measured_pad"] == plan.pad == pad and data["measured_levels"] == levels
    whole = Upscaler(model, 2, UpscaleOptions(device="cpu", tile=0), spec=spec).upscale(image).image
    assert np.abs(tiled.astype(int) - whole.astype(int)).max() <= 4


def test_the_probe_is_cached_by_the_weights_hash(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("SRCLI_CACHE", str(tmp_path))
    calls = []
    real_probe = module_runner.probe
    monkeypatch.setattr(module_runner, "probe", lambda *args: calls.append(1) or real_probe(*args))
    torch.manual_seed(0)
    model = _GlobalGate().eval()
    spec = ModelSpec(_record(_GlobalGate, "global-gate"), {"scale": 2})
    first = Upscaler(model, 2, UpscaleOptions(device="cpu"), spec=spec)
    [entry] = (tmp_path / "probes").glob("*.json")
    second = Upscaler(model, 2, UpscaleOptions(device="cpu"), spec=spec)
    assert len(calls) == 1 and second.receptive_field == first.receptive_field
    assert json.loads(entry.read_text())["overlap"] == first.measured_overlap
    entry.write_text("{not json")  # a damaged entry costs a probe, never an error
    Upscaler(model, 2, UpscaleOptions(device="cpu"), spec=spec)
    assert len(calls) == 2 and json.loads(entry.read_text())["equivariant"] is False
    with torch.no_grad():
        model.last.bias.add_(0.01)  # other weights, another entry
    Upscaler(model, 2, UpscaleOptions(device="cpu"), spec=spec)
    assert len(calls) == 3 and len(list((tmp_path / "probes").glob("*.json"))) == 2


class _Normed(nn.Module):
    """A small x2 network with BatchNorm (its state holds a 0-dim num_batches_tracked)."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                  nn.Conv2d(8, 12, 3, padding=1), nn.PixelShuffle(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def test_batchnorm_models_hash_and_run_on_openvino(tmp_path, monkeypatch) -> None:
    pytest.importorskip("openvino", reason="the OpenVINO backend is an extra: pip install 'srcli[openvino]'")
    monkeypatch.setenv("SRCLI_CACHE", str(tmp_path))
    torch.manual_seed(0)
    model = _Normed().eval()
    with torch.no_grad():
        model.body[1].running_mean.uniform_(-0.1, 0.1)
    digest = module_runner.weights_digest(model)
    model.body[1].num_batches_tracked += 1
    assert module_runner.weights_digest(model) != digest
    spec = ModelSpec(_record(_Normed, "normed"), {"scale": 2})
    image = np.random.default_rng(0).integers(0, 256, (20, 24, 3), dtype=np.uint8)
    ours = Upscaler(model, 2, UpscaleOptions(device="cpu", backend="openvino"), spec=spec).upscale(image)
    reference = Upscaler(model, 2, UpscaleOptions(device="cpu", backend="torch"), spec=spec).upscale(image).image
    assert ours.plan.backend == "openvino"
    assert np.abs(ours.image.astype(int) - reference.astype(int)).max() <= 1


class _Untraceable(nn.Module):
    """A network whose forward refuses torch.jit tracing (as forwards with data-dependent Python do)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 12, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_tracing():
            raise RuntimeError("this forward cannot be traced\nsecond line of the converter's report")
        return nn.functional.pixel_shuffle(self.conv(x), 2)


def test_a_network_openvino_cannot_convert_is_one_line(tmp_path, monkeypatch) -> None:
    pytest.importorskip("openvino", reason="the OpenVINO backend is an extra: pip install 'srcli[openvino]'")
    monkeypatch.setenv("SRCLI_CACHE", str(tmp_path))
    spec = ModelSpec(_record(_Untraceable, "untraceable"), {"scale": 2})
    image = np.zeros((16, 16, 3), np.uint8)
    with pytest.raises(BackendError) as caught:
        Upscaler(_Untraceable().eval(), 2, UpscaleOptions(device="cpu", backend="openvino"), spec=spec).upscale(image)
    message = str(caught.value)
    assert "\n" not in message and "use --backend torch" in message


@needs_zoo
def test_ditn_runs_on_openvino_converted_per_window_shape_and_auto_keeps_torch() -> None:
    """DITN reads its input size as Python ints: traced, its reshapes keep the example's sizes, so each window
    shape gets its own conversion; auto never converts a zoo module."""
    pytest.importorskip("openvino", reason="the OpenVINO backend is an extra: pip install 'srcli[openvino]'")
    model, spec = load_checkpoint(_zoo_file("ditn_real_x4.pth"))
    image = _photo_strip()[:16, :40]
    options = {"device": "cpu", "tile": 0}
    converted, plan = Upscaler(model, 4, UpscaleOptions(backend="openvino", **options), spec=spec).upscale(image)
    reference = Upscaler(model, 4, UpscaleOptions(backend="torch", **options), spec=spec).upscale(image).image
    assert plan.backend == "openvino"
    assert np.abs(converted.astype(int) - reference.astype(int)).max() <= 1
    assert Upscaler(model, 4, UpscaleOptions(device="cpu"), spec=spec).backend == "torch"


@needs_zoo
def test_a_wrapped_checkpoint_is_named_by_its_inner_keys(tmp_path) -> None:
    path = tmp_path / "wrapped.pth"
    torch.save({"params_ema": {"encoder.stem.weight": torch.zeros(4, 3, 3, 3)}, "params": {}}, path)
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(path)
    assert "encoder.stem.weight" in str(caught.value) and "params_ema" not in str(caught.value)


def test_upscale_help_says_any_supported_model_file(capsys, monkeypatch) -> None:
    code, out, _ = run_cli(["upscale", "--help"], capsys, monkeypatch)
    text = " ".join(out.split())
    assert code == 0 and "Any supported model file" in text and "EDSR, MDSR or VDSR" not in text


def test_auto_falls_back_to_torch_where_openvino_fails_and_the_plan_says_so(tmp_path, monkeypatch) -> None:
    """Where `auto` picks OpenVINO (srcli's folded networks) and the converter fails, the run goes on with torch."""
    pytest.importorskip("openvino", reason="the OpenVINO backend is an extra: pip install 'srcli[openvino]'")
    from srcli.engine import upscaler as engine
    from srcli.engine.devices import Placement

    monkeypatch.setenv("SRCLI_CACHE", str(tmp_path))
    monkeypatch.setattr(engine, "resolve_placement",
                        lambda *args, **kwargs: Placement(torch.device("cpu"), torch.float32, "openvino"))
    spec = ModelSpec(_record(_Untraceable, "untraceable"), {"scale": 2})
    torch.manual_seed(0)
    model = _Untraceable().eval()
    image = np.random.default_rng(1).integers(0, 256, (16, 20, 3), dtype=np.uint8)
    result = Upscaler(model, 2, UpscaleOptions(device="cpu", backend="auto"), spec=spec).upscale(image)
    assert result.plan.backend == "torch" and "OpenVINO cannot convert" in (result.plan.backend_fallback or "")
    with pytest.raises(BackendError):
        Upscaler(model, 2, UpscaleOptions(device="cpu", backend="openvino"), spec=spec)
