"""What a model undoes: the JPEG quality estimate and the one-line note a bicubic-trained model's run prints for
low-quality JPEG inputs."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from srcli.imageio import jpeg_file_quality, jpeg_quality


def _photo(seed: int = 0, shape: tuple[int, int] = (40, 48)) -> np.ndarray:
    """Smooth content with some texture, as a photo: quality changes its tables, never the estimate's input."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0 : shape[0], 0 : shape[1]]
    base = 128 + 60 * np.sin(x / 5.0)[..., None] * np.cos(y / 7.0)[..., None]
    return np.clip(base + rng.normal(0, 12, (*shape, 3)), 0, 255).astype(np.uint8)


def _jpeg(path: Path, quality: int, seed: int = 0) -> Path:
    ok, data = cv2.imencode(".jpg", _photo(seed), [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    path.write_bytes(data.tobytes())
    return path


@pytest.mark.parametrize("quality", [30, 50, 75, 90, 95])
def test_quality_estimate_matches_what_opencv_was_asked_for(quality):
    ok, data = cv2.imencode(".jpg", _photo(), [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    assert abs(jpeg_quality(data.tobytes()) - quality) <= 3


def test_quality_is_none_for_what_is_not_a_jpeg_with_tables(tmp_path):
    _, png = cv2.imencode(".png", _photo())
    assert jpeg_quality(png.tobytes()) is None
    assert jpeg_quality(b"\xff\xd8\xff\xd9") is None  # no DQT segment
    assert jpeg_file_quality(tmp_path / "absent.jpg") is None
    assert jpeg_file_quality(_jpeg(tmp_path / "a.jpg", 42)) == 42


def _notes(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("note:")]


def test_a_batch_of_low_quality_jpegs_gets_one_note_naming_a_real_world_model_and_pre(tmp_path, cli):
    folder = tmp_path / "photos"
    folder.mkdir()
    _jpeg(folder / "a.jpg", 30, seed=1)
    _jpeg(folder / "b.jpg", 30, seed=2)
    code, _, err = cli("upscale", folder, "--scale", "2")
    assert code == 0, err
    [note] = _notes(err)
    assert "a.jpg looks like a quality-30 JPEG" in note and "undo bicubic downscaling" in note
    assert "--model realesrgan-x2plus" in note and "--pre dejpg-realplksr-1x" in note


def test_the_note_names_the_smallest_real_world_model_at_the_run_s_scale(tmp_path, cli):
    code, _, err = cli("upscale", _jpeg(tmp_path / "p.jpg", 40), "--scale", "4")
    assert code == 0, err
    [note] = _notes(err)
    assert "quality-40" in note and "--model realesr-general-x4v3," in note


@pytest.mark.parametrize("name", ["fine.jpg", "lossless.png"])
def test_no_note_for_a_high_quality_jpeg_or_a_png(tmp_path, cli, name):
    source = tmp_path / name
    if name.endswith(".jpg"):
        _jpeg(source, 95)
    else:
        cv2.imwrite(str(source), _photo())
    code, _, err = cli("upscale", source, "--scale", "2")
    assert code == 0, err
    assert _notes(err) == []


def test_no_note_for_a_model_the_catalogue_does_not_call_bicubic_trained(tmp_path, cli, checkpoint):
    code, _, err = cli("upscale", _jpeg(tmp_path / "p.jpg", 30), "--weights", checkpoint)
    assert code == 0, err
    assert _notes(err) == []
    code, _, err = cli("upscale", _jpeg(tmp_path / "q.jpg", 30), "--model", "bicubic", "--scale", "2")
    assert code == 0, err
    assert _notes(err) == []


def test_what_an_embedded_model_undoes_is_its_manifest_s_to_say(tmp_path, checkpoint):
    from srcli import weights

    bicubic = weights.embed(checkpoint, "mine-bicubic", tmp_path)
    real = weights.embed(checkpoint, "mine-real", tmp_path, degradation="real")
    assert bicubic.bicubic_trained and not real.bicubic_trained
    assert {e.name: e.degradation for e in weights.read_manifest(tmp_path)} == {"mine-bicubic": "bicubic",
                                                                              "mine-real": "real"}


def test_the_quality_look_never_blocks_on_a_fifo(tmp_path):
    import os

    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    assert jpeg_file_quality(fifo) is None  # returns at once: no writer is ever attached
