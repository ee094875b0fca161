"""Issue #10, CLI and model side: markup in names, two processes on one output, damaged weights, wording."""

from __future__ import annotations

from pathlib import Path

import pytest
from upscale_helpers import assert_one_error_line, run_cli, tiny_checkpoint, write_image


@pytest.fixture
def cli(capsys, monkeypatch):
    return lambda *argv: run_cli([str(a) for a in argv], capsys, monkeypatch)


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    return tiny_checkpoint(tmp_path / "tiny_x2.pt")


# --- 4. file names are text, never rich markup -------------------------------------------------------------


def test_brackets_in_a_file_name_are_printed_as_they_are(cli, tmp_path, checkpoint):
    source = write_image(tmp_path / "holiday [draft].png")
    code, _, err = cli("upscale", source, "-w", checkpoint)
    assert code == 0, err
    assert f"wrote {tmp_path / 'holiday [draft]_x2.png'} (16x12 -> 32x24" in err
    (tmp_path / "notes [v2].png").write_text("not an image\n")
    code, _, err = cli("upscale", tmp_path / "notes [v2].png", "-w", checkpoint)
    assert "notes [v2].png: not a readable image" in assert_one_error_line(code, err)


def test_a_closing_tag_in_a_path_cannot_break_the_batch(cli, tmp_path, checkpoint):
    """`a[/i]b.png` (folder `a[`, file `i]b.png`) crashed rich with a MarkupError and lost the summary."""
    good = write_image(tmp_path / "good.png")
    (tmp_path / "a[").mkdir()
    (tmp_path / "a[" / "i]b.png").write_text("not an image\n")
    code, _, err = cli("upscale", good, tmp_path / "a[/i]b.png", "-o", tmp_path / "out", "-w", checkpoint)
    assert code == 1
    assert "Traceback" not in err and "MarkupError" not in err
    assert f"error: {tmp_path / 'a[/i]b.png'}: not a readable image" in err
    assert "upscale summary" in err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["good_x2.png"]


def test_usage_errors_quoting_markup_are_printed_whole(cli, tmp_path, checkpoint):
    code, _, err = cli("upscale", write_image(tmp_path / "a.png"), "-w", checkpoint, "--device", "[bold]x[/bold]")
    assert "[bold]x[/bold]" in assert_one_error_line(code, err)
