"""Habits from the tools users know: a usage error for a Real-ESRGAN flag names srcli's own."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the catalogue imports torch: loaded when a command runs
    from srcli.weights import Weights

_INPUTS = "inputs are arguments: srcli upscale photo.png (files, folders or globs)"

# Real-ESRGAN's inference_realesrgan.py options -> what to type in srcli instead.
FOREIGN_OPTIONS: dict[str, str] = {
    "-i": _INPUTS,
    "--input": _INPUTS,
    "-n": "use --model NAME (srcli models lists them)",
    "--model_name": "use --model NAME (srcli models lists them)",
    "--model_path": "use --weights PATH",
    "-t": "use --tile N",
    "--tile_pad": "use --tile-pad N",
    "-g": "use --device cuda:N",
    "--gpu-id": "use --device cuda:N",
    "--fp32": "use --precision fp32",
    "--half": "use --precision fp16",
    "--ext": "use --format png|jpg|webp|bmp|tif",
    "--face_enhance": "srcli does not restore faces",
}
_SCALE_FLAGS = ("-s", "--scale")


def usage_hint(error: Exception, argv: list[str] | None = None) -> str:
    """What to type instead, for a usage error a user of another tool would make; '' when none applies."""
    option = getattr(error, "option_name", None)
    if option in FOREIGN_OPTIONS:
        return FOREIGN_OPTIONS[option]
    param = getattr(error, "param", None)
    if getattr(param, "name", None) == "scale":
        value = _value_of(_SCALE_FLAGS, sys.argv[1:] if argv is None else argv)
        try:
            final = float(value) if value is not None else None
        except ValueError:
            final = None
        if final is not None and not final.is_integer():
            return f"for a final scale of {final:g} use --outscale {final:g} (--scale is the model's: 2, 3 or 4)"
    return ""


def _value_of(flags: tuple[str, ...], argv: list[str]) -> str | None:
    """The value given to any of `flags` (`-s 3.5`, `--scale=3.5`, `-s3.5`), the last one winning."""
    value = None
    for index, token in enumerate(argv):
        if token in flags and index + 1 < len(argv):
            value = argv[index + 1]
        elif token.startswith("--scale="):
            value = token.split("=", 1)[1]
        elif token.startswith("-s") and not token.startswith("--") and len(token) > 2:
            value = token[2:]
    return value


LOW_JPEG_QUALITY = 90  # below this, 8x8 blocks and ringing are visible enough for a bicubic-trained model to sharpen


def jpeg_note(paths: Iterable[Path], entry: Weights | None, scale: int) -> str:
    """One line for a run whose bicubic-trained model meets a low-quality JPEG (the first found): what it will not
    undo, and which catalogue model or restorer would; '' when none applies. Whether the model is bicubic-trained
    is its catalogue entry's to say; a file without an entry gets no note."""
    from srcli.imageio import jpeg_file_quality
    from srcli.weights.entries import real_world_choices

    if entry is None or not entry.bicubic_trained:
        return ""
    found = next(((path, q) for path in paths if (q := jpeg_file_quality(path)) is not None and q < LOW_JPEG_QUALITY),
                 None)
    if found is None:
        return ""
    model, restorer = real_world_choices("jpeg", scale)
    tries = []
    if model is not None:
        outscale = "" if scale in model.scales else f" --outscale {scale}"
        tries.append(f"--model {model.name}{outscale}")
    if restorer is not None:
        tries.append(f"--pre {restorer.name}")
    advice = f": try {', or '.join(tries)}" if tries else ""
    return (f"{found[0].name} looks like a quality-{found[1]} JPEG; srcli's own models undo bicubic downscaling, "
            f"not JPEG artefacts{advice}")
