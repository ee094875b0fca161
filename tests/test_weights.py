"""The pretrained catalogue, the cache, the embedded manifest and checkpoint loading."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from loopback import saved
from torch import nn

from srcli import weights
from srcli.errors import CheckpointError, DownloadError, ScaleError, UnknownModelError
from srcli.models import parameter_count

# Official parameter counts (EDSR paper / EDSR-PyTorch), at the precision they are published.
PUBLISHED_PARAMETERS = {
    "edsr-baseline-x2": (1.37e6, 0.01e6), "edsr-baseline-x3": (1.55e6, 0.01e6), "edsr-baseline-x4": (1.52e6, 0.01e6),
    "edsr-x2": (40.7e6, 0.1e6), "edsr-x3": (43.7e6, 0.1e6), "edsr-x4": (43.1e6, 0.1e6),
    "mdsr-baseline": (3.23e6, 0.01e6), "mdsr": (7.95e6, 0.01e6),
}


def _same_weights(model: nn.Module, state: dict[str, torch.Tensor]) -> bool:
    loaded = model.state_dict()
    return loaded.keys() == state.keys() and all(torch.equal(loaded[k], state[k]) for k in state)


# --- the catalogue --------------------------------------------------------------------------------


def test_official_catalogue_lists_every_edsr_pytorch_file():
    official = [e for e in weights.catalogue().values() if e.source == "official"]
    assert [e.name for e in official] == list(PUBLISHED_PARAMETERS)
    assert sum(e.bytes for e in official) == 5490680 + 6229240 + 6081831 + 162939971 + 174741571 + 172381555 \
        + 12924933 + 31869146
    assert {e.url for e in official} == {weights.OFFICIAL_BASE + e.filename for e in official}


@pytest.mark.parametrize("entry", [e for e in weights.catalogue().values() if e.source in ("official", "embedded")],
                         ids=lambda e: e.name)
def test_every_entry_is_consistent(entry):
    assert len(entry.sha256) == 64 and int(entry.sha256, 16) >= 0
    assert Path(entry.filename).stem.rsplit("-", 1)[1] == entry.sha256[:8]  # torch.hub naming
    with torch.device("meta"):
        model = entry.build()
    assert tuple(model.scales) == entry.scales
    assert entry.parameters == parameter_count(model)
    if entry.name in PUBLISHED_PARAMETERS:
        published, precision = PUBLISHED_PARAMETERS[entry.name]
        assert abs(entry.parameters - published) <= precision / 2
    for per_scale in entry.metrics.values():
        assert set(per_scale) <= set(entry.scales)


def test_reported_psnr_comes_from_the_public_tables():
    entries = weights.catalogue()
    assert entries["edsr-baseline-x4"].psnr("Set5", 4) == 32.09
    assert entries["edsr-x2"].psnr("Urban100", 2) == 32.97
    assert entries["mdsr"].psnr(weights.DIV2K_RGB, 3) == 31.22
    assert entries["mdsr"].psnr("Set5", 2) is None


def test_shipped_manifest_is_valid_and_its_files_match():
    folder = Path(weights.entries.__file__).resolve().parents[2] / "weights"
    for entry in weights.read_manifest(folder):
        data = entry.local_path().read_bytes()
        assert (hashlib.sha256(data).hexdigest(), len(data)) == (entry.sha256, entry.bytes)
        _, spec = weights.load_checkpoint(entry.local_path())
        assert spec.arch == entry.arch and (spec.arch == "vdsr" or spec.scales == entry.scales)


# --- resolving a catalogue name -------------------------------------------------------------------


def test_catalogue_name_downloads_once_from_mirror_then_uses_cache(served_entry, baseline_x2, file_server,
                                                                   monkeypatch):
    state, data = baseline_x2
    monkeypatch.setenv("SRCLI_MIRROR", file_server.url("mirror"))
    progress: list[tuple[int, int | None]] = []
    first = weights.resolve("edsr-baseline-x2", 2, progress=lambda done, total: progress.append((done, total)))
    assert first.path == weights.cache_dir() / served_entry.filename
    assert first.path.read_bytes() == data
    assert progress[-1] == (len(data), len(data))
    assert _same_weights(first.model, state)
    second = weights.resolve("edsr-baseline", 2)  # family name + scale finds the same entry
    assert (second.name, second.path) == ("edsr-baseline-x2", first.path)
    assert [(r.path, r.status) for r in file_server.requests] == [(f"/mirror/{served_entry.filename}", 200)]
    assert weights.catalogue()["edsr-baseline-x2"].status() == "cached"


def test_mirror_argument_overrides_environment(served_entry, file_server, monkeypatch):
    monkeypatch.setenv("SRCLI_MIRROR", file_server.url("nothing-here"))
    resolved = weights.resolve("edsr-baseline-x2", 2, mirror=file_server.url("mirror/"))
    assert resolved.entry is not None and resolved.path is not None and resolved.path.is_file()
    assert [r.path for r in file_server.requests] == [f"/mirror/{served_entry.filename}"]


def test_unreachable_server_says_how_to_proceed_in_one_line(served_entry, srcli_home):
    with pytest.raises(DownloadError) as error:
        weights.resolve("edsr-baseline-x2", 2)
    message = str(error.value)
    assert "\n" not in message
    assert "connection refused" in message
    for way_out in ("SRCLI_MIRROR", "--mirror", "--weights PATH", "embedded model"):
        assert way_out in message
    assert not weights.cache_dir().exists() or list(weights.cache_dir().iterdir()) == []


def test_offline_never_touches_the_network(served_entry, file_server, monkeypatch):
    monkeypatch.setenv("SRCLI_MIRROR", file_server.url("mirror"))
    with pytest.raises(DownloadError, match="offline"):
        weights.resolve("edsr-baseline-x2", 2, offline=True)
    assert file_server.requests == []


def test_scale_the_model_lacks_is_refused_before_downloading(served_entry, file_server, monkeypatch):
    monkeypatch.setenv("SRCLI_MIRROR", file_server.url("mirror"))
    with pytest.raises(ScaleError, match=r"edsr-baseline-x2 is x2; it cannot upscale x4"):
        weights.resolve("edsr-baseline-x2", 4)
    with pytest.raises(ScaleError, match=r"mdsr is x2/x3/x4; it cannot upscale x8"):
        weights.resolve("mdsr", 8)
    assert file_server.requests == []


def test_unknown_name_suggests_a_close_one(srcli_home):
    with pytest.raises(UnknownModelError, match="did you mean edsr-x4"):
        weights.resolve("edsr-x44", 4)


# --- resolving a file -----------------------------------------------------------------------------


def test_checkpoint_path_loads_strictly(baseline_x2, tmp_path):
    state, data = baseline_x2
    path = tmp_path / "mine.pt"
    path.write_bytes(data)
    resolved = weights.resolve(str(path), 2)
    assert (resolved.spec.arch, resolved.spec.scales, resolved.path) == ("edsr", (2,), path)
    assert _same_weights(resolved.model, state)
    assert not resolved.model.training
    with pytest.raises(ScaleError, match="cannot upscale x3"):
        weights.resolve(str(path), 3)


def test_vdsr_checkpoint_serves_any_scale(vdsr_checkpoint):
    resolved = weights.resolve(str(vdsr_checkpoint), 3)
    assert resolved.spec.arch == "vdsr"
    assert weights.resolve(str(vdsr_checkpoint), 5).spec.config["channels"] == 1


def _broken_files(folder: Path, data: bytes, state: dict) -> dict[str, tuple[Path, str]]:
    """Every way a checkpoint file can be wrong, with the phrase its error must contain."""
    partial = dict(state)
    del partial["body.3.body.0.weight"]
    misshapen = {**state, "body.3.body.0.weight": torch.zeros(64, 64, 5, 5)}
    cases = {
        "truncated": (data[: len(data) // 2], "truncated or corrupted"),
        "text": (b"this is not a checkpoint\n", "not a PyTorch checkpoint"),
        "empty": (b"", "empty"),
        "needs-code": (saved(nn.Conv2d(3, 3, 1)), "could run code"),
        "unknown-arch": (saved({"encoder.weight": torch.zeros(3, 3)}), "unknown architecture"),
        "not-a-dict": (saved([torch.zeros(1)]), "not a state dict"),
        "missing-tensor": (saved(partial), "missing"),
        "wrong-shape": (saved(misshapen), "do not fit"),
    }
    files = {}
    for name, (content, phrase) in cases.items():
        path = folder / f"{name}.pt"
        path.write_bytes(content)
        files[name] = (path, phrase)
    return files


def test_bad_checkpoints_are_one_clear_line(baseline_x2, tmp_path):
    state, data = baseline_x2
    for name, (path, phrase) in _broken_files(tmp_path, data, state).items():
        with pytest.raises(CheckpointError) as error:
            weights.resolve(str(path), 2)
        message = str(error.value)
        assert phrase in message and str(path) in message and "\n" not in message, (name, message)
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        weights.resolve(str(tmp_path / "absent.pt"), 2)


# --- embedded models ------------------------------------------------------------------------------


@pytest.fixture
def embedded_folder(baseline_x2, tmp_path, monkeypatch) -> Path:
    """A manifest folder holding one embedded model, made the way the lead adds trained ones."""
    state, _ = baseline_x2
    folder = tmp_path / "weights"
    checkpoint = tmp_path / "trained.pt"
    checkpoint.write_bytes(saved({"model": state, "optimizer": {"step": torch.tensor(3)}, "epoch": 3}))
    weights.embed(checkpoint, "srcli-edsr-baseline-x2", folder, recipe="edsr-baseline", steps=1000,
                  data="DIV2K 0001-0800", metrics={"Set5": {2: {"psnr": 37.5, "ssim": 0.958}}})
    monkeypatch.setattr(weights.entries, "embedded_dirs", lambda: [folder])
    return folder


def test_embedded_model_needs_no_network(embedded_folder, baseline_x2, srcli_home):
    state, _ = baseline_x2
    entry = weights.catalogue()["srcli-edsr-baseline-x2"]
    assert (entry.source, entry.status(), entry.preset, entry.scales) == ("embedded", "embedded", "edsr-baseline", (2,))
    assert entry.psnr("Set5", 2) == 37.5 and entry.metrics["Set5"][2].ssim == 0.958
    assert Path(entry.filename).stem.endswith(entry.sha256[:8])
    assert weights.default_model(2) == "srcli-edsr-baseline-x2"
    assert weights.default_model(4) is None
    resolved = weights.resolve("srcli-edsr-baseline-x2", 2, offline=True)
    assert _same_weights(resolved.model, state)
    document = json.loads((embedded_folder / "manifest.json").read_text())
    assert [m["name"] for m in document["models"]] == ["srcli-edsr-baseline-x2"]


def test_damaged_embedded_file_is_refused(embedded_folder):
    entry = weights.catalogue()["srcli-edsr-baseline-x2"]
    data = bytearray(entry.local_path().read_bytes())
    data[len(data) // 2] ^= 0xFF
    entry.local_path().write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="fails its sha256 check"):
        weights.resolve("srcli-edsr-baseline-x2", 2)


def test_malformed_manifest_is_one_line(tmp_path, monkeypatch):
    (tmp_path / "manifest.json").write_text('{"format": 1, "models": [{"name": "x"}]}')
    monkeypatch.setattr(weights.entries, "embedded_dirs", lambda: [tmp_path])
    with pytest.raises(CheckpointError, match="malformed weights manifest") as error:
        weights.catalogue()
    assert "\n" not in str(error.value)


def test_embedded_name_may_not_shadow_an_official_one(embedded_folder, baseline_x2, tmp_path):
    checkpoint = tmp_path / "again.pt"
    checkpoint.write_bytes(baseline_x2[1])
    weights.embed(checkpoint, "edsr-baseline-x2", embedded_folder)
    with pytest.raises(CheckpointError, match="used twice"):
        weights.catalogue()


def test_a_verified_catalogue_file_skips_the_skeleton_check(monkeypatch):
    """The meta-device skeleton (over a second of a small job's cold start) is for files of unknown origin; a file
    that just matched its catalogue sha256 is known to fit."""
    from srcli.weights import checkpoints, default_model, find

    calls = []
    original = checkpoints._check_declared
    monkeypatch.setattr(checkpoints, "_check_declared", lambda *args: calls.append(1) or original(*args))
    path = find(default_model(2)).local_path()
    checkpoints.load_checkpoint(path, verified=True)
    assert calls == []
    checkpoints.load_checkpoint(path)
    assert calls == [1]
