"""A cold start without waste and small images at full speed: the fold and the OpenVINO model cached in verified
entries (rebuilt when changed, kept per process where nothing can be written), `--backend auto` converting only
once a conversion pays, thin images planned by their pixels, and folders of small images in shared forwards."""

from __future__ import annotations

import struct
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

from srcli.batch import Job, run_jobs
from srcli.engine import UpscaleOptions, Upscaler, cache, foldcache
from srcli.imageio import read_image, write_image
from srcli.models import build
from srcli.pipeline import ImagePipeline


@pytest.fixture
def own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A cache of this test's own, and a private temp folder for the fallback."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("SRCLI_CACHE", str(folder))
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    return folder


@pytest.fixture
def openvino():
    pytest.importorskip("openvino", reason="the OpenVINO backend is an extra: pip install 'srcli[openvino]'")
    from srcli.engine import openvino

    return openvino


def _model(scale: int = 2, blocks: int = 1, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build("edsr-baseline", scale=scale, blocks=blocks).eval()


def _image(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _entries(root: Path) -> list[Path]:
    return sorted(root.iterdir()) if root.is_dir() else []


def _flip(path: Path, how: str) -> None:
    """Damage a file of float32 values as a bad disk or a stray write would, keeping it finite where it can."""
    data = bytearray(path.read_bytes())
    if how == "truncate":
        path.write_bytes(bytes(data[: len(data) // 2]))
        return
    bit = 31 if how == "sign" else 29  # the sign, or a high exponent bit (values stay finite but wildly wrong)
    for offset in range(0, len(data) - 4, 4096):
        (word,) = struct.unpack_from("<I", data, offset)
        struct.pack_into("<I", data, offset, word ^ (1 << bit))
    path.write_bytes(bytes(data))


# --- the fold -----------------------------------------------------------------------------------------------


def test_a_cached_fold_gives_the_same_bytes_without_folding_again(own_cache) -> None:
    model, image = _model(), _image(20, 24)
    before = foldcache.folds
    first = Upscaler(model, 2, UpscaleOptions(device="cpu", backend="torch")).upscale(image).image
    assert foldcache.folds == before + 1
    [entry] = _entries(own_cache / "folds")
    assert sorted(p.name for p in entry.iterdir()) == ["entry.sha256", "fold.pt"]
    second = Upscaler(model, 2, UpscaleOptions(device="cpu", backend="torch")).upscale(image).image
    assert foldcache.folds == before + 1  # read, not folded again
    assert np.array_equal(first, second)
    other = _model(seed=1)  # other weights: another entry
    Upscaler(other, 2, UpscaleOptions(device="cpu", backend="torch"))
    assert foldcache.folds == before + 2 and len(_entries(own_cache / "folds")) == 2


@pytest.mark.parametrize("how", ["sign", "exponent", "truncate"])
def test_a_changed_fold_entry_is_rebuilt_not_used(own_cache, how) -> None:
    model, image = _model(), _image(20, 24)
    expected = Upscaler(model, 2, UpscaleOptions(device="cpu", backend="torch")).upscale(image).image
    [entry] = _entries(own_cache / "folds")
    _flip(entry / "fold.pt", how)
    before = foldcache.folds
    again = Upscaler(model, 2, UpscaleOptions(device="cpu", backend="torch")).upscale(image).image
    assert foldcache.folds == before + 1  # folded again
    assert np.array_equal(again, expected)
    assert cache.verified(entry)  # and stored whole again
    Upscaler(model, 2, UpscaleOptions(device="cpu", backend="torch"))
    assert foldcache.folds == before + 1


def test_entries_are_verified_by_the_digests_written_with_them(tmp_path) -> None:
    folder = tmp_path / "entry"
    folder.mkdir()
    (folder / "a.bin").write_bytes(b"abc")
    assert not cache.verified(folder) and not folder.exists()  # no record: not an entry (removed)
    root = tmp_path / "root"
    path = cache.store_at(root, "key", lambda temp: (temp / "a.bin").write_bytes(b"abc"))
    assert path == root / "key" and cache.verified(path)
    (path / "extra").write_bytes(b"")  # a file the record does not know
    assert not cache.verified(path) and not path.exists()


def test_an_unwritable_cache_falls_back_to_a_private_temp_folder(own_cache, tmp_path, monkeypatch) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_bytes(b"")
    monkeypatch.setenv("SRCLI_CACHE", str(blocker / "cache"))  # under a file: no one can create it, root neither
    model = _model()
    before = foldcache.folds
    Upscaler(model, 2, UpscaleOptions(device="cpu", backend="torch"))
    Upscaler(model, 2, UpscaleOptions(device="cpu", backend="torch"))
    assert foldcache.folds == before + 1
    [private] = list(Path(tempfile.gettempdir()).iterdir())
    assert private.stat().st_mode & 0o777 == 0o700
    assert [p.name for p in private.iterdir()] == ["folds"]


# --- OpenVINO's cache ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["sign", "exponent", "truncate"])
def test_a_changed_openvino_entry_is_rebuilt_not_used(openvino, own_cache, how) -> None:
    model, image = _model(), _image(20, 24)
    options = UpscaleOptions(device="cpu", backend="openvino")
    expected = Upscaler(model, 2, options).upscale(image).image
    [entry] = _entries(own_cache / "openvino")
    _flip(entry / "network.bin", how)
    before = openvino.conversions
    again = Upscaler(model, 2, options).upscale(image).image
    assert openvino.conversions == before + 1  # converted again, the changed weights never ran
    assert np.array_equal(again, expected)
    Upscaler(model, 2, options)
    assert openvino.conversions == before + 1  # the rebuilt entry serves


def test_with_no_writable_folder_openvino_converts_once_per_process_and_leaves_nothing(
        openvino, own_cache, tmp_path, monkeypatch) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_bytes(b"")
    monkeypatch.setenv("SRCLI_CACHE", str(blocker / "cache"))
    monkeypatch.setattr(tempfile, "tempdir", str(blocker / "tmp"))  # no fallback either
    model = _model(seed=3)
    before = openvino.conversions
    options = UpscaleOptions(device="cpu", backend="openvino")
    outputs = [Upscaler(model, 2, options).upscale(_image(12, 12, seed)).image for seed in range(3)]
    assert openvino.conversions == before + 1
    assert len({o.shape for o in outputs}) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "tmp"]  # nothing written elsewhere
    assert not any((tmp_path / "tmp").iterdir())
    assert blocker.read_bytes() == b""


def test_auto_runs_torch_until_a_conversion_pays(openvino, own_cache, monkeypatch) -> None:
    from srcli.engine import upscaler as engine

    model, image = _model(seed=4), _image(16, 16)
    before = openvino.conversions
    first = Upscaler(model, 2, UpscaleOptions(device="cpu", backend="auto"))
    assert first.backend == "torch" and openvino.conversions == before  # a small job never waits for a conversion
    assert first.upscale(image).plan.backend == "torch"
    key = openvino.openvino_key(model, first.spec, 2)
    done = openvino.torch_work(key)
    assert done > 0  # recorded for later runs
    later = Upscaler(model, 2, UpscaleOptions(device="cpu", backend="auto"))  # another run goes on counting
    later.upscale(image)
    assert openvino.torch_work(key) == pytest.approx(2 * done, rel=1e-5) and openvino.conversions == before
    monkeypatch.setattr(engine, "CONVERT_AFTER", 2.5 * done)  # the next image's work pays for a conversion
    assert later.upscale(image).plan.backend == "torch"
    assert later.upscale(image).plan.backend == "openvino"
    assert openvino.conversions == before + 1 and openvino.torch_work(key) == 0
    second = Upscaler(model, 2, UpscaleOptions(device="cpu", backend="auto"))  # cached: OpenVINO from the start
    assert second.backend == "openvino" and openvino.conversions == before + 1


# --- thin images --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(1, 400), (400, 1), (2, 300)])
def test_a_thin_image_computes_in_proportion_to_its_pixels(shape) -> None:
    upscaler = Upscaler(_model(blocks=4), 2, UpscaleOptions(device="cpu", backend="torch"))
    assert upscaler.receptive_field > 8  # the margin would be many times a 1-px side
    image = _image(*shape)
    result = upscaler.upscale(image)
    assert result.image.shape == (2 * shape[0], 2 * shape[1], 3)
    # margin 8 on the thin side (17 rows around 1), the receptive field on the long one
    assert result.plan.overlap <= (2 * 8 + max(min(shape), 1)) * (max(shape) + 2 * upscaler.receptive_field) / (
        shape[0] * shape[1]) + 1e-9
    assert result.plan.overlap < 20


def test_tiles_cut_the_image_not_its_border_margin() -> None:
    upscaler = Upscaler(_model(blocks=2), 2, UpscaleOptions(device="cpu", backend="torch", tile=32))
    image = _image(114, 172)
    tiled = upscaler.upscale(image)
    assert tiled.plan.tiles == 4 * 6  # ceil(114 / 32) x ceil(172 / 32): no tile of margin alone
    whole = Upscaler(_model(blocks=2), 2, UpscaleOptions(device="cpu", backend="torch", tile=0)).upscale(image)
    assert np.array_equal(tiled.image, whole.image)  # still exact


# --- folders of small images --------------------------------------------------------------------------------


def test_a_folder_of_small_images_shares_forwards_and_writes_the_same_bytes(tmp_path) -> None:
    upscaler = Upscaler(_model(), 2, UpscaleOptions(device="cpu", backend="torch"))
    sources = []
    for index in range(5):
        path = tmp_path / f"in{index}.png"
        write_image(path, _image(16, 16, index) if index != 3 else _image(16, 20, index))  # one of another size
        sources.append(path)
    jobs = [Job(path, tmp_path / f"out{path.stem}.png") for path in sources]
    calls = []
    original = upscaler.upscale_many
    upscaler.upscale_many = lambda images: calls.append(len(images)) or original(images)  # type: ignore[method-assign]
    results = run_jobs(jobs, ImagePipeline(upscaler))
    assert [r.status for r in results] == ["written"] * 5
    assert calls == [3]  # in0..in2 together; in3 (other size) and in4 (alone after it) on their own
    for path, job in zip(sources, jobs, strict=True):
        alone = upscaler.upscale(read_image(path)).image
        assert np.array_equal(read_image(job.target), alone), path.name


def test_a_temp_folder_others_may_write_is_never_a_cache(own_cache, tmp_path, monkeypatch) -> None:
    import os

    shared = Path(tempfile.gettempdir()) / f"srcli-cache-{os.getuid()}"
    shared.mkdir()
    shared.chmod(0o777)  # planted, or left open: anyone could put a model there
    assert cache.roots("folds") == [own_cache / "folds"]
    shared.chmod(0o700)
    assert cache.roots("folds") == [own_cache / "folds", shared / "folds"]
