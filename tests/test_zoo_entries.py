"""Third-party catalogue names (srcli/zoo_catalogue.json) end to end: the REAL shared files served by the loopback
server as a mirror, downloaded and verified by srcli's downloader, read by spandrel, run by the CLI."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from conftest import shared_path
from test_zoo import _spandrel_reference  # spandrel's own whole-image call, as the zoo tests compare
from upscale_helpers import assert_one_error_line, write_image

from srcli import weights, zoo
from srcli.imageio import read_image

ZOO_DIR = ("weights", "third_party", "zoo")


def _offline_zoo(monkeypatch, dead_url: str) -> None:
    """Every zoo entry's official addresses point at a dead server: only the mirror can serve them."""
    moved = tuple(dataclasses.replace(e, url=dead_url + e.filename, alternates=()) for e in weights.entries.ZOO_ENTRIES)
    monkeypatch.setattr(weights.entries, "ZOO_ENTRIES", moved)


def _serve(file_server, entry_name: str, shared_file: str, corrupt: bool = False) -> tuple[str, bytes]:
    """The shared file's real bytes on the mirror under the name the mirror rule asks for (the last path segment
    of the entry's official address); returns the mirror's base address and the bytes."""
    data = shared_path(*ZOO_DIR, shared_file).read_bytes()
    entry = weights.catalogue()[entry_name]
    served = bytearray(data)
    if corrupt:
        served[len(served) // 2] ^= 0x01
    file_server.add(f"mirror/{entry.filename}", bytes(served))
    return file_server.url("mirror/"), data


def test_every_zoo_entry_is_a_catalogue_name_with_a_file_name_of_its_own():
    listed = [e for e in weights.catalogue().values() if e.source == weights.entries.ZOO]
    assert len(listed) == len(weights.entries.ZOO_ENTRIES) >= 10
    files = [e.filename for e in weights.catalogue().values() if e.has_file]
    assert len(files) == len(set(files))  # one cache folder, one mirror: names must never collide
    for entry in listed:
        assert entry.filename == entry.url.rsplit("/", 1)[-1] and entry.parameters is None
        assert not entry.bicubic_trained and entry.license and entry.sha256 and entry.bytes > 0
    assert weights.catalogue()["edsr-baseline-x4"].bicubic_trained
    assert not weights.catalogue()["bicubic"].bicubic_trained


def test_a_zoo_scale_is_checked_before_anything_is_downloaded(srcli_home, cli, tmp_path):
    image = write_image(tmp_path / "img.png", seed=3, shape=(20, 24, 3))
    code, _, err = cli("upscale", image, "--model", "realesrgan-animevideo-xsx2", "--scale", "4")
    assert "is x2; it cannot upscale x4" in assert_one_error_line(code, err)
    assert not srcli_home.exists() or not any(srcli_home.rglob("*.pth*"))


def test_zoo_names_get_prefix_suggestions(srcli_home, cli, tmp_path):
    image = write_image(tmp_path / "img.png", seed=3, shape=(20, 24, 3))
    code, _, err = cli("upscale", image, "--model", "realesrgan-x4")
    line = assert_one_error_line(code, err)
    assert "did you mean realesrgan-x4plus or realesrgan-x4plus-anime-6b?" in line
    code, _, err = cli("upscale", image, "--model", "RealESRGAN_x4plus")  # the file's own name, as other tools use
    assert "did you mean realesrgan-x4plus?" in assert_one_error_line(code, err)


def test_without_spandrel_a_zoo_name_is_one_line_with_the_extra_before_any_download(srcli_home, cli, tmp_path,
                                                                                   file_server, monkeypatch):
    monkeypatch.setattr(zoo, "available", lambda: False)  # what a machine without the srcli[zoo] extra answers
    image = write_image(tmp_path / "img.png", seed=3, shape=(20, 24, 3))
    code, _, err = cli("upscale", image, "--model", "realesrgan-x4plus", "--mirror", file_server.url("mirror/"))
    line = assert_one_error_line(code, err)
    assert "realesrgan-x4plus is a third-party esrgan model read by spandrel" in line and "srcli[zoo]" in line
    assert file_server.requests == []


@pytest.mark.skipif(not zoo.available(), reason='spandrel is not installed (pip install "srcli[zoo]")')
def test_a_real_zoo_file_downloads_through_the_mirror_and_matches_spandrel(srcli_home, cli, tmp_path, file_server,
                                                                           dead_url, monkeypatch):
    _offline_zoo(monkeypatch, dead_url)
    mirror, data = _serve(file_server, "realesrgan-animevideo-xsx2", "compact_xsx2.pth")
    source = write_image(tmp_path / "img.png", seed=5, shape=(26, 34, 3))
    target = tmp_path / "out.png"
    code, _, err = cli("upscale", source, "--model", "realesrgan-animevideo-xsx2", "--mirror", mirror,
                       "-o", target, "--border", "zero")
    assert code == 0, err
    cached = weights.catalogue()["realesrgan-animevideo-xsx2"].local_path()
    assert cached.parent == weights.cache_dir() and cached.read_bytes() == data
    ours = read_image(target)
    reference = _spandrel_reference(cached, read_image(source))
    assert ours.shape == reference.shape == (52, 68, 3)
    assert np.abs(ours.astype(int) - reference.astype(int)).max() <= 1


@pytest.mark.skipif(not zoo.available(), reason='spandrel is not installed (pip install "srcli[zoo]")')
def test_a_corrupted_zoo_file_is_refused_by_sha256_and_nothing_is_cached(srcli_home, cli, tmp_path, file_server,
                                                                         dead_url, monkeypatch):
    _offline_zoo(monkeypatch, dead_url)
    mirror, _ = _serve(file_server, "realesrgan-animevideo-xsx2", "compact_xsx2.pth", corrupt=True)
    source = write_image(tmp_path / "img.png", seed=5, shape=(26, 34, 3))
    code, _, err = cli("upscale", source, "--model", "realesrgan-animevideo-xsx2", "--mirror", mirror)
    assert "sha256 mismatch" in assert_one_error_line(code, err)
    assert not weights.cache_dir().exists() or list(weights.cache_dir().iterdir()) == []
    assert not (tmp_path / "img_x2.png").exists()


def test_a_test_only_1x_entry_downloads_by_name_through_the_mirror(srcli_home, cli, file_server, dead_url,
                                                                   monkeypatch):
    _offline_zoo(monkeypatch, dead_url)
    mirror, data = _serve(file_server, "dncnn-25-grey", "kair_dncnn25.pth")
    code, _, err = cli("download", "dncnn-25-grey", "--mirror", mirror, "--json")
    assert code == 0, err
    entry = weights.catalogue()["dncnn-25-grey"]
    assert entry.scales == (1,) and "1x" in entry.tags and entry.audience == ("tests",)
    assert entry.local_path().read_bytes() == data and entry.status() == "cached"


def test_models_lists_zoo_entries_by_purpose_with_licence_and_size(srcli_home, cli):
    code, _, err = cli("models")
    assert code == 0, err
    lines = err.splitlines()
    groups = [i for i, line in enumerate(lines) if line.strip() in ("photos", "anime, drawings",
                                                                     "1x, restore first (--pre)")]
    assert len(groups) == 3 and groups == sorted(groups)
    row = next(line for line in lines if line.startswith("realesr-general-x4v3 "))
    assert row.split()[1:] == ["JPEG", "noise", "BSD-3-Clause", "4.9", "MB", "remote"]
    assert any(line.startswith("dejpg-realplksr-1x ") for line in lines[groups[2]:])
    assert "bicubic-trained" in err and "ditn-real-x4" not in err and "3 test fixture(s) not shown" in err
    code, _, everything = cli("models", "--all")
    assert "ditn-real-x4" in everything and "dncnn-25-grey" in everything


def test_models_json_carries_every_zoo_fact(srcli_home, cli):
    import json

    _, out, _ = cli("models", "--json")
    records = {r["name"]: r for r in json.loads(out)}
    record = records["realesrgan-x4plus"]
    assert (record["license"], record["author"], record["bytes"], record["scales"]) == (
        "BSD-3-Clause", "xinntao", 67040989, [4])
    assert record["sha256"].startswith("4fa0d389") and record["tags"] == ["photo", "real-world", "jpeg"]
    assert record["origin"].startswith("OpenModelDB/open-model-database@") and record["degradation"] == "real"
    assert records["ditn-real-x4"]["audience"] == ["tests"]
    assert records["srcli-mdsr-baseline"]["degradation"] == "bicubic"


@pytest.mark.skipif(not zoo.available(), reason='spandrel is not installed (pip install "srcli[zoo]")')
def test_the_api_loads_a_zoo_name_through_the_mirror_from_the_environment(srcli_home, file_server, dead_url,
                                                                         monkeypatch):
    import srcli

    _offline_zoo(monkeypatch, dead_url)
    mirror, _ = _serve(file_server, "realesrgan-animevideo-xsx4", "compact_xsx4.pth")
    monkeypatch.setenv("SRCLI_MIRROR", mirror)
    model = srcli.load("realesrgan-animevideo-xsx4")
    image = np.random.default_rng(9).integers(0, 256, (12, 14, 3), dtype=np.uint8)
    assert model.scale == 4 and model.upscale(image).shape == (48, 56, 3)
