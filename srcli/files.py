"""Files on disk: the one atomic writer and the one sha256 helper that every part of srcli uses.

A file srcli writes is only ever seen complete: bytes go to a temp file beside the target (same
folder, so the final step is a rename within one file system, never a copy), which takes the target's
name only once the writer succeeded. Any failure, Ctrl-C included, removes the temp file.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from srcli.errors import OutputError, OutputExistsError, SrcliError

CHUNK = 1 << 20
NAME_MAX = 255  # bytes in one file name on every common file system (ext4, XFS, APFS, NTFS in UTF-16 units)

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
        if _read_only(ancestor):
            raise OutputError(f"cannot write to {named}: {ancestor} is on a read-only file system "
                              f"(choose another {option or '-o'})")
        raise OutputError(f"cannot write to {named}: no permission to write in {ancestor}")


def _read_only(folder: Path) -> bool:
    """Whether the file system holding `folder` is mounted read-only (a different fix than a permission)."""
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):  # no statvfs (Windows): reported as a permission problem
        return False


@contextmanager
def atomic_path(path: Path, *, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temp path beside `path` to write to; it becomes `path` only when the block succeeds.

    With `overwrite=False` the final step refuses a file that exists at that moment, even one another
    process created after any earlier check (OutputExistsError): "never overwrite silently" holds
    between processes, not only within one. Failures to write raise OutputError naming `path`.
    """
    path = Path(path)
    try:
        handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{fitting_name(path.name, 15)}.", suffix=".part")
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


def fitting_name(name: str, extra: int) -> str:
    """`name` cut so that `extra` more bytes still make a legal file name: the temp or `.part` name beside
    a legal 250-byte output must not fail with "File name too long". Cut between characters, not inside one."""
    encoded = os.fsencode(name)
    room = NAME_MAX - extra
    if len(encoded) <= room:
        return name
    cut = encoded[:room]
    while cut and cut[-1] & 0xC0 == 0x80:  # UTF-8 continuation bytes of a character cut in two
        cut = cut[:-1]
    if cut and cut[-1] >= 0xC0:  # and its lead byte
        cut = cut[:-1]
    return os.fsdecode(cut)


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


def is_hidden(path: Path) -> bool:
    """A dotfile (macOS `._name` resource forks, `.DS_Store`, editors' temp files): never an input."""
    return Path(path).name.startswith(".")


def open_regular_file(path: Path, what: str, error: type[SrcliError]) -> int:
    """An open descriptor on `path`, refused (as `error`, naming `what` it should be) unless a regular file.

    Opened non-blocking and checked with fstat on the open descriptor: a FIFO would block the read, a
    device might never end it, and nothing can be swapped in between the check and the read.
    """
    try:
        descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except FileNotFoundError:
        raise error(f"{path}: no such file") from None
    except IsADirectoryError:
        raise error(f"{path}: is a directory, not {what}") from None
    except OSError as failure:
        raise error(f"{path}: cannot be read ({failure.strerror or failure})") from None
    mode = os.fstat(descriptor).st_mode
    if not stat.S_ISREG(mode):
        os.close(descriptor)
        if stat.S_ISDIR(mode):
            raise error(f"{path}: is a directory, not {what}")
        raise error(f"{path}: is a {_file_kind(mode)}, not a regular file")
    return descriptor


def require_regular_file(path: Path, what: str, error: type[SrcliError]) -> None:
    """Refuse `path` unless it is a regular file (see `open_regular_file`), before a reader blocks on it."""
    os.close(open_regular_file(path, what, error))


def read_regular_file(path: Path, what: str, error: type[SrcliError]) -> bytes:
    """The bytes of a regular, non-empty file; every refusal is one `error` line naming the file."""
    with os.fdopen(open_regular_file(path, what, error), "rb") as handle:
        try:
            data = handle.read()
        except OSError as failure:
            raise error(f"{path}: cannot be read ({failure.strerror or failure})") from None
    if not data:
        raise error(f"{path}: empty file (0 bytes)")
    return data


def _file_kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISCHR(mode):
        return "character device"
    if stat.S_ISBLK(mode):
        return "block device"
    return "special file"
