"""Typed errors: one class per failure a user can cause.

The core raises these and never prints or exits; the CLI turns each into one line and a non-zero exit.
"""

from __future__ import annotations

import unicodedata

# Bidirectional overrides and isolates: shown raw they reorder the rest of the line (a name can look like another).
_BIDI = frozenset("\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def printable(text: object) -> str:
    """`text` (a path, a message) safe to show on one terminal line: control characters, line separators,
    bidi overrides and undecodable bytes (surrogate escapes) become backslash escapes; all else is kept.

    Idempotent (backslashes are not escaped), so a message built from escaped parts can be escaped again.
    """
    text = str(text)
    if text.isprintable():
        return text
    return "".join(_escape(char) for char in text)


def _escape(char: str) -> str:
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:  # a byte os.fsdecode could not decode
        return f"\\x{code - 0xDC00:02x}"
    if unicodedata.category(char) in ("Cc", "Cs", "Zl", "Zp") or char in _BIDI:
        return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
    return char


class SrcliError(Exception):
    """Base class for every failure the user can fix; the message is the one line shown.

    The message is made printable (see `printable`) here, once for every error, so a file name holding a
    newline or an escape sequence can neither split the line nor drive the terminal.
    """

    exit_code = 2

    def __init__(self, *args: object) -> None:
        if len(args) == 1 and isinstance(args[0], str):
            args = (printable(args[0]),)
        super().__init__(*args)


class InputImageError(SrcliError):
    """An input image is missing, empty, unreadable, truncated or too large."""


class OutputError(SrcliError):
    """An output path cannot be written, or writing would overwrite an input."""


class OutputExistsError(OutputError):
    """An output that was free when the batch was planned exists when it is written (another process)."""


class CheckpointError(SrcliError):
    """A weights file is corrupt, of an unknown architecture, or fails its checksum."""


class UnknownArchitectureError(CheckpointError):
    """A weights file whose tensors match no known architecture."""


class UnknownModelError(SrcliError):
    """A model name is not in the catalogue."""


class ScaleError(SrcliError):
    """The requested scale is one the model cannot produce."""


class DownloadError(SrcliError):
    """A download failed: network, HTTP status, or checksum mismatch."""


class DatasetError(SrcliError):
    """A dataset is unknown, missing, or laid out wrongly."""


class TrainingError(SrcliError):
    """A training configuration or its data makes no sense."""


class DeviceError(SrcliError):
    """The asked-for device or precision is unavailable, or memory is short even for the smallest tile."""


class OutputTooLargeError(SrcliError):
    """An image's output (at --scale / --outscale) would not fit in memory: refused before any work."""


class NonFiniteOutputError(SrcliError):
    """A network's output holds NaN or Inf even in fp32: writing it would give a black or white image."""


class BackendError(SrcliError):
    """The asked-for inference backend is not installed, or cannot run on the chosen device."""
