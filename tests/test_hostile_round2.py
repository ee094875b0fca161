"""Issue #23, engine/weights/training side: option values, memory before work, a batch that outlives one image,
non-finite training, odd weight files. Each test builds the hostile input itself."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
import typing

import pytest
from upscale_helpers import REPO, assert_one_error_line, write_image

from srcli.errors import TrainingError

# --- option values: one line in srcli's words, before any work --------------------------------------------


def _float_options() -> list[tuple[str, str, object]]:
    """(command, parameter, typer option) for every float-typed option of every subcommand."""
    from srcli.cli import app

    found = []
    for info in app.registered_commands:
        hints = typing.get_type_hints(info.callback, include_extras=True)
        for name, parameter in inspect.signature(info.callback).parameters.items():
            hint = hints.get(name)
            annotated = typing.get_origin(hint) is typing.Annotated
            base = typing.get_args(hint)[0] if annotated else hint
            if base in (float, float | None):
                option = typing.get_args(hint)[1] if annotated else parameter.default
                found.append((info.name or info.callback.__name__, name, option))
    return found


def test_every_float_option_is_parsed_as_a_finite_number():
    """The mechanism, not the cases: a float option added later without `finite` fails here."""
    options = _float_options()
    assert {name for _, name, _ in options} >= {"outscale", "lr", "lr_gamma", "clip", "weight_decay", "max_minutes"}
    for command, name, option in options:
        parser = getattr(option, "parser", None)
        assert parser is not None and parser.__qualname__.startswith("finite."), f"{command} --{name}"


@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "1e400"])
def test_a_non_finite_outscale_is_a_usage_error(cli, tmp_path, checkpoint, value):
    source = write_image(tmp_path / "a.png")
    code, _, err = cli("upscale", source, "-w", checkpoint, "--outscale", value)
    line = assert_one_error_line(code, err)
    assert "--outscale" in line and "Error" not in line
    assert not (tmp_path / "a_x2.png").exists()


def test_an_outscale_below_one_is_still_refused(cli, tmp_path, checkpoint):
    code, _, err = cli("upscale", write_image(tmp_path / "a.png"), "-w", checkpoint, "--outscale", "0.5")
    assert "it must be at least 1" in assert_one_error_line(code, err)


@pytest.mark.parametrize("value", ["inf", "1e400", "infG", "nan"])
def test_a_non_finite_max_pixels_is_refused_in_srclis_words(cli, tmp_path, checkpoint, value):
    code, _, err = cli("upscale", write_image(tmp_path / "a.png"), "-w", checkpoint, "--max-pixels", value)
    line = assert_one_error_line(code, err)
    assert "is not a pixel count" in line and "OverflowError" not in line


@pytest.mark.parametrize("flag", ["--lr", "--lr-gamma", "--clip", "--weight-decay", "--max-minutes"])
@pytest.mark.parametrize("value", ["nan", "inf"])
def test_non_finite_training_numbers_are_refused_before_any_work(cli, tmp_path, flag, value):
    code, _, err = cli("train", "--data", tmp_path, "--out", tmp_path / "run", flag, value)
    assert f"'{value}' is not a finite number" in assert_one_error_line(code, err)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("field", ["lr", "lr_gamma", "weight_decay", "max_minutes", "eps"])
def test_the_training_config_refuses_non_finite_numbers_from_the_api_too(field):
    from srcli.training.recipes import make_config

    with pytest.raises(TrainingError, match="must be a finite number"):
        make_config("edsr-baseline", **{field: float("nan")})


def test_train_out_naming_a_file_is_refused_in_srclis_words(cli, tmp_path):
    blocker = tmp_path / "FILE"
    blocker.write_text("x")
    code, _, err = cli("train", "--data", tmp_path, "--out", blocker)
    line = assert_one_error_line(code, err)
    assert "cannot write to --out" in line and "is a file, not a folder" in line and "FileExistsError" not in line


def test_eval_save_dir_naming_a_file_is_refused_before_any_download(cli, tmp_path, srcli_home):
    blocker = tmp_path / "FILE"
    blocker.write_text("x")
    for save_dir in (blocker, blocker / "sub"):
        code, _, err = cli("eval", "set5", "--model", "bicubic", "-s", "2", "--save-dir", save_dir)
        line = assert_one_error_line(code, err)
        assert "cannot write to --save-dir" in line and "NotADirectoryError" not in line
    assert not srcli_home.exists()


# --- memory: the output size is checked before work, and one image running out never stops a batch -------

# Runs a batch of [big, small] in a child whose address space is capped a little above what it already uses,
# so the big image's x60 output (972 MB) cannot be allocated while srcli's own check (free RAM) lets it start.
_CAPPED_BATCH = """
import json, resource, sys
from pathlib import Path
from srcli.batch import Job, run_jobs
from srcli.engine import Upscaler
from srcli.options import UpscaleOptions
from srcli.pipeline import ImagePipeline
from upscale_helpers import blur_edsr
big, small, out = map(Path, sys.argv[1:4])
pipeline = ImagePipeline(Upscaler(blur_edsr(2), 2, UpscaleOptions(device="cpu", backend="torch", outscale=60)))
run_jobs([Job(small, out / "warm.png")], pipeline)  # every lazy import and thread pool started before the cap
size = int(open("/proc/self/status").read().split("VmSize:")[1].split()[0]) * 1024
resource.setrlimit(resource.RLIMIT_AS, (size + 400 * 2**20, resource.RLIM_INFINITY))
results = run_jobs([Job(big, out / "big.png"), Job(small, out / "small.png")], pipeline)
print(json.dumps([(r.status, r.error) for r in results]))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_an_image_that_runs_out_of_memory_fails_alone_and_the_batch_goes_on(tmp_path):
    big = write_image(tmp_path / "big.png", shape=(300, 300, 3))
    small = write_image(tmp_path / "small.png", shape=(8, 8, 3))
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")]),
                   "OMP_NUM_THREADS": "1", "MALLOC_ARENA_MAX": "2"}
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-c", _CAPPED_BATCH, big, small, out], capture_output=True,
                          text=True, env=environment, cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    (big_status, big_error), (small_status, _) = json.loads(done.stdout.strip().splitlines()[-1])
    assert big_status == "failed" and big_error.startswith(f"{big}: out of memory (")
    assert "\n" not in big_error
    assert small_status == "written", done.stdout
    assert sorted(p.name for p in out.iterdir()) == ["small.png", "warm.png"]


@pytest.mark.parametrize("outscale", ["1e6", "1000000"])
def test_an_output_bigger_than_memory_is_refused_before_work_with_its_size(cli, tmp_path, checkpoint, outscale):
    source = write_image(tmp_path / "a.png")
    code, _, err = cli("upscale", source, "-w", checkpoint, "--outscale", outscale, "-o", tmp_path / "out.png")
    line = assert_one_error_line(code, err)
    assert line.startswith(f"error: {source}: its x1e+06 output would be 16000000x12000000 pixels (523.87 TiB); ")
    assert "is available" in line and "OpenCV" not in line and "error: error" not in line
    assert not (tmp_path / "out.png").exists()


def test_one_image_too_large_does_not_stop_the_others(cli, tmp_path, checkpoint):
    """The size check is per image: a 600x800 input at --outscale 3000 fails, a 1x1 one beside it is written."""
    huge = write_image(tmp_path / "in" / "huge.png", shape=(600, 800, 3))
    write_image(tmp_path / "in" / "tiny.png", shape=(1, 1, 3))
    code, _, err = cli("upscale", tmp_path / "in", "-w", checkpoint, "--outscale", "3000", "-o", tmp_path / "out")
    assert code == 1
    assert f"error: {huge}: its x3000 output would be 2400000x1800000 pixels" in err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["tiny_x3000.png"]


def test_a_decoder_error_and_a_write_error_mid_batch_fail_alone(cli, tmp_path, checkpoint):
    """Neighbours: a truncated PNG between two good ones, and a target that turned out to be a folder."""
    folder = tmp_path / "in"
    write_image(folder / "a.png")
    data = write_image(folder / "b.png", shape=(40, 40, 3)).read_bytes()
    (folder / "b.png").write_bytes(data[: len(data) // 2])
    write_image(folder / "c.png")
    write_image(folder / "d.png")
    (tmp_path / "out" / "d_x2.png").mkdir(parents=True)  # --overwrite passes planning; the write then fails
    code, _, err = cli("upscale", folder, "-w", checkpoint, "-o", tmp_path / "out", "--overwrite")
    assert code == 1
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 2 and "b.png" in errors[0] and "d_x2.png" in errors[1], err
    assert sorted(p.name for p in (tmp_path / "out").iterdir() if p.is_file()) == ["a_x2.png", "c_x2.png"]
