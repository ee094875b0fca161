"""The third-party catalogue (srcli/zoo_catalogue.json): well-formed facts, and the shared fixtures' real bytes."""

from __future__ import annotations

import hashlib
import importlib.resources
import re

from conftest import shared_path

from srcli import zoo_catalogue

REQUIRED = {
    "realesrgan-x4plus", "realesrgan-x2plus", "realesr-general-x4v3", "realesr-general-wdn-x4v3",
    "realesrgan-x4plus-anime-6b",
}


def test_catalogue_ships_inside_the_package():
    assert importlib.resources.files("srcli").joinpath("zoo_catalogue.json").is_file()


def test_size_and_unique_names():
    names = [e.name for e in zoo_catalogue.entries()]
    assert 10 <= len(names) <= 20
    assert len(set(names)) == len(names)
    assert all(re.fullmatch(r"[a-z0-9][a-z0-9.-]*", n) for n in names)
    assert set(names) >= REQUIRED


def test_every_fact_is_well_formed():
    for e in zoo_catalogue.entries():
        assert re.fullmatch(r"[0-9a-f]{64}", e.sha256), e.name
        assert e.bytes > 0, e.name
        assert e.scale in (1, 2, 3, 4, 8), e.name
        assert e.url and all(u.startswith("https://") for u in e.url), e.name
        assert e.url[0].endswith((".pth", ".safetensors")), e.name
        assert e.tags and set(e.tags) <= set(zoo_catalogue.TAGS), e.name
        assert e.audience and set(e.audience) <= set(zoo_catalogue.AUDIENCES), e.name
        assert ("1x" in e.tags) == (e.scale == 1), e.name
        assert e.title and e.author and e.license and e.purpose and e.source, e.name
    assert len({e.sha256 for e in zoo_catalogue.entries()}) == len(zoo_catalogue.entries())


def test_required_entries_carry_the_published_facts():
    x4plus = zoo_catalogue.entry("RealESRGAN-x4plus")
    assert x4plus is not None
    assert (x4plus.architecture, x4plus.scale, x4plus.bytes) == ("esrgan", 4, 67040989)
    assert x4plus.sha256 == "4fa0d38905f75ac06eb49a7951b426670021be3018265fd191d2125df9d682f1"
    assert x4plus.url[0] == "https://github.com/xinntao/Real-ESRGAN/releases/download/v0.1.0/RealESRGAN_x4plus.pth"
    assert zoo_catalogue.entry("no-such-model") is None


def test_by_purpose_groups_by_tag():
    groups = zoo_catalogue.by_purpose()
    assert list(groups) == [t for t in zoo_catalogue.TAGS if t in groups]
    assert "realesrgan-x4plus" in {e.name for e in groups["photo"]}
    assert {e.scale for e in groups["1x"]} == {1}
    assert any("jpeg" in e.tags for e in groups["1x"]) and any("denoise" in e.tags for e in groups["1x"])
    users = {e.name for group in groups.values() for e in group}
    everyone = {e.name for group in zoo_catalogue.by_purpose(None).values() for e in group}
    assert users < everyone == {e.name for e in zoo_catalogue.entries()}
    assert "dncnn-25-grey" not in users  # a test fixture only


def test_shared_fixture_files_match_their_entries():
    folder = shared_path("weights", "third_party", "zoo")
    by_sha = {e.sha256: e for e in zoo_catalogue.entries()}
    files = sorted(folder.glob("*.pth"))
    assert files
    for path in files:
        data = path.read_bytes()
        found = by_sha.get(hashlib.sha256(data).hexdigest())
        assert found is not None, f"{path.name} has no catalogue entry"
        assert found.bytes == len(data) and "tests" in found.audience, path.name
        assert found.url[0].startswith("https://raw.githubusercontent.com/"), path.name
        repo, commit_path = found.source.split("@", 1)
        commit, file_path = commit_path.split(":", 1)
        assert found.url[0] == f"https://raw.githubusercontent.com/{repo}/{commit}/{file_path}"
    assert len(files) == sum("tests" in e.audience for e in zoo_catalogue.entries())
