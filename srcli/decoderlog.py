"""What image decoders print, kept off the terminal and read back, so that warnings meaning "these pixels
are wrong" can refuse the image.

libjpeg (and libpng) print warnings straight to file descriptor 2, past Python and OpenCV's log level, and
then carry on: a JPEG cut in half with an end-of-image marker appended decodes "fine" with its lower half
grey, and the only sign is "Premature end of JPEG file" on stderr. So while a decoder runs, descriptor 2
points at an unlinked temp file, and what was written during the decode is returned to the caller.

Descriptor 2 is one per process while decodes run on several threads (training data): a decode sees
only what was written while it ran, and when another decode overlapped it, chatter cannot be pinned on
either, so a decode that saw some is run again alone (new decodes wait meanwhile) before anything is
refused. Innocent images never pay more than that rerun, and only when a neighbour complained.
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

# Warnings after which the decoded pixels are not the image's: data ran out or could not be decoded, and the
# decoder filled the rest. Harmless ones ("1 extraneous bytes before marker 0xdb", libpng's "Too much image
# data") are not listed: the image decodes in full.
DATA_LOSS = (
    "Premature end of JPEG file",
    "Corrupt JPEG data: premature end of data segment",
    "Corrupt JPEG data: bad Huffman code",
    "Corrupt JPEG data: bad arithmetic code",
    "Corrupt JPEG data: found marker",
)


class _Capture:
    """Shared state of descriptor 2's redirection: counted users, and an exclusive mode for reruns."""

    def __init__(self) -> None:
        self.condition = threading.Condition()
        self.users = 0
        self.started = 0
        self.exclusive = False
        self.saved: int | None = None
        self.log: int | None = None

    def redirect(self) -> None:
        try:
            self.saved = os.dup(2)
        except OSError:  # no descriptor 2 (a detached process): nothing to capture
            self.saved = self.log = None
            return
        handle, name = tempfile.mkstemp(prefix="srcli-decoder-")
        os.unlink(name)
        os.dup2(handle, 2)
        self.log = handle

    def restore(self) -> None:
        if self.saved is not None:
            os.dup2(self.saved, 2)
            os.close(self.saved)
        if self.log is not None:
            os.close(self.log)
        self.saved = self.log = None

    def size(self) -> int:
        return os.fstat(self.log).st_size if self.log is not None else 0

    def read(self, start: int, end: int) -> str:
        if self.log is None or end <= start:
            return ""
        return os.pread(self.log, end - start, start).decode("utf-8", "replace")


_capture = _Capture()


def decode_capturing(decode: Callable[[], T]) -> tuple[T, str]:
    """Run `decode` with descriptor 2 captured; returns its result and what decoders printed meanwhile."""
    result, said, alone = _run(decode, exclusive=False)
    if said and not alone:
        result, said, _ = _run(decode, exclusive=True)
    return result, said


def _run(decode: Callable[[], T], exclusive: bool) -> tuple[T, str, bool]:
    with _capture.condition:
        _capture.condition.wait_for(lambda: not _capture.exclusive and (not exclusive or _capture.users == 0))
        _capture.exclusive = exclusive
        if _capture.users == 0:
            _capture.redirect()
        others = _capture.users > 0
        _capture.users += 1
        _capture.started += 1
        mine, start = _capture.started, _capture.size()
    said = ""
    try:
        result = decode()
    finally:
        with _capture.condition:
            said = _capture.read(start, _capture.size())
            alone = not others and _capture.started == mine
            _capture.users -= 1
            if exclusive:
                _capture.exclusive = False
            if _capture.users == 0:
                _capture.restore()
            _capture.condition.notify_all()
    return result, said, alone


def data_loss(said: str) -> str | None:
    """The first line of decoder output that means the pixels are wrong, or None."""
    for line in said.splitlines():
        if any(line.strip().startswith(warning) for warning in DATA_LOSS):
            return line.strip()
    return None
