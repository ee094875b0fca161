"""Issue #23, engine/weights/training side: option values, memory before work, a batch that outlives one image,
non-finite training, odd weight files. Each test builds the hostile input itself."""

from __future__ import annotations

import inspect
import typing

import pytest
from upscale_helpers import assert_one_error_line, write_image

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
