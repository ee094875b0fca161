"""`.ci/run`: the README's test command takes the light path (no CUDA torch) unless CI or --zoo-pair asks."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from upscale_helpers import REPO

# Every python3 / venv tool the script calls records its arguments and succeeds; `-m venv DIR` makes DIR/bin.
_STUB = """#!/usr/bin/env bash
echo "$0 $*" >> "$CALLS"
if [[ "$1 $2" == "-m venv" ]]; then
  mkdir -p "$3/bin"
  for tool in python ruff; do cp "$STUB" "$3/bin/$tool"; done
fi
"""


def _run_ci(tmp_path: Path, *arguments: str, ci: str | None = None) -> tuple[int, str]:
    if shutil.which("bash") is None:
        pytest.skip("no bash")
    checkout = tmp_path / "checkout"
    (checkout / ".ci").mkdir(parents=True)
    shutil.copy(REPO / ".ci" / "run", checkout / ".ci" / "run")
    stubs = tmp_path / "bin"
    stubs.mkdir()
    stub = stubs / "python3"
    stub.write_text(_STUB)
    stub.chmod(stub.stat().st_mode | stat.S_IEXEC)
    calls = tmp_path / "calls.log"
    env = {key: value for key, value in os.environ.items() if key != "CI"}
    env.update(PATH=f"{stubs}{os.pathsep}{env['PATH']}", CALLS=str(calls), STUB=str(stub))
    if ci is not None:
        env["CI"] = ci
    run = subprocess.run(["bash", str(checkout / ".ci" / "run"), *arguments], env=env, capture_output=True,
                         text=True, check=False)
    return run.returncode, calls.read_text() if calls.exists() else run.stderr


def test_the_light_path_downloads_no_cuda_torch(tmp_path):
    code, calls = _run_ci(tmp_path)
    assert code == 0, calls
    assert "torch==2.14.1" not in calls and ".venv-zoo" not in calls
    assert "torch==2.13.0" in calls and "plots" in calls and "pytest -q" in calls


@pytest.mark.parametrize(("arguments", "ci"), [(("--zoo-pair",), None), ((), "true")])
def test_ci_or_the_flag_adds_the_zoo_pair(tmp_path, arguments, ci):
    code, calls = _run_ci(tmp_path, *arguments, ci=ci)
    assert code == 0, calls
    assert "torch==2.14.1" in calls and "tests/test_zoo.py" in calls and "torch==2.13.0" in calls
