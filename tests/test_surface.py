"""What a newcomer meets first: output names that do not clash, mistakes caught before torch loads, honest help."""

from __future__ import annotations

import os
import subprocess

import pytest
from upscale_helpers import REPO, assert_one_error_line, srcli_command, write_image

from srcli.batch import collect_inputs, output_suffix, plan_jobs
from srcli.errors import OutputError


@pytest.fixture(scope="module")
def torchless_env(tmp_path_factory) -> dict[str, str]:
    """`import torch` raises here: a command that reaches it fails with that message instead of its own."""
    folder = tmp_path_factory.mktemp("no-torch")
    (folder / "torch").mkdir()
    (folder / "torch" / "__init__.py").write_text('raise ImportError("torch imported before the check")\n')
    return dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(folder), os.environ.get("PYTHONPATH")])))


def _run(env: dict[str, str], *arguments: object) -> subprocess.CompletedProcess:
    return subprocess.run(srcli_command(*arguments), cwd=REPO, env=env, capture_output=True, text=True, check=False)


# --- output names --------------------------------------------------------------------------------------------


def test_default_names_say_what_made_them_when_it_is_not_the_default():
    assert output_suffix(None, "4", "edsr-baseline", True, False) == "x4"
    assert output_suffix(None, "4", "bicubic", False, False) == "x4_bicubic"
    assert output_suffix(None, "4", "edsr-baseline", True, True) == "x4_ensemble"
    assert output_suffix(None, "2.5", "bicubic", False, True) == "x2.5_bicubic_ensemble"


def test_suffix_template_fields():
    assert output_suffix("{model}_x{scale}", "3", "mdsr", True, False) == "mdsr_x3"
    assert output_suffix("{model}_{ensemble}", "3", "mdsr", True, False) == "mdsr"  # no dangling separator
    assert output_suffix("{model}_{ensemble}", "3", "mdsr", True, True) == "mdsr_ensemble"
    assert output_suffix("big", "3", "mdsr", False, True) == "big"  # a plain suffix is taken as written
    with pytest.raises(OutputError, match=r"unknown field \{modle\} \(use \{model\}, \{scale\}, \{ensemble\}\)"):
        output_suffix("{modle}", "3", "mdsr", True, False)


@pytest.mark.parametrize("suffix", ["/../../escaped", "../x", "/etc/x", "a\\b"])
def test_a_suffix_with_a_path_separator_is_refused(tmp_path, suffix):
    found, _ = collect_inputs([str(write_image(tmp_path / "a.png"))])
    with pytest.raises(OutputError, match="holds a path separator"):
        plan_jobs(found, None, "2", suffix=suffix)
    with pytest.raises(OutputError, match="holds a path separator"):
        output_suffix(suffix, "2", "m", True, False)


def test_default_bicubic_and_ensemble_leave_three_files(cli, tmp_path):
    source = write_image(tmp_path / "photo.png")
    for extra in ((), ("--model", "bicubic"), ("--ensemble",)):
        code, _, err = cli("upscale", source, "--scale", 2, *extra)
        assert code == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "photo.png", "photo_x2.png", "photo_x2_bicubic.png", "photo_x2_ensemble.png"]
    assert "--ensemble" in err.splitlines()[0]  # the wrote line says the ensemble made it


# --- mistakes are caught before torch loads ------------------------------------------------------------------


def test_a_missing_input_is_one_line_before_torch(torchless_env, tmp_path):
    run = _run(torchless_env, "upscale", tmp_path / "nope.png")
    assert run.returncode == 1
    assert run.stderr.strip() == f"error: {tmp_path / 'nope.png'}: no such file"


@pytest.mark.parametrize("suffix", ["/../../escaped", "../x", "/etc/x"])
def test_an_escaping_suffix_is_one_line_before_torch(torchless_env, tmp_path, suffix):
    run = _run(torchless_env, "upscale", write_image(tmp_path / "a.png"), "--suffix", suffix)
    assert run.returncode == 2, run.stderr
    assert "holds a path separator" in assert_one_error_line(run.returncode, run.stderr)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]



# --- help that says what to type -----------------------------------------------------------------------------

COMMANDS = ("upscale", "compare", "eval", "train", "models", "download")


def _help(env: dict[str, str], *arguments: str) -> str:
    run = _run(dict(env, COLUMNS="80"), *arguments)
    assert run.returncode == 0, run.stderr
    return run.stdout


def test_short_help_and_version(torchless_env):
    assert "Usage: " in _help(torchless_env, "-h")
    assert "Usage: " in _help(torchless_env, "upscale", "-h")
    assert _help(torchless_env, "-V").startswith("srcli ")


@pytest.mark.parametrize("command", COMMANDS)
def test_help_shows_no_bool_or_list_metavars_and_examples_fit_80_columns(torchless_env, command):
    text = _help(torchless_env, command, "--help")
    assert "<bool>" not in text and "<list[" not in text
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip().rstrip(":") == "Examples"), None)
    if start is None:
        return
    end = next(i for i in range(start, len(lines)) if lines[i].startswith("╭"))
    for line in lines[start + 1 : end]:
        assert not line.strip() or line.startswith("   "), f"an example wraps at 80 columns: {line!r}"


def test_scale_lists_its_choices(torchless_env):
    text = _help(torchless_env, "upscale", "--help")
    row = next(line for line in text.splitlines() if line.startswith("│ --scale"))
    assert "2|3|4" in row and "<int range>" not in row and "x>=1" not in row


def test_debug_is_accepted_after_the_subcommand(torchless_env, tmp_path):
    run = _run(torchless_env, "upscale", tmp_path / "nope.png", "--debug")
    assert run.returncode == 1 and "No such option" not in run.stderr
    assert run.stderr.strip() == f"error: {tmp_path / 'nope.png'}: no such file"


def test_a_value_after_a_flag_is_named_not_read_as_an_input(torchless_env, tmp_path):
    run = _run(torchless_env, "upscale", write_image(tmp_path / "a.png"), "--ensemble", "true")
    line = assert_one_error_line(run.returncode, run.stderr)
    assert "'true' is not an input: flags such as --ensemble" in line


# --- the API speaks API --------------------------------------------------------------------------------------


def test_api_scale_errors_name_api_arguments():
    import numpy as np

    import srcli
    from srcli.errors import ScaleError

    image = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(ScaleError, match=r"use scale=4, outscale=8 ") as raised:
        srcli.upscale(image, scale=8)
    assert "--" not in str(raised.value)
    with pytest.raises(ScaleError, match=r"scale=1 is no upscale") as raised:
        srcli.upscale(image, scale=1)
    assert "--" not in str(raised.value)


def test_api_array_errors_say_what_to_do():
    import numpy as np

    import srcli
    from srcli.errors import InputImageError

    with pytest.raises(TypeError, match=r"not int64: for 0\.\.255 values pass image\.astype\(np\.uint8\)"):
        srcli.upscale(np.zeros((8, 8, 3), np.int64), scale=2, model="bicubic")
    with pytest.raises(InputImageError, match=r"looks channels-first .* image\.transpose\(1, 2, 0\)"):
        srcli.upscale(np.zeros((3, 8, 8), np.uint8), scale=2, model="bicubic")
    with pytest.raises(InputImageError, match=r"shape \(0, 0, 3\)"):
        srcli.upscale(np.zeros((0, 0, 3), np.uint8), scale=2, model="bicubic")
    grey = np.arange(64, dtype=np.uint8).reshape(8, 8, 1)
    out = srcli.upscale(grey, scale=2, model="bicubic")
    assert out.shape == (16, 16, 1)
    assert np.array_equal(out[:, :, 0], srcli.upscale(grey[:, :, 0], scale=2, model="bicubic"))


def test_json_output_scale_is_a_number_and_bicubic_names_no_engine(cli, tmp_path):
    import json

    source = write_image(tmp_path / "a.png")
    code, out, err = cli("upscale", source, "--model", "bicubic", "--scale", 2, "--json")
    assert code == 0, err
    assert json.loads(out)["output_scale"] == 2
    assert err.startswith(f"wrote {tmp_path / 'a_x2_bicubic.png'} (16x12 -> 32x24, bicubic, ")
    assert " on cpu" not in err


def test_a_large_image_gets_a_start_line_in_logs(cli, tmp_path):
    import numpy as np

    from srcli.imageio import write_image as save

    big = tmp_path / "big.png"
    save(big, np.zeros((1000, 1000, 3), np.uint8))
    code, _, err = cli("upscale", big, "--model", "bicubic", "--scale", 2, "--tile", 256)
    assert code == 0, err
    lines = err.strip().splitlines()
    assert lines[0] == f"upscaling {big} (1000x1000, x2 model)..."
    assert lines[1].startswith(f"wrote {tmp_path / 'big_x2_bicubic.png'} (1000x1000 -> 2000x2000")


def test_verbose_says_the_plan_before_the_work(cli, tmp_path):
    source = write_image(tmp_path / "a.png")
    code, _, err = cli("upscale", source, "--model", "bicubic", "--scale", 2, "-v", "--backend", "torch")
    assert code == 0, err
    lines = err.strip().splitlines()
    assert lines[0] == f"{source}: x2 on cpu fp32 torch, tile auto..."
    assert lines[1].startswith("wrote ") and lines[2].startswith("engine: ")


def test_data_dir_may_be_the_sets_own_folder(benchmark_dir):
    from srcli.datasets import dataset_spec, open_dataset

    spec = dataset_spec("set5")
    folder = next(p for p in (benchmark_dir / "Set5", benchmark_dir / "benchmark" / "Set5") if p.is_dir())
    by_own = open_dataset(spec, folder)
    by_parent = open_dataset(spec, folder.parent)
    assert by_own.hr_paths == by_parent.hr_paths and len(by_own.hr_paths) == 5


def test_eval_paper_column_takes_srclis_own_models_from_the_catalogue(cli, benchmark_dir):
    import json

    from srcli.weights import catalogue, default_model

    code, out, err = cli("eval", "set5", "--scale", 2, "--data-dir", benchmark_dir, "--json")
    assert code == 0, err
    [result] = json.loads(out)["results"]
    entry = catalogue()[default_model(2)]
    assert result["reference"]["column"] == "srcli"
    assert result["reference"]["psnr"] == entry.psnr("Set5", 2)
    assert abs(result["psnr"] - entry.psnr("Set5", 2)) < 0.01  # the catalogue holds what eval measures


def test_a_read_only_file_system_is_named_as_such(tmp_path, monkeypatch):
    """No read-only mount can be made in a test: the two system answers it turns on are given instead."""
    import srcli.batch as batch

    found, _ = collect_inputs([str(write_image(tmp_path / "a.png"))])
    statvfs = os.statvfs(tmp_path)

    class ReadOnly:
        f_flag = statvfs.f_flag | os.ST_RDONLY

    monkeypatch.setattr(batch.os, "access", lambda path, mode: False)
    monkeypatch.setattr(batch.os, "statvfs", lambda path: ReadOnly())
    with pytest.raises(OutputError, match=r"is on a read-only file system \(choose another -o\)"):
        plan_jobs(found, tmp_path / "out", "2")
    monkeypatch.setattr(batch.os, "statvfs", lambda path: statvfs)
    with pytest.raises(OutputError, match="no permission to write in"):
        plan_jobs(found, tmp_path / "out", "2")
