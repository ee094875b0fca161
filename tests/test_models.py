"""Networks match the official parameter counts and layouts, and detect() reads any layout back."""

from __future__ import annotations

import pytest
import torch

from srcli.errors import CheckpointError
from srcli.models import build, detect, load_state_dict, parameter_count

OFFICIAL_COUNTS = [  # millions, from the EDSR paper and EDSR-PyTorch
    ("edsr-baseline", {"scale": 2}, 1.37),
    ("edsr-baseline", {"scale": 3}, 1.55),
    ("edsr-baseline", {"scale": 4}, 1.52),
    ("edsr", {"scale": 2}, 40.7),
    ("edsr", {"scale": 3}, 43.7),
    ("edsr", {"scale": 4}, 43.1),
    ("mdsr-baseline", {}, 3.23),
    ("mdsr", {}, 7.95),
]


@pytest.mark.parametrize(("preset", "config", "millions"), OFFICIAL_COUNTS)
def test_parameter_counts_match_official(preset, config, millions):
    model = build(preset, **config)
    assert round(parameter_count(model) / 1e6, 2 if millions < 10 else 1) == millions


@pytest.mark.parametrize(
    ("preset", "config"),
    [("edsr-baseline", {"scale": 2}), ("edsr-baseline", {"scale": 3}), ("edsr-baseline", {"scale": 4}),
     ("mdsr-baseline", {}), ("vdsr", {}), ("vdsr-rgb", {})],
)
def test_detect_round_trips_config(preset, config):
    model = build(preset, **config)
    spec = detect(model.state_dict())
    rebuilt = build(spec.arch, **spec.config)
    assert rebuilt.state_dict().keys() == model.state_dict().keys()
    assert spec.scales == model.scales or spec.arch == "vdsr"


def test_official_key_layout():
    keys = set(build("edsr-baseline", scale=4).state_dict())
    assert {"sub_mean.weight", "head.0.weight", "body.0.body.0.weight", "body.0.body.2.weight",
            "body.16.weight", "tail.0.0.weight", "tail.0.2.weight", "tail.1.weight", "add_mean.bias"} <= keys
    mdsr_keys = set(build("mdsr-baseline").state_dict())
    assert {"pre_process.2.1.body.2.weight", "upsample.1.0.weight", "upsample.2.2.weight", "tail.0.weight"} <= mdsr_keys


def _to_basicsr(state: dict[str, torch.Tensor], blocks: int) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state.items():
        if key.startswith(("sub_mean", "add_mean")):
            continue
        key = key.replace("head.0.", "conv_first.").replace(f"body.{blocks}.", "conv_after_body.")
        key = key.replace(".body.0.", ".conv1.").replace(".body.2.", ".conv2.")
        key = key.replace("tail.0.", "upsample.").replace("tail.1.", "conv_last.")
        out[key] = value
    return {"params": out}


def test_basicsr_layout_loads_and_gives_same_output():
    torch.manual_seed(0)
    official = build("edsr-baseline", scale=2).eval()
    basicsr = _to_basicsr(official.state_dict(), 16)
    spec = detect(basicsr)
    assert (spec.arch, spec.layout, spec.config["scale"], spec.config["blocks"]) == ("edsr", "basicsr", 2, 16)
    loaded = load_state_dict(basicsr).eval()
    x = torch.rand(1, 3, 12, 10) * 255
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), official(x))
    assert loaded(x).shape == (1, 3, 24, 20)


def test_detect_shared_vdsr_checkpoint(vdsr_checkpoint):
    state = torch.load(vdsr_checkpoint, weights_only=True, map_location="cpu")
    spec = detect(state)
    assert spec.arch == "vdsr"
    assert spec.config == {"layers": 20, "features": 64, "channels": 1, "bias": False}


def test_unknown_layout_is_refused():
    with pytest.raises(CheckpointError, match="unknown architecture"):
        detect({"encoder.weight": torch.zeros(3, 3)})
    with pytest.raises(CheckpointError, match="no tensors"):
        detect({"epoch": 3})
