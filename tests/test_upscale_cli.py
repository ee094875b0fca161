"""`srcli upscale` end to end: real images, a real (tiny) checkpoint, the real entry point."""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from upscale_helpers import REPO, assert_one_error_line, srcli_command, tiny_checkpoint, write_image

from srcli import weights
from srcli.engine import UpscaleOptions, Upscaler
from srcli.imageio import read_image
from srcli.models import build

_image = write_image


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


# --- the main job ------------------------------------------------------------------------------------------


def test_single_image_matches_the_engine_byte_for_byte(cli, tmp_path, checkpoint):
    source = _image(tmp_path / "photo.png")
    code, out, err = cli("upscale", source, "--weights", checkpoint, "--tile", 0)
    assert code == 0, err
    target = tmp_path / "photo_x2.png"
    engine = Upscaler(weights.resolve(str(checkpoint), 2).model, 2, UpscaleOptions(tile=0, border="reflect"))
    expected_line = f"wrote {target} (16x12 -> 32x24, tiny_x2.pt on cpu fp32 {engine.backend}, "
    assert err.strip() == expected_line + err.split(", ")[-1].strip()
    assert out == ""
    assert np.array_equal(read_image(target), engine.upscale(read_image(source)).image)


def test_scale_comes_from_the_checkpoint(cli, tmp_path):
    checkpoint = tiny_checkpoint(tmp_path / "x3.pt", scale=3)
    code, _, err = cli("upscale", _image(tmp_path / "a.png"), "--weights", checkpoint)
    assert code == 0, err
    assert read_image(tmp_path / "a_x3.png").shape == (36, 48, 3)


def test_output_file_and_format(cli, tmp_path, checkpoint):
    code, _, err = cli(
        "upscale", _image(tmp_path / "a.png"), "-o", tmp_path / "out" / "big.jpg", "-w", checkpoint, "--quality", 90
    )
    assert code == 0, err
    assert _files(tmp_path / "out") == ["big.jpg"]
    assert (tmp_path / "out" / "big.jpg").read_bytes()[:2] == b"\xff\xd8"


def test_folder_with_format_json_and_recursive(cli, tmp_path, checkpoint):
    for index, name in enumerate(["a.png", "b.jpg", "sub/c.bmp"]):
        _image(tmp_path / "in" / name, index)
    code, out, err = cli(
        "upscale", tmp_path / "in", "-r", "-o", tmp_path / "out", "-w", checkpoint, "--format", "webp", "--json"
    )
    assert code == 0, err
    assert _files(tmp_path / "out") == ["a_x2.webp", "b_x2.webp", "sub", "sub/c_x2.webp"]
    report = json.loads(out)
    assert (report["written"], report["failed"], report["scale"]) == (3, 0, 2)
    assert report["megapixels_in"] == pytest.approx(3 * 12 * 16 / 1e6)
    assert report["megapixels_out"] == pytest.approx(4 * 3 * 12 * 16 / 1e6)
    assert [r["output_size"] for r in report["images"]] == [[32, 24]] * 3
    assert "upscale summary" in err


def test_grey_sixteen_bit_and_alpha_keep_their_kind(cli, tmp_path, checkpoint):
    _image(tmp_path / "in" / "grey.png", 1, (12, 16))
    _image(tmp_path / "in" / "deep.png", 2, (12, 16, 3), np.uint16)
    alpha = np.random.default_rng(3).integers(0, 256, (12, 16, 4), dtype=np.uint8)
    alpha[:, :8, 3] = 0
    cv2.imwrite(str(tmp_path / "in" / "alpha.png"), alpha)
    code, _, err = cli("upscale", tmp_path / "in", "-w", checkpoint)
    assert code == 0, err
    out = tmp_path / "in_x2"
    grey = cv2.imread(str(out / "grey_x2.png"), cv2.IMREAD_UNCHANGED)
    deep = cv2.imread(str(out / "deep_x2.png"), cv2.IMREAD_UNCHANGED)
    transparent = cv2.imread(str(out / "alpha_x2.png"), cv2.IMREAD_UNCHANGED)
    assert (grey.shape, grey.dtype) == ((24, 32), np.uint8)
    assert (deep.shape, deep.dtype) == ((24, 32, 3), np.uint16)
    assert (transparent.shape, transparent.dtype) == ((24, 32, 4), np.uint8)


def test_exif_orientation_is_applied(cli, tmp_path, checkpoint):
    jpeg = cv2.imencode(".jpg", np.zeros((12, 16, 3), np.uint8))[1].tobytes()
    tiff = b"II" + struct.pack("<HIH", 42, 8, 1) + struct.pack("<HHIHH", 0x0112, 3, 1, 6, 0) + b"\0\0\0\0"
    body = b"Exif\0\0" + tiff
    (tmp_path / "phone.jpg").write_bytes(jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(body) + 2) + body + jpeg[2:])
    code, _, err = cli("upscale", tmp_path / "phone.jpg", "-w", checkpoint)
    assert code == 0, err
    assert cv2.imread(str(tmp_path / "phone_x2.jpg")).shape == (32, 24, 3)  # upright: portrait


def test_existing_output_refused_then_skipped_then_overwritten(cli, tmp_path, checkpoint):
    source = _image(tmp_path / "a.png")
    (tmp_path / "a_x2.png").write_bytes(b"precious")
    code, _, err = cli("upscale", source, "-w", checkpoint)
    assert "already exists: pass --skip-existing or --overwrite" in assert_one_error_line(code, err)
    code, out, err = cli("upscale", source, "-w", checkpoint, "--skip-existing", "--json")
    assert code == 0 and json.loads(out)["skipped"] == 1 and "skipped" in err
    assert (tmp_path / "a_x2.png").read_bytes() == b"precious"
    code, _, err = cli("upscale", source, "-w", checkpoint, "--overwrite")
    assert code == 0, err
    assert read_image(tmp_path / "a_x2.png").shape == (24, 32, 3)


def test_input_never_overwritten(cli, tmp_path, checkpoint):
    source = _image(tmp_path / "a.png")
    before = source.read_bytes()
    code, _, err = cli("upscale", source, "-o", source, "-w", checkpoint, "--overwrite")
    assert "never overwrites its inputs" in assert_one_error_line(code, err)
    assert source.read_bytes() == before


def test_one_bad_image_does_not_stop_the_batch(cli, tmp_path, checkpoint):
    _image(tmp_path / "in" / "a.png")
    (tmp_path / "in" / "b.png").write_text("text, not pixels")
    _image(tmp_path / "in" / "c.png", 1)
    code, out, err = cli("upscale", tmp_path / "in", "-w", checkpoint, "--json")
    assert code == 1
    report = json.loads(out)
    assert [r["status"] for r in report["images"]] == ["written", "failed", "written"]
    assert _files(tmp_path / "in_x2") == ["a_x2.png", "c_x2.png"]
    assert "b.png: not a readable image" in err and "Traceback" not in err


def test_no_model_says_how_to_get_one(cli, tmp_path, monkeypatch):
    monkeypatch.setattr(weights.entries, "embedded", lambda: [])  # an install without its embedded models
    code, _, err = cli("upscale", _image(tmp_path / "a.png"))
    line = assert_one_error_line(code, err)
    assert "--weights PATH" in line and "--model NAME" in line
    assert _files(tmp_path) == ["a.png"]


# --- bad input: one line, non-zero exit, no traceback, nothing written --------------------------------------


def _bad_input(cli, tmp_path: Path, source: Path, *extra) -> str:
    before = _files(tmp_path)
    code, out, err = cli("upscale", source, "-o", tmp_path / "out", *extra)
    line = assert_one_error_line(code, err)
    assert out == ""
    assert _files(tmp_path) == before  # nothing written, not even the output folder
    return line


def test_bad_missing_file(cli, tmp_path, checkpoint):
    assert "nope.png: no such file" in _bad_input(cli, tmp_path, tmp_path / "nope.png", "-w", checkpoint)


def test_bad_empty_file(cli, tmp_path, checkpoint):
    (tmp_path / "empty.png").write_bytes(b"")
    assert "empty file" in _bad_input(cli, tmp_path, tmp_path / "empty.png", "-w", checkpoint)


def test_bad_text_file_named_png(cli, tmp_path, checkpoint):
    (tmp_path / "notes.png").write_text("hello\n")
    assert "not a readable image" in _bad_input(cli, tmp_path, tmp_path / "notes.png", "-w", checkpoint)


def test_bad_truncated_png(cli, tmp_path, checkpoint):
    data = cv2.imencode(".png", np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8))[1].tobytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    assert "truncated PNG" in _bad_input(cli, tmp_path, tmp_path / "cut.png", "-w", checkpoint)


def test_bad_over_the_pixel_limit_and_raising_it(cli, tmp_path, checkpoint):
    source = _image(tmp_path / "a.png")
    line = _bad_input(cli, tmp_path, source, "-w", checkpoint, "--max-pixels", "100")
    assert "over the 0.0001 MP limit (raise it with --max-pixels)" in line
    code, _, err = cli("upscale", source, "-o", tmp_path / "out", "-w", checkpoint, "--max-pixels", "0.0002M")
    assert code == 0, err
    assert _files(tmp_path / "out") == ["a_x2.png"]


def test_bad_scale_the_model_lacks(cli, tmp_path, checkpoint):
    line = _bad_input(cli, tmp_path, _image(tmp_path / "a.png"), "-w", checkpoint, "--scale", "3")
    assert "x3" in line


def test_bad_checkpoint_of_unknown_architecture(cli, tmp_path):
    torch.save({"encoder.weight": torch.zeros(4, 3, 3, 3)}, tmp_path / "other.pt")
    line = _bad_input(cli, tmp_path, _image(tmp_path / "a.png"), "-w", tmp_path / "other.pt")
    assert "unknown architecture" in line


def test_bad_corrupted_checkpoint(cli, tmp_path):
    torch.save(build("edsr", blocks=1, features=8, scale=2).state_dict(), tmp_path / "whole.pt")
    data = (tmp_path / "whole.pt").read_bytes()
    (tmp_path / "broken.pt").write_bytes(data[: len(data) // 2])
    (tmp_path / "whole.pt").unlink()
    line = _bad_input(cli, tmp_path, _image(tmp_path / "a.png"), "-w", tmp_path / "broken.pt")
    assert "broken.pt" in line


def test_bad_output_folder_that_cannot_be_written(cli, tmp_path, checkpoint):
    (tmp_path / "blocker").write_text("a file where a folder should be")
    before = _files(tmp_path)
    code, _, err = cli("upscale", _image(tmp_path / "a.png"), "-o", tmp_path / "blocker" / "out", "-w", checkpoint)
    assert "blocker is a file, not a folder" in assert_one_error_line(code, err)
    assert _files(tmp_path) == sorted([*before, "a.png"])


def test_bad_option_values_are_one_line(cli, tmp_path, checkpoint):
    code, _, err = cli("upscale", _image(tmp_path / "a.png"), "-w", checkpoint, "--max-pixels", "lots")
    assert "not a pixel count" in assert_one_error_line(code, err)
    code, _, err = cli("upscale", tmp_path / "a.png", "-w", checkpoint, "--skip-existing", "--overwrite")
    assert "contradict" in assert_one_error_line(code, err)


# --- real processes ----------------------------------------------------------------------------------------


def test_ctrl_c_leaves_no_partial_file_and_exits_130(tmp_path):
    """SIGINT mid-batch: exit 130, and every file in the output folder is a complete image."""
    torch.manual_seed(0)
    torch.save(build("edsr", blocks=4, features=32, scale=2).state_dict(), tmp_path / "slow.pt")
    for index in range(6):
        _image(tmp_path / "in" / f"{index}.png", index, (320, 320, 3))
    process = subprocess.Popen(
        srcli_command("upscale", tmp_path / "in", "-o", tmp_path / "out", "-w", tmp_path / "slow.pt", "--tile", 0),
        cwd=REPO,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # a background runner may ignore it
    )
    header = process.stderr.readline()  # printed once the model is loaded, before the first image
    assert header.startswith("upscaling 6 image(s) x2")
    process.send_signal(signal.SIGINT)
    rest = process.stderr.read()
    assert process.wait(timeout=120) == 130, rest
    assert "Traceback" not in rest
    assert "Run the same command with --skip-existing to do the rest" in rest
    written = _files(tmp_path / "out")
    assert len(written) < 6 and not any(name.endswith(".part") for name in written)
    for name in written:
        assert cv2.imread(str(tmp_path / "out" / name)).shape == (640, 640, 3)


def test_finite_weights_that_overflow_fail_the_image_instead_of_writing_black(cli, tmp_path):
    """Weights that pass the load check but drive activations past fp32's range: a failed image, no file."""
    torch.manual_seed(0)
    model = build("edsr", blocks=1, features=8, scale=2)
    with torch.no_grad():
        model.head[0].weight.fill_(1e36)  # finite, but 1e36 x 255 x 27 taps is beyond fp32's 3.4e38
    checkpoint = tmp_path / "overflow_x2.pt"
    torch.save(model.state_dict(), checkpoint)
    source = _image(tmp_path / "a.png")
    code, _, err = cli("upscale", source, "--weights", checkpoint)
    line = assert_one_error_line(code, err)
    assert str(source) in line and "NaN or infinite" in line
    assert _files(tmp_path) == ["a.png", "overflow_x2.pt"]


# --- progress a person can follow -----------------------------------------------------------------------------


def test_headless_batch_prints_a_line_per_image_and_where_the_outputs_went(cli, tmp_path, checkpoint):
    _image(tmp_path / "in" / "a.png")
    _image(tmp_path / "in" / "b.png", 1)
    code, _, err = cli("upscale", tmp_path / "in", "-w", checkpoint, "-o", tmp_path / "out")
    assert code == 0, err
    lines = err.splitlines()
    for name in ("a", "b"):
        [line] = [line for line in lines if line.startswith(str(tmp_path / "in" / f"{name}.png"))]
        assert line.startswith(f"{tmp_path / 'in' / name}.png -> {tmp_path / 'out' / name}_x2.png (16x12 -> 32x24, ")
        assert line.endswith(" s)")
    assert lines[-1] == f"outputs in {tmp_path / 'out'}{os.sep}"


def test_the_progress_bar_shows_an_eta():
    from rich.progress import TimeRemainingColumn

    from srcli.cli.upscale_view import progress_bars as _progress

    assert any(isinstance(column, TimeRemainingColumn) for column in _progress(3).columns)
