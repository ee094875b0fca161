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


@pytest.fixture(autouse=True, scope="session")
def _srcli_cache(tmp_path_factory: pytest.TempPathFactory):
    """Converted models (the OpenVINO backend) go to one cache for the whole run, never the user's. The precision
    probe's answer is given there as "bf16 slower", so `--precision auto` is fp32 on every machine the suite runs
    on (tests/test_precision.py runs the probe itself in a cache of its own)."""
    folder = tmp_path_factory.mktemp("srcli-cache")
    previous = os.environ.get("SRCLI_CACHE")
    os.environ["SRCLI_CACHE"] = str(folder)  # child processes (`python -m srcli`) inherit it
    from precision_helpers import pin_fp32

    pin_fp32()
    yield folder
    if previous is None:
        os.environ.pop("SRCLI_CACHE", None)
    else:
        os.environ["SRCLI_CACHE"] = previous


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
def dead_url() -> str:
    """An address on 127.0.0.1 where nothing listens: the 'official server is down' case."""
    from loopback import free_port

    return f"http://127.0.0.1:{free_port()}/research/EDSR/models/"


@pytest.fixture(scope="session")
def baseline_x2():
    """A real EDSR-baseline x2 state dict (seeded random weights) and its saved bytes."""
    import torch
    from loopback import saved

    from srcli.models import build

    torch.manual_seed(0)
    state = build("edsr-baseline", scale=2).state_dict()
    return state, saved(state)


@pytest.fixture
def served_entry(baseline_x2, file_server, monkeypatch, dead_url, srcli_home):
    """The edsr-baseline-x2 catalogue entry re-pointed at a test file: official server down, file on
    the loopback mirror at `file_server.url("mirror")`."""
    import dataclasses
    import hashlib

    from srcli import weights

    _, data = baseline_x2
    sha256 = hashlib.sha256(data).hexdigest()
    filename = f"edsr_baseline_x2-{sha256[:8]}.pt"
    entry = dataclasses.replace(weights.OFFICIAL[0], filename=filename, sha256=sha256, bytes=len(data),
                                url=dead_url + filename)
    monkeypatch.setattr(weights.entries, "OFFICIAL", (entry, *weights.OFFICIAL[1:]))
    file_server.add(f"mirror/{filename}", data)
    return entry


@pytest.fixture
def srcli_home(tmp_path, monkeypatch) -> Path:
    """An empty srcli data folder (downloads land in it) and no mirror from the environment."""
    home = tmp_path / "srcli-home"
    monkeypatch.setenv("SRCLI_HOME", str(home))
    monkeypatch.delenv("SRCLI_MIRROR", raising=False)
    return home


@pytest.fixture
def cli(capsys, monkeypatch):
    """`srcli ARGV...` in-process through the real entry point -> (exit code, stdout, stderr)."""
    from upscale_helpers import run_cli

    return lambda *argv: run_cli([str(a) for a in argv], capsys, monkeypatch)


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    """A real, untrained one-block EDSR x2 state dict file."""
    from upscale_helpers import tiny_checkpoint

    return tiny_checkpoint(tmp_path / "tiny_x2.pt")
