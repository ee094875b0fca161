"""Safe extraction of downloaded .tar/.zip archives: every member checked before a byte is written.

Absolute paths, `..`, links and device files make the whole archive refused. Files are written by this
code (never by tarfile/zipfile's own extract) into a temporary folder beside the target and moved into
place, so a half-extracted archive is never seen.
"""

from __future__ import annotations

import os
import shutil
import stat
import tarfile
import tempfile
import zipfile
from collections.abc import Callable
from functools import partial
from pathlib import Path, PurePosixPath
from typing import IO

from srcli.errors import DatasetError


def _unsafe_reason(name: str) -> str | None:
    """Why an archive member name could escape the target, or None when it is a plain relative path."""
    if "\\" in name or name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        return "an absolute or non-POSIX path"
    if ".." in PurePosixPath(name).parts:
        return "a '..' path"
    return None


def _refuse(label: str, name: str, reason: str | None) -> None:
    if reason:
        raise DatasetError(f"{label}: refused, member {name!r} is {reason}")


def _tar_entries(archive: tarfile.TarFile, label: str) -> list[tuple[str, Callable[[], IO[bytes]] | None]]:
    """(name, opener or None for a folder) per member, after every member passed the checks."""
    entries = []
    for member in archive.getmembers():
        _refuse(label, member.name, _unsafe_reason(member.name)
                or (None if member.isfile() or member.isdir() else "a link or special file"))
        entries.append((member.name, partial(archive.extractfile, member) if member.isfile() else None))
    return entries


def _zip_entries(archive: zipfile.ZipFile, label: str) -> list[tuple[str, Callable[[], IO[bytes]] | None]]:
    entries = []
    for info in archive.infolist():
        mode = info.external_attr >> 16  # Unix mode; many writers (Python's writestr) set no file-type bits
        special = stat.S_IFMT(mode) and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))
        _refuse(label, info.filename, _unsafe_reason(info.filename) or ("a link or special file" if special else None))
        entries.append((info.filename, None if info.is_dir() else partial(archive.open, info)))
    return entries


def extract(archive_path: Path, target: Path) -> None:
    """Unpack a .tar/.zip into `target`, merging with what is there; a single unsafe member refuses it all.

    Every member is checked before a byte is written; files are written by this code (never by
    tarfile/zipfile's own extract), then moved into place from a temporary folder beside `target`.
    """
    archive_path, target = Path(archive_path), Path(target)
    label = archive_path.name
    target.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".extract-", dir=target))
    try:
        if zipfile.is_zipfile(archive_path):
            with zipfile.ZipFile(archive_path) as zipped:
                _write_entries(_zip_entries(zipped, label), staging)
        elif tarfile.is_tarfile(archive_path):
            with tarfile.open(archive_path) as tarred:
                _write_entries(_tar_entries(tarred, label), staging)
        else:
            raise DatasetError(f"{label}: not a tar or zip archive")
        _merge_into(staging, target)
    except (OSError, zipfile.BadZipFile, tarfile.TarError) as error:
        raise DatasetError(f"{label}: extraction failed ({type(error).__name__}: {error})") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _write_entries(entries: list[tuple[str, Callable[[], IO[bytes]] | None]], staging: Path) -> None:
    for name, opener in entries:
        path = staging / name
        if opener is None:
            path.mkdir(parents=True, exist_ok=True)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        with opener() as source, path.open("wb") as handle:
            shutil.copyfileobj(source, handle, 1 << 20)


def _merge_into(source: Path, target: Path) -> None:
    """Move each entry of `source` into `target`: whole subtrees by rename where the name is free."""
    for entry in source.iterdir():
        destination = target / entry.name
        if destination.is_dir() and entry.is_dir():
            _merge_into(entry, destination)
        else:
            os.replace(entry, destination)
