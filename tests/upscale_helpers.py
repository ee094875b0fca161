"""Small real models and a CLI runner shared by the upscale tests (imported, not collected)."""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from srcli.models import build

REPO = Path(__file__).resolve().parent.parent


def write_image(path: Path, seed: int = 0, shape: tuple[int, ...] = (12, 16, 3), dtype=np.uint8) -> Path:
    """A random image written by OpenCV (independently of srcli's writer), creating folders as needed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    peak = np.iinfo(dtype).max
    assert cv2.imwrite(str(path), np.random.default_rng(seed).integers(0, peak + 1, shape, dtype=dtype))
    return path


def srcli_command(*arguments: object) -> list[str]:
    """`python -m srcli ARGUMENTS...` for a real child process (run it with cwd=REPO)."""
    return [sys.executable, "-m", "srcli", *map(str, arguments)]


def tiny_checkpoint(path: Path, scale: int = 2) -> Path:
    """A real, untrained one-block EDSR state dict: loads through detection like any user file."""
    torch.manual_seed(0)
    torch.save(build("edsr", blocks=1, features=8, scale=scale).state_dict(), path)
    return path


def blur_edsr(scale: int = 2) -> torch.nn.Module:
    """An EDSR whose weights make it a known upscaler: 3x3 blur, then nearest-neighbour x`scale`.

    Unlike random weights it behaves like a real one (colours stay colours, neighbours mix), so the
    pipeline's grey, alpha and 16-bit handling can be checked against exact expectations.
    """
    model = build("edsr", blocks=1, features=3, scale=scale)
    blur = torch.tensor([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]]) / 16
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.zero_()
        for channel in range(3):
            model.head[0].weight[channel, channel] = blur
            model.tail[1].weight[channel, channel, 1, 1] = 1.0
        convs = [layer for layer in model.tail[0] if isinstance(layer, torch.nn.Conv2d)]
        for conv in convs:
            factor = round((conv.out_channels // 3) ** 0.5)
            for channel in range(3):
                conv.weight[channel * factor * factor : (channel + 1) * factor * factor, channel, 1, 1] = 1.0
    return model.eval()


def run_cli(argv: list[str], capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> tuple[int, str, str]:
    """Run `srcli ARGV` in-process through the real entry point; returns (exit code, stdout, stderr)."""
    from srcli.cli import main

    monkeypatch.setattr(sys, "argv", ["srcli", *argv])
    try:
        main()
        code = 0
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_error_line(code: int, err: str) -> str:
    """The bad-input contract: non-zero exit, exactly one line on stderr, no traceback."""
    lines = err.strip().splitlines()
    assert code != 0
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    assert "Traceback" not in err
    return lines[0]
