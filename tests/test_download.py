"""The downloader against a real loopback HTTP server: success, resume, checksums, HTTP and network errors."""

from __future__ import annotations

import hashlib
import random
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from srcli import download
from srcli.errors import DownloadError, UnknownModelError

DATA = random.Random(0).randbytes(300_000)
SHA256 = hashlib.sha256(DATA).hexdigest()
MD5 = hashlib.md5(DATA).hexdigest()


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_fetch_verifies_and_reports_progress(file_server, tmp_path):
    url = file_server.add("files/blob.bin", DATA)
    seen: list[tuple[int, int | None]] = []
    dest = download.fetch(url, tmp_path / "cache" / "blob.bin", sha256=SHA256, md5=MD5, size=len(DATA),
                          progress=lambda done, total: seen.append((done, total)))
    assert dest.read_bytes() == DATA
    assert _leftovers(tmp_path / "cache") == ["blob.bin"]
    assert seen[-1] == (len(DATA), len(DATA))
    assert [done for done, _ in seen] == sorted(done for done, _ in seen)


@pytest.mark.parametrize("retries", [0, 2])
def test_dropped_connection_resumes_with_range(file_server, tmp_path, retries):
    url = file_server.add("blob.bin", DATA, drop_after=100_000)
    dest = tmp_path / "blob.bin"
    if retries == 0:  # the first call gives up and keeps what it has; the second call resumes
        with pytest.raises(DownloadError, match="run again to resume") as error:
            download.fetch(url, dest, sha256=SHA256, retries=0)
        assert "\n" not in str(error.value)
        assert 0 < (tmp_path / "blob.bin.part").stat().st_size <= 100_000
        assert not dest.exists()
    download.fetch(url, dest, sha256=SHA256, retries=retries)
    first, second = file_server.requests
    assert (first.range, first.status, second.status) == (None, 200, 206)
    assert 0 < int(second.range.removeprefix("bytes=").removesuffix("-")) <= 100_000
    assert dest.read_bytes() == DATA
    assert _leftovers(tmp_path) == ["blob.bin"]


def test_server_ignoring_range_restarts_from_zero(file_server, tmp_path):
    url = file_server.add("blob.bin", DATA, ignore_range=True)
    (tmp_path / "blob.bin.part").write_bytes(DATA[:5000])
    dest = download.fetch(url, tmp_path / "blob.bin", sha256=SHA256)
    assert [(r.range, r.status) for r in file_server.requests] == [("bytes=5000-", 200)]
    assert dest.read_bytes() == DATA


@pytest.mark.parametrize("part", [DATA, bytes(len(DATA))], ids=["complete", "junk"])
def test_range_not_satisfiable_verifies_or_restarts(file_server, tmp_path, part):
    url = file_server.add("blob.bin", DATA)
    (tmp_path / "blob.bin.part").write_bytes(part)
    dest = download.fetch(url, tmp_path / "blob.bin", sha256=SHA256)
    assert dest.read_bytes() == DATA
    expected = [(f"bytes={len(DATA)}-", 416)] + ([] if part == DATA else [(None, 200)])
    assert [(r.range, r.status) for r in file_server.requests] == expected


@pytest.mark.parametrize("checks", [{"sha256": hashlib.sha256(b"other").hexdigest()},
                                    {"md5": hashlib.md5(b"other").hexdigest()},
                                    {"size": len(DATA) + 1}])
def test_wrong_checksum_is_refused_and_nothing_cached(file_server, tmp_path, checks):
    url = file_server.add("blob.bin", DATA)
    with pytest.raises(DownloadError, match="mismatch") as error:
        download.fetch(url, tmp_path / "cache" / "blob.bin", **checks)
    assert "\n" not in str(error.value)
    assert _leftovers(tmp_path / "cache") == []


def test_http_404_is_one_line(file_server, tmp_path):
    with pytest.raises(DownloadError) as error:
        download.fetch(file_server.url("missing.bin"), tmp_path / "missing.bin")
    assert str(error.value) == f"{file_server.url('missing.bin')}: HTTP 404 Not Found"
    assert _leftovers(tmp_path) == []


def test_unreachable_server_is_one_line(tmp_path, dead_url):
    with pytest.raises(DownloadError, match="connection refused") as error:
        download.fetch(dead_url + "x.bin", tmp_path / "x.bin", retries=0)
    assert "\n" not in str(error.value)


def test_verified_file_is_not_downloaded_again(file_server, tmp_path):
    url = file_server.add("blob.bin", DATA)
    (tmp_path / "blob.bin").write_bytes(DATA)
    download.fetch(url, tmp_path / "blob.bin", sha256=SHA256)
    assert file_server.requests == []
    (tmp_path / "blob.bin").write_bytes(DATA[:-1] + b"!")  # damaged: replaced by a good copy
    download.fetch(url, tmp_path / "blob.bin", sha256=SHA256)
    assert (tmp_path / "blob.bin").read_bytes() == DATA


def test_concurrent_fetches_of_one_file_download_it_once(file_server, tmp_path):
    url = file_server.add("blob.bin", DATA)
    with ThreadPoolExecutor(4) as pool:
        paths = list(pool.map(lambda _: download.fetch(url, tmp_path / "blob.bin", sha256=SHA256), range(4)))
    assert len(file_server.requests) == 1
    assert all(path.read_bytes() == DATA for path in paths)
    assert _leftovers(tmp_path) == ["blob.bin"]


def test_mirror_first_then_official(file_server, tmp_path, monkeypatch):
    official = file_server.add("official/blob.bin", DATA)
    monkeypatch.setenv(download.MIRROR_ENV, file_server.url("mirror/"))
    urls = download.candidate_urls(official)
    assert urls == [file_server.url("mirror/blob.bin"), official]
    assert download.candidate_urls(official, mirror="") == [official]
    download.fetch_first(urls, tmp_path / "blob.bin", sha256=SHA256)
    assert [(r.path, r.status) for r in file_server.requests] == [("/mirror/blob.bin", 404),
                                                                   ("/official/blob.bin", 200)]
    assert (tmp_path / "blob.bin").read_bytes() == DATA


def test_all_sources_failing_is_one_line(file_server, tmp_path):
    with pytest.raises(DownloadError) as error:
        download.fetch_first([file_server.url("a.bin"), file_server.url("b.bin")], tmp_path / "a.bin")
    assert str(error.value).count("HTTP 404") == 2
    assert "\n" not in str(error.value)


def test_data_home_follows_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(download.HOME_ENV, str(tmp_path))
    assert download.data_home() == tmp_path
    monkeypatch.delenv(download.HOME_ENV)
    assert download.data_home().name == "srcli"


def test_unknown_downloadable_names_every_unknown():
    with pytest.raises(UnknownModelError, match="nothing called nope, nada"):
        download.lookup(["nope", "nada"])
