"""Files on disk: the one atomic writer and the one sha256 helper that every part of srcli uses.

A file srcli writes is only ever seen complete: bytes go to a temp file beside the target (same
folder, so the final step is a rename within one file system, never a copy), which takes the target's
name only once the writer succeeded. Any failure, Ctrl-C included, removes the temp file.
"""

from __future__ import annotations

import errno
import hashlib
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from srcli.errors import OutputError, OutputExistsError

CHUNK = 1 << 20

# The process umask, read once (setting it is the only way to read it portably); outputs get the mode
# any other program would give them, while temp files start private (0600) until they are complete.
_UMASK = os.umask(0o022)
os.umask(_UMASK)

# link() fails with these where a file system has no hard links (FAT, exFAT, some network mounts).
_NO_LINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS}


def check_writable_folder(folder: Path, option: str = "") -> None:
    """Refuse a folder srcli will write into (made if missing) when it is a file or not writable, before any
    work is spent on it. `option` ('--out') names the flag in the message."""
    folder = Path(folder)
    named = f"{option} {folder}" if option else str(folder)
    ancestor = folder
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        where = "it" if ancestor == folder else str(ancestor)
        raise OutputError(f"cannot write to {named}: {where} is a file, not a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write to {named}: no permission to write in {ancestor}")


@contextmanager
def atomic_path(path: Path, *, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temp path beside `path` to write to; it becomes `path` only when the block succeeds.

    With `overwrite=False` the final step refuses a file that exists at that moment, even one another
    process created after any earlier check (OutputExistsError): "never overwrite silently" holds
    between processes, not only within one. Failures to write raise OutputError naming `path`.
    """
    path = Path(path)
    try:
        handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    except OSError as error:
        raise OutputError(f"cannot write {path}: {error.strerror or error}") from None
    os.close(handle)
    temp = Path(name)
    try:
        try:
            yield temp
            os.chmod(temp, 0o666 & ~_UMASK)
            move_into_place(temp, path, overwrite=overwrite)
        except OSError as error:
            raise OutputError(f"cannot write {path}: {error.strerror or error}") from None
    finally:
        temp.unlink(missing_ok=True)


def move_into_place(temp: Path, path: Path, *, overwrite: bool = True) -> None:
    """Rename a complete `temp` to `path` (same folder); without `overwrite`, refuse an existing `path`."""
    if overwrite:
        os.replace(temp, path)
        return
    try:
        os.link(temp, path)  # atomic and exclusive: fails if `path` exists, whoever made it
    except FileExistsError:
        raise OutputExistsError(
            f"{path} already exists (another process wrote it meanwhile): pass --overwrite to replace it"
        ) from None
    except OSError as error:
        if error.errno not in _NO_LINKS:
            raise
        _move_without_links(temp, path)
        return
    os.unlink(temp)


def _move_without_links(temp: Path, path: Path) -> None:
    """Where hard links are unsupported: Windows' rename never replaces; elsewhere check, then rename."""
    if sys.platform == "win32":
        try:
            os.rename(temp, path)
        except FileExistsError:
            raise OutputExistsError(f"{path} already exists: pass --overwrite to replace it") from None
        return
    if os.path.lexists(path):  # a narrow race remains on such file systems: nothing better is portable
        raise OutputExistsError(f"{path} already exists: pass --overwrite to replace it")
    os.rename(temp, path)


def write_atomic(path: Path, data: bytes, *, overwrite: bool = True) -> None:
    """Write `data` to `path` so that no reader ever sees a partial file, even on Ctrl-C or a full disk."""
    with atomic_path(path, overwrite=overwrite) as temp:
        temp.write_bytes(data)


def sha256_file(path: Path) -> str:
    """The hex sha256 of a file, read in 1 MB blocks (weights are up to 175 MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()
