"""Fixtures shared by the tests: where ../shared lives, and skips that say why."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("SRCLI_SHARED", REPO.parent / "shared"))


def shared_path(*parts: str) -> Path:
    """A path under the shared fixtures, or a skip naming what is missing and how to point at it."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent: set SRCLI_SHARED to the shared fixtures folder")
    return path


@pytest.fixture
def benchmark_dir() -> Path:
    return shared_path("datasets", "benchmark")


@pytest.fixture
def train_dir() -> Path:
    return shared_path("datasets", "train")


@pytest.fixture
def vdsr_checkpoint() -> Path:
    return shared_path("weights", "third_party", "vdsr_291_epoch50.pth")


@pytest.fixture
def file_server():
    """A real HTTP server on 127.0.0.1 (see tests/loopback.py) for download tests."""
    from loopback import FileServer

    with FileServer() as server:
        yield server


@pytest.fixture
def srcli_home(tmp_path, monkeypatch) -> Path:
    """An empty srcli data folder (downloads land in it) and no mirror from the environment."""
    home = tmp_path / "srcli-home"
    monkeypatch.setenv("SRCLI_HOME", str(home))
    monkeypatch.delenv("SRCLI_MIRROR", raising=False)
    return home
