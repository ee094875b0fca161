"""srcli's cache entries (a folded network, a converted OpenVINO model): a folder written whole and verified on read.

An entry is written into a temp folder beside its place, with `entry.sha256` recording the sha256 of each of its
files, then renamed into place in one step: a reader never sees half an entry. Every read checks those digests, so
an entry changed after it was written (a flipped sign or exponent bit, a truncated file) is removed and rebuilt,
never used and never a permanent failure. Where srcli's cache folder cannot be written, entries go to this user's
own folder under the system temp dir (mode 0700, refused if anyone else owns it), so an unwritable cache does not
mean rebuilding on every run; where neither works, the caller keeps what it built for this process only.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from srcli.files import sha256_file
from srcli.paths import cache_home

MANIFEST = "entry.sha256"
STALE_TEMP_SECONDS = 3600  # a temp folder this old belongs to a process that died mid-write


def _fallback_root() -> Path | None:
    """This user's private cache under the system temp dir, or None where it is not safely ours."""
    uid = os.getuid() if hasattr(os, "getuid") else 0
    root = Path(tempfile.gettempdir()) / f"srcli-cache-{uid}"
    try:
        root.mkdir(mode=0o700, exist_ok=True)
        info = os.lstat(root)
    except OSError:
        return None
    if not stat.S_ISDIR(info.st_mode) or info.st_mode & 0o077 or (hasattr(os, "getuid") and info.st_uid != uid):
        return None  # a link, someone else's folder, or one others may write: not a place to read code from
    return root


def roots(kind: str) -> list[Path]:
    """Where entries of this kind may live, in the order they are read and tried for writing."""
    places = [cache_home() / kind]
    fallback = _fallback_root()
    if fallback is not None:
        places.append(fallback / kind)
    return places


def verified(folder: Path) -> bool:
    """Whether `folder` holds a whole entry whose files still have the digests recorded when it was written; a
    changed, truncated or partial entry is removed (so the caller rebuilds it)."""
    manifest = folder / MANIFEST
    if not folder.is_dir():
        return False
    try:
        lines = manifest.read_text(encoding="utf-8").splitlines()
        recorded = dict(line.split("  ", 1)[::-1] for line in lines if line)
        present = {p.name for p in folder.iterdir()} - {MANIFEST}
        good = bool(recorded) and present == set(recorded) and all(
            sha256_file(folder / name) == digest for name, digest in recorded.items())
    except (OSError, ValueError, UnicodeDecodeError):
        good = False
    if not good:
        shutil.rmtree(folder, ignore_errors=True)
    return good


def find(kind: str, key: str) -> Path | None:
    """The verified entry for `key`, wherever it lives; None where there is none (a damaged one is removed)."""
    for root in roots(kind):
        if verified(root / key):
            return root / key
    return None


def _sweep(root: Path) -> None:
    """Remove temp folders left by processes that died mid-write."""
    now = time.time()
    for temp in root.glob(".tmp-*"):
        try:
            if now - temp.stat().st_mtime > STALE_TEMP_SECONDS:
                shutil.rmtree(temp, ignore_errors=True)
        except OSError:
            pass


def store(kind: str, key: str, write: Callable[[Path], None]) -> Path | None:
    """Write an entry: `write(folder)` fills a temp folder, its digests are recorded, one rename puts it in place.
    Tries srcli's cache, then the private temp fallback; None where neither can be written (nothing is left
    behind). Two processes storing at once both end with one whole entry."""
    for root in roots(kind):
        stored = store_at(root, key, write)
        if stored is not None:
            return stored
    return None


def store_at(root: Path, key: str, write: Callable[[Path], None]) -> Path | None:
    """`store` in one folder; None where it cannot be written."""
    temp = None
    try:
        root.mkdir(parents=True, exist_ok=True)
        _sweep(root)
        temp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=root))
        write(temp)
        digests = [f"{sha256_file(path)}  {path.name}\n" for path in sorted(temp.iterdir())]
        (temp / MANIFEST).write_text("".join(digests), encoding="utf-8")
        os.rename(temp, root / key)  # fails where another process stored it first: its entry serves
        return root / key
    except OSError:
        return root / key if (root / key).is_dir() else None
    finally:
        if temp is not None and temp.exists():
            shutil.rmtree(temp, ignore_errors=True)
