"""One record per architecture: code outside srcli.models asks the record, and a new architecture is one file.

Also the engine's two paths: the folded fast path an architecture may declare, and any nn.Module as it is
(receptive field from an impulse probe), which must agree with each other and tile exactly.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn
from upscale_helpers import run_cli, write_image

from srcli import models, weights
from srcli.engine import UpscaleOptions, Upscaler
from srcli.engine.module import probe
from srcli.imageio import read_image
from srcli.models import ARCHITECTURES, Architecture, ModelSpec, build, detect, spec_of
from srcli.models.folding import walk

SRC = Path(__file__).resolve().parent.parent / "srcli"


def _seeded(preset: str, **config: Any) -> nn.Module:
    torch.manual_seed(0)
    return build(preset, **config).eval()


def _image(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


@pytest.mark.parametrize("record", list(ARCHITECTURES.values()), ids=lambda record: record.name)
def test_every_preset_builds_and_is_read_back_by_its_own_record(record: Architecture) -> None:
    for preset in record.presets:
        config = {"scale": 3} if not record.multi_scale else {}
        model = build(preset, **config)
        spec = detect(model.state_dict())
        assert spec.architecture is record
        rebuilt = spec.build().state_dict()
        assert {k: v.shape for k, v in rebuilt.items()} == {k: v.shape for k, v in model.state_dict().items()}
        assert record.recognise(model.state_dict())
        assert [other.name for other in ARCHITECTURES.values() if other.recognise(model.state_dict())] == [record.name]


def test_no_architecture_name_switches_outside_the_models_package() -> None:
    """Code elsewhere asks the record (scales, pixel range, fold, table column) and never compares names."""
    switch = re.compile(r"""(arch|preset|recipe)\b[^\n]{0,20}(==|!=|\bin\b)\s*\(?\s*["'](edsr|mdsr|vdsr)""")
    starts = re.compile(r"""\.startswith\(\s*["'](edsr|mdsr|vdsr)""")
    offenders = [
        f"{path.relative_to(SRC)}:{number}: {line.strip()}"
        for path in SRC.rglob("*.py") if "models" not in path.relative_to(SRC).parts
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if switch.search(line) or starts.search(line)
    ]
    assert offenders == []


def test_the_paper_table_column_comes_from_the_record() -> None:
    assert spec_of(build("edsr", scale=4)).table_column(ensemble=True) == "EDSR+"
    assert spec_of(build("edsr-baseline", scale=4)).table_column() is None
    assert spec_of(build("mdsr")).table_column() == "MDSR"
    assert spec_of(build("vdsr")).table_column(ensemble=True) == "VDSR"  # the table has no VDSR+ column


# --- the engine's two torch paths (the OpenVINO backend: tests/test_openvino.py) -----------------------------


@pytest.mark.parametrize(("preset", "config", "scale"), [("edsr-baseline", {"scale": 2, "blocks": 2}, 2),
                                                        ("mdsr-baseline", {"blocks": 1}, 3),
                                                        ("vdsr", {"layers": 6}, 2)])
def test_unfolded_path_agrees_with_the_fold_and_tiles_exactly(preset: str, config: dict, scale: int) -> None:
    model = _seeded(preset, **config)
    image = _image(30, 34, seed=1)
    folded = Upscaler(model, scale, UpscaleOptions(device="cpu", backend="torch", tile=0)).upscale(image).image
    plain = Upscaler(model, scale, UpscaleOptions(device="cpu", backend="torch", tile=0, fold=False))
    whole = plain.upscale(image).image
    tiler = Upscaler(model, scale, UpscaleOptions(device="cpu", backend="torch", tile=12, fold=False))
    tiled, plan = tiler.upscale(image)
    assert plan.tiles > 1 and plan.pad == plain.receptive_field
    assert np.array_equal(tiled, whole)
    assert np.abs(whole.astype(int) - folded.astype(int)).max() <= 1


def test_impulse_probe_finds_the_receptive_field_the_fold_counts() -> None:
    """VDSR: 6 convs of 3x3 reach exactly 6 px. EDSR x2: the probe never exceeds the fold's count."""
    vdsr = _seeded("vdsr", layers=6)
    assert probe(vdsr, spec_of(vdsr), 2, 1).radius == 6.0
    edsr = _seeded("edsr-baseline", scale=2, blocks=2)
    fold = ARCHITECTURES["edsr"].fold
    assert fold is not None
    net = fold(edsr, 2)
    trunk_radius, _, features, factor = walk(net.trunk, 1.0, 3)
    counted = trunk_radius + walk(net.tail, factor, features)[0]
    found = probe(edsr, spec_of(edsr), 2, 2).radius
    assert found is not None and counted - 1 <= found <= np.ceil(counted)


# --- a new architecture is one record ---------------------------------------------------------------------


class TinySR(nn.Module):
    """A two-conv sub-pixel network on 0..1 RGB: enough to show a new architecture end to end."""

    arch = "tiny"

    def __init__(self, scale: int = 2, features: int = 8):
        super().__init__()
        self.config = {"scale": scale, "features": features}
        self.first = nn.Conv2d(3, features, 3, padding=1)
        self.last = nn.Conv2d(features, 3 * scale * scale, 3, padding=1)
        self.shuffle = nn.PixelShuffle(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shuffle(self.last(torch.relu(self.first(x))))


def _tiny_detect(state: dict[str, torch.Tensor]) -> tuple[dict[str, Any], dict[str, torch.Tensor], str]:
    features = int(state["first.weight"].shape[0])
    scale = round((state["last.weight"].shape[0] // 3) ** 0.5)
    return {"scale": scale, "features": features}, state, "official"


TINY = Architecture(
    name="tiny",
    module=TinySR,
    presets={"tiny": {"features": 8}},
    recognise=lambda state: "first.weight" in state and "last.weight" in state,
    detect=_tiny_detect,
    scales=lambda config: (int(config["scale"]),),
    pixel_max=1.0,
)


def test_a_new_architecture_is_one_record(tmp_path: Path, monkeypatch, capsys) -> None:
    """Registered, a record is enough for detection, loading, exact tiling and the CLI (no fold, no switches)."""
    monkeypatch.setitem(ARCHITECTURES, "tiny", TINY)
    monkeypatch.setitem(models.PRESETS, "tiny", ("tiny", {"features": 8}))
    torch.manual_seed(0)
    checkpoint = tmp_path / "tiny_x2.pt"
    torch.save(TinySR(scale=2).state_dict(), checkpoint)

    resolved = weights.resolve(str(checkpoint), None)
    assert isinstance(resolved.spec, ModelSpec) and (resolved.spec.arch, resolved.spec.scales) == ("tiny", (2,))
    upscaler = Upscaler(resolved.model, 2, UpscaleOptions(device="cpu", tile=0), spec=resolved.spec)
    assert upscaler.receptive_field == 2  # two 3x3 convs at LR resolution, found by the probe
    image = _image(20, 26, seed=3)
    whole = upscaler.upscale(image).image
    tiled = Upscaler(resolved.model, 2, UpscaleOptions(device="cpu", tile=8), spec=resolved.spec).upscale(image)
    assert tiled.plan.tiles == 12 and np.array_equal(tiled.image, whole)

    source = write_image(tmp_path / "photo.png", seed=4)
    argv = ["upscale", str(source), "--weights", str(checkpoint), "--border", "zero"]  # as `upscaler` runs
    code, _, err = run_cli(argv, capsys, monkeypatch)
    assert code == 0, err
    expected = upscaler.upscale(read_image(source)).image
    assert np.array_equal(read_image(tmp_path / "photo_x2.png"), expected)
