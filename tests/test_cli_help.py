"""Help and version are instant: they never import torch (whose import alone takes seconds)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from upscale_helpers import REPO, srcli_command

COMMANDS = ("upscale", "eval", "train", "models", "download")


@pytest.fixture(scope="module")
def torchless_env(tmp_path_factory) -> dict[str, str]:
    """An environment where `import torch` raises ImportError: a fake torch package first on the path."""
    folder = tmp_path_factory.mktemp("no-torch")
    (folder / "torch").mkdir()
    (folder / "torch" / "__init__.py").write_text('raise ImportError("torch imported by a help screen")\n')
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(folder), os.environ.get("PYTHONPATH")])))
    env["COLUMNS"] = "100"
    return env


def _run(env: dict[str, str], *arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run(srcli_command(*arguments), cwd=REPO, env=env, capture_output=True, text=True, check=False)


def test_the_fake_torch_really_is_unimportable(torchless_env):
    # Guards the other tests: a command that needs torch must fail under this environment.
    run = _run(torchless_env, "models")
    assert run.returncode != 0
    assert "torch imported by a help screen" in run.stderr


@pytest.mark.parametrize("arguments", [("--help",), ("--version",), *((name, "--help") for name in COMMANDS)])
def test_help_and_version_never_import_torch(torchless_env, arguments):
    run = _run(torchless_env, *arguments)
    assert run.returncode == 0, run.stderr
    assert run.stderr == ""
    if arguments == ("--version",):
        assert run.stdout.startswith("srcli ")
    else:
        assert "Usage: " in run.stdout and "--help" in run.stdout


def test_import_srcli_is_light(torchless_env):
    """No torch and no OpenCV (the entry point or the API's first use loads it, with srcli's pixel limit)."""
    code = "import srcli, sys; assert 'torch' not in sys.modules and 'cv2' not in sys.modules; print(srcli.__version__)"
    run = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=torchless_env,
                         capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == Path(REPO / "pyproject.toml").read_text().split('version = "')[1].split('"')[0]


def test_import_srcli_loads_neither_torch_nor_opencv_with_both_installed():
    """A fresh process with the real packages importable: `import srcli` leaves both out, reads no argv."""
    code = ("import sys; sys.argv[1:] = ['--max-pixels', 'not a number']; import srcli; "
            "print(sorted(name for name in ('cv2', 'torch') if name in sys.modules))")
    run = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"
