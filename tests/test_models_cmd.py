"""`srcli models` and `srcli download` through the real Typer app and a loopback mirror."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from srcli.cli import app, main
from srcli.datasets import ARCHIVES
from srcli.download import downloadables
from srcli.weights import embedded

REPO = Path(__file__).resolve().parent.parent

# sources.md: the official EDSR-PyTorch files.
OFFICIAL = {
    "edsr-baseline-x2": ("1bc9523228fdc3b0a5ddb0d7062001e22b31bbb398ae09cfdefb97e8ee06e171", 5490680),
    "edsr-baseline-x3": ("abf2a44e7a137228efa42a4264a23e12603168d43ac7596b1adef40c649b9240", 6229240),
    "edsr-baseline-x4": ("6b446fab734f4de74448d2fd1f3f990f5bae726e49dc7eff2ae9cefe444a1723", 6081831),
    "edsr-x2": ("0edfb8a3772c94485c939f81a8aeefe02cccdfbf45243c6d22b39c29eb7d46de", 162939971),
    "edsr-x3": ("ea3ef2c6449845ac3bda7290480af76a53e5006beff60bf89c84ca62f986eeca", 174741571),
    "edsr-x4": ("4f62e9ef1a4ec6a7d3da4ed837116cec641e4e1566f98187151d813e83a0c1c8", 172381555),
    "mdsr-baseline": ("a00cab12f80c2a7cf0a15c3b9fcae3cfe9273121e8942692303e5010d1dca5ef", 12924933),
    "mdsr": ("4a78bedfdb8fb1ad81b4bce9e13a907c0355a2ab52adafe2da868f9bb9096311", 31869146),
}


def test_models_json_lists_every_official_file(srcli_home):
    result = subprocess.run([sys.executable, "-m", "srcli", "models", "--json"], cwd=REPO, capture_output=True,
                            text=True, check=False)
    assert result.returncode == 0, result.stderr
    records = json.loads(result.stdout)
    official = {r["name"]: (r["sha256"], r["bytes"]) for r in records if r["source"] == "official"}
    assert official == OFFICIAL
    by_name = {r["name"]: r for r in records}
    assert by_name["edsr-x4"]["parameters"] == 43089923
    assert by_name["edsr-baseline-x2"]["metrics"]["Set5"]["2"]["psnr"] == 37.98
    assert by_name["mdsr"]["scales"] == [2, 3, 4]
    assert {r["status"] for r in records if r["source"] == "official"} == {"remote"}


def test_models_table_goes_to_stderr(srcli_home):
    result = CliRunner().invoke(app, ["models"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert result.stdout == ""
    for name in OFFICIAL:
        assert f" {name} " in result.stderr
    assert "37.98" in result.stderr and "43.09M" in result.stderr


def test_download_fetches_from_mirror_then_reports_present(served_entry, baseline_x2, file_server):
    mirror = file_server.url("mirror/")
    first = CliRunner().invoke(app, ["download", "edsr-baseline-x2", "--mirror", mirror, "--json"])
    assert first.exit_code == 0, first.output
    [record] = json.loads(first.stdout)
    assert record["status"] == "downloaded"
    assert Path(record["path"]).read_bytes() == baseline_x2[1]
    second = CliRunner().invoke(app, ["download", "edsr-baseline-x2", "--mirror", mirror, "--json"])
    assert json.loads(second.stdout)[0]["status"] == "present"
    assert len(file_server.requests) == 1  # the cached file was verified locally, not fetched again
    listing = CliRunner().invoke(app, ["models", "--json"])
    statuses = {r["name"]: r["status"] for r in json.loads(listing.stdout)}
    assert statuses["edsr-baseline-x2"] == "cached"


def _run_main(monkeypatch, capsys, *args: str) -> tuple[int, str]:
    """The console-script entry point in-process (so test-local catalogue changes apply): exit code, stderr."""
    monkeypatch.setattr(sys, "argv", ["srcli", *args])
    with pytest.raises(SystemExit) as stop:
        main()
    return stop.value.code, capsys.readouterr().err


def test_download_failure_is_one_line_and_nonzero(served_entry, dead_url, monkeypatch, capsys):
    code, err = _run_main(monkeypatch, capsys, "download", "edsr-baseline-x2", "--mirror", dead_url)
    error_lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2
    assert len(error_lines) == 1 and "connection refused" in error_lines[0] and "--weights PATH" in error_lines[0]
    assert "Traceback" not in err
    assert not any(served_entry.local_path().parent.glob("*"))


def test_unknown_name_is_one_line(srcli_home, monkeypatch, capsys):
    code, err = _run_main(monkeypatch, capsys, "download", "edsr-x5", "edsr-baseline-x2")
    assert code == 2
    known = sorted(name for name, item in downloadables().items() if not item.shipped)
    assert {*OFFICIAL, "benchmark", *(file.rsplit(".", 1)[0] for file in ARCHIVES)} <= set(known)
    assert err.strip().splitlines() == [f"error: nothing called edsr-x5 can be downloaded; known: {', '.join(known)} "
                                        "(srcli's embedded models ship with it: `srcli models`)"]
    assert not any(entry.name in known for entry in embedded())  # they need no download


def test_offline_dataset_download_gives_the_mirror_advice(srcli_home, dead_url, monkeypatch, capsys):
    monkeypatch.setenv("SRCLI_DATASET_MIRROR", dead_url)
    code, err = _run_main(monkeypatch, capsys, "download", "benchmark")
    assert code != 0
    [line] = [line for line in err.splitlines() if line.startswith("error:")]
    assert line.endswith("; offline? set $SRCLI_DATASET_MIRROR or --mirror to a base address that holds its files")
    [row] = [line for line in err.splitlines() if "benchmark" in line and "failed" in line]
    assert row.split("│")[3:5] != ["", ""] and all(cell.strip() == "-" for cell in row.split("│")[3:5])
