"""`srcli download div2k --part ...` against a loopback mirror serving small archives in DIV2K's real
layout, and `srcli train` on what it extracted (its own LR used; `--data div2k` found in the cache)."""

from __future__ import annotations

import hashlib
import io
import json
import re
import sys
import zipfile

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from srcli import datasets
from srcli.cli import app, main
from srcli.datasets import ARCHIVES, DIV2K_GROUPS, Archive, div2k_archives, expand_download_names, megabytes
from srcli.training import configure

HR = {f"{i:04d}": cv2.GaussianBlur(np.random.default_rng(i).integers(0, 256, (40, 48, 3), np.uint8), (5, 5), 2)
      for i in (1, 2)}
OWN_LR = {stem: np.full((20, 24, 3), 10 + 50 * i, np.uint8) for i, stem in enumerate(HR)}  # not any bicubic


def _png(image: np.ndarray) -> bytes:
    return cv2.imencode(".png", image[:, :, ::-1])[1].tobytes()


def _zip(folder: str, files: dict[str, bytes]) -> bytes:
    """A zip as the DIV2K site ships it: the folder entry, then its PNGs."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(zipfile.ZipInfo(folder + "/"), b"")
        for name, data in files.items():
            archive.writestr(f"{folder}/{name}", data)
    return buffer.getvalue()


ZIPS = {
    "DIV2K_train_HR.zip": _zip("DIV2K_train_HR", {f"{stem}.png": _png(hr) for stem, hr in HR.items()}),
    "DIV2K_train_LR_bicubic_X2.zip": _zip(
        "DIV2K_train_LR_bicubic/X2", {f"{stem}x2.png": _png(lr) for stem, lr in OWN_LR.items()}
    ),
}


@pytest.fixture
def mirror(file_server, srcli_home, monkeypatch, dead_url) -> str:
    """The two archives on the loopback mirror; the catalogue's md5s are theirs, the official address dead."""
    monkeypatch.delenv(datasets.DATA_ENV, raising=False)
    monkeypatch.delenv(datasets.MIRROR_ENV, raising=False)
    for file, data in ZIPS.items():
        file_server.add(f"mirror/{file}", data)
        md5 = hashlib.md5(data).hexdigest()
        monkeypatch.setitem(ARCHIVES, file, Archive(file, dead_url + file, md5, "DIV2K", len(data) / 1e6))
    return file_server.url("mirror/")


def _download(*args: str):
    return CliRunner().invoke(app, ["download", *args, "--json"])


def test_two_parts_download_verify_and_extract_into_the_real_layout(mirror, file_server, srcli_home):
    result = _download("div2k", "--part", "train-hr", "--part", "train-lr-bicubic-x2", "--mirror", mirror)
    assert result.exit_code == 0, result.output
    home = srcli_home / "datasets"
    records = json.loads(result.stdout)
    assert [(r["name"], r["status"], r["path"]) for r in records] == [
        ("DIV2K_train_HR", "downloaded", str(home / "DIV2K" / "DIV2K_train_HR")),
        ("DIV2K_train_LR_bicubic_X2", "downloaded", str(home / "DIV2K" / "DIV2K_train_LR_bicubic" / "X2")),
    ]
    on_disk = {str(p.relative_to(home / "DIV2K")): p.read_bytes()
               for p in sorted((home / "DIV2K").rglob("*")) if p.is_file()}
    expected = {
        **{f"DIV2K_train_HR/{stem}.png": _png(hr) for stem, hr in HR.items()},
        **{f"DIV2K_train_LR_bicubic/X2/{stem}x2.png": _png(lr) for stem, lr in OWN_LR.items()},
    }
    assert on_disk == expected
    assert records[0]["bytes"] == sum(len(_png(hr)) for hr in HR.values())
    assert not any((home / ".downloads").iterdir())  # archives deleted once extracted
    assert not list(home.rglob(".extract-*"))
    assert sorted(r.path for r in file_server.requests) == ["/mirror/" + file for file in sorted(ZIPS)]

    again = _download("div2k", "--part", "train-hr", "--mirror", mirror)
    assert [r["status"] for r in json.loads(again.stdout)] == ["present"]
    assert len(file_server.requests) == 2  # nothing fetched again


def test_train_on_the_extracted_folder_uses_the_sets_own_lr_and_div2k_names_it(mirror, srcli_home, tmp_path):
    assert _download("div2k", "--part", "train-hr", "--part", "train-lr-bicubic-x2", "--mirror", mirror).exit_code == 0
    folder = srcli_home / "datasets" / "DIV2K" / "DIV2K_train_HR"
    cache = tmp_path / "cache"
    args = ["train", "--data", str(folder), "--out", str(tmp_path / "run"), "--steps", "1", "--batch", "2",
            "--patch", "8", "--cache-dir", str(cache), "--log-every", "1"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    [lr_cache] = cache.glob("*-x2.npz")
    with np.load(lr_cache) as arrays:
        assert [arrays[f"arr_{i}"].tolist() for i in range(2)] == [lr.tolist() for lr in OWN_LR.values()]

    config, _ = configure("edsr-baseline", {"data": ["div2k"], "out": str(tmp_path / "named")}, resume=False)
    assert config.data == [str(folder)]


def test_train_data_div2k_absent_says_how_to_download_it(srcli_home, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv(datasets.DATA_ENV, raising=False)
    monkeypatch.setattr(sys, "argv", ["srcli", "train", "--data", "div2k", "--out", str(tmp_path / "run")])
    with pytest.raises(SystemExit) as stop:
        main()
    err = capsys.readouterr().err
    assert stop.value.code != 0
    assert len(err.strip().splitlines()) == 1 and "srcli download div2k" in err, err
    assert not (tmp_path / "run").exists()


def test_groups_open_into_archives_and_the_help_states_their_sizes():
    paper = [archive.name for archive in div2k_archives()]
    assert paper == ["DIV2K_train_HR", "DIV2K_train_LR_bicubic_X2", "DIV2K_train_LR_bicubic_X3",
                     "DIV2K_train_LR_bicubic_X4", "DIV2K_valid_HR", "DIV2K_valid_LR_bicubic_X2",
                     "DIV2K_valid_LR_bicubic_X3", "DIV2K_valid_LR_bicubic_X4"]
    assert expand_download_names(["div2k", "benchmark", "edsr-x2"]) == [*paper, "benchmark", "edsr-x2"]
    assert expand_download_names(["DIV2K"], ["valid-hr", "valid", "hr"]) == [
        "DIV2K_train_HR", "DIV2K_valid_HR", "DIV2K_valid_LR_bicubic_X2", "DIV2K_valid_LR_bicubic_X3",
        "DIV2K_valid_LR_bicubic_X4"]
    assert len(div2k_archives(["all"])) == 14
    text = re.sub(r"\s+", " ", CliRunner().invoke(app, ["download", "--help"], env={"COLUMNS": "300"}).output)
    assert f"the EDSR paper's data, {megabytes(div2k_archives()) / 1000:.1f} GB" in text
    for group in DIV2K_GROUPS.keys() - {"paper", "valid", "unknown"}:
        assert f"{group} ({megabytes(div2k_archives([group])) / 1000:.1f} GB)" in text
    assert f"valid ({megabytes(div2k_archives(['valid'])) / 1000:.2f} GB)" in text
    assert f"LR, {megabytes(div2k_archives(['unknown'])) / 1000:.1f} GB)" in text


@pytest.mark.parametrize(("args", "needle"), [
    (["div2k", "--part", "train-lr-x2"], "div2k has no part 'train-lr-x2'; groups: paper"),
    (["benchmark", "--part", "train"], "--part chooses parts of div2k"),
])
def test_bad_parts_are_one_line(srcli_home, monkeypatch, capsys, args, needle):
    monkeypatch.setattr(sys, "argv", ["srcli", "download", *args])
    with pytest.raises(SystemExit) as stop:
        main()
    err = capsys.readouterr().err
    assert stop.value.code != 0 and len(err.strip().splitlines()) == 1 and needle in err, err
    assert not (srcli_home / "datasets").exists()
