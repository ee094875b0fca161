"""The one downloader (weights and datasets): streaming, HTTP Range resume, checksums, atomic rename.

Also where downloaded things live (`data_home`, from srcli.paths), how a mirror base address turns into candidate
URLs, and a small registry of named downloadable things that `srcli download NAME...` serves.
A file is only ever visible at its final path once it is complete and verified: bytes arrive in
`<dest>.part`, which survives an interrupted run so the next one resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from srcli.errors import DownloadError, UnknownModelError
from srcli.files import fitting_name, move_into_place
from srcli.paths import HOME_ENV as HOME_ENV  # re-exported: weights, datasets and tests read them here
from srcli.paths import cache_home as cache_home
from srcli.paths import data_home as data_home

if TYPE_CHECKING:  # requests is imported where a download starts: every CLI start imports this module (0.1 s)
    import requests

Progress = Callable[[int, "int | None"], None]
"""Called with (bytes on disk so far, total bytes or None when the server does not say)."""

CHUNK = 1 << 20
NETWORK_CHUNK = 1 << 16  # small reads: a dropped connection loses at most this much of what arrived
DEFAULT_TIMEOUT = 30.0
DEFAULT_STALL = 120.0  # seconds without a whole network block: a mirror slower than about 0.5 KB/s is stalled
MIRROR_ENV = "SRCLI_MIRROR"


def candidate_urls(official_url: str, mirror: str | None = None) -> list[str]:
    """Mirror first (it holds files under their official names), then the official address.

    `mirror` defaults to $SRCLI_MIRROR; an empty value means no mirror.
    """
    mirror = os.environ.get(MIRROR_ENV) if mirror is None else mirror
    urls = []
    if mirror:
        urls.append(mirror.rstrip("/") + "/" + official_url.rsplit("/", 1)[-1])
    if official_url not in urls:
        urls.append(official_url)
    return urls


class _Checksums:
    """Running digests of the bytes written, so verification needs no second read of the file."""

    def __init__(self, sha256: str | None, md5: str | None):
        self.expected = {name: value.lower() for name, value in (("sha256", sha256), ("md5", md5)) if value}
        self.reset()

    def reset(self) -> None:
        self.digests = {name: hashlib.new(name) for name in self.expected}

    def update(self, data: bytes) -> None:
        for digest in self.digests.values():
            digest.update(data)

    def update_from_file(self, path: Path) -> None:
        with path.open("rb") as handle:
            while block := handle.read(CHUNK):
                self.update(block)

    def mismatch(self) -> str | None:
        """A description of the first wrong digest, or None when all match."""
        for name, expected in self.expected.items():
            actual = self.digests[name].hexdigest()
            if actual != expected:
                return f"{name} mismatch: got {actual[:16]}..., expected {expected[:16]}..."
        return None


def _host(url: str) -> str:
    return urlsplit(url).netloc or url


def _describe(error: requests.RequestException) -> str:
    """A short reason for a network failure (requests' own messages are long and nested)."""
    import requests

    if isinstance(error, requests.Timeout):
        return str(error) if str(error).startswith("stalled") else "timed out"
    if isinstance(error, requests.exceptions.ChunkedEncodingError):
        return "connection dropped mid-file"
    if isinstance(error, requests.ConnectionError):
        text = str(error)
        for reason in ("Connection refused", "Name or service not known", "Temporary failure in name resolution",
                       "Network is unreachable", "No route to host", "Connection reset", "Connection aborted"):
            if reason.lower() in text.lower():
                return reason.lower()
        return "cannot connect"
    return type(error).__name__


@contextmanager
def _folder_lock(folder: Path) -> Iterator[None]:
    """Serialise downloads into one folder across processes (torchrun ranks resolving the same model),
    so two writers never append to one .part. Locks the folder itself: no lock file is left behind."""
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks; concurrent downloads are the user's to avoid
        yield
        return
    handle = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield
    finally:
        os.close(handle)  # closing releases the lock


def _verified(path: Path, sha256: str | None, md5: str | None, size: int | None) -> bool:
    """Whether an existing complete file is the one wanted (nothing to check counts as yes)."""
    if size is not None and path.stat().st_size != size:
        return False
    checks = _Checksums(sha256, md5)
    if checks.expected:
        checks.update_from_file(path)
    return checks.mismatch() is None


def _start_offset(part: Path, size: int | None) -> int:
    """How many bytes of a previous attempt can be kept (a .part bigger than the file is junk)."""
    if not part.exists():
        return 0
    have = part.stat().st_size
    if size is not None and have > size:
        part.unlink()
        return 0
    return have


def _content_range_start(header: str | None) -> int | None:
    """'bytes 100-199/200' -> 100."""
    if not header or not header.startswith("bytes "):
        return None
    try:
        return int(header[6:].split("-", 1)[0])
    except ValueError:
        return None


class _StallWatch:
    """Cuts the connection when no network block arrived for `seconds`. requests' timeout bounds each socket
    read, so a mirror sending a byte every few seconds never trips it and the download would never end."""

    def __init__(self, response: requests.Response, seconds: float):
        self.response, self.seconds, self.fired = response, seconds, False
        self.last = time.monotonic()
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._watch, name="srcli-stall-watch", daemon=True)

    def __enter__(self) -> _StallWatch:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.thread.join()

    def progress(self) -> None:
        self.last = time.monotonic()

    def _watch(self) -> None:
        while not self.done.wait(max(0.0, self.last + self.seconds - time.monotonic())):
            if time.monotonic() - self.last >= self.seconds:
                self.fired = True
                _cut(self.response)
                return

    def check(self) -> None:
        """Raise (as a timeout, so it is retried and resumed like one) when the watch cut the transfer."""
        if self.fired:
            import requests

            raise requests.exceptions.ReadTimeout(
                f"stalled (not {NETWORK_CHUNK >> 10} KB in {self.seconds:g} s)")


def _cut(response: requests.Response) -> None:
    """Shut the response's socket down: a read blocked on it returns at once, in whatever thread it is.
    Found through the connection, or (a `Connection: close` response, whose connection lets go of its
    socket) through the descriptor the body is read from."""
    sock = getattr(getattr(response.raw, "connection", None), "sock", None)
    body = getattr(getattr(response.raw, "_fp", None), "fp", None)
    with suppress(OSError, ValueError, AttributeError):  # already closed: the read has ended anyway
        descriptor = sock.fileno() if sock is not None else body.fileno()
        with socket.socket(fileno=os.dup(descriptor)) as twin:  # shutdown acts on the connection, not the fd
            twin.shutdown(socket.SHUT_RDWR)


def _stream_once(
    url: str,
    part: Path,
    checks: _Checksums,
    size: int | None,
    progress: Progress | None,
    session: requests.Session,
    timeout: float,
    stall: float = DEFAULT_STALL,
) -> None:
    """One HTTP request that appends to `part`, resuming from its current length when there is one."""
    offset = _start_offset(part, size)
    checks.reset()
    if offset:
        checks.update_from_file(part)
    if size is not None and offset == size:
        return  # a previous attempt already has every byte; only verification is left
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    with session.get(url, headers=headers, stream=True, timeout=timeout, allow_redirects=True) as response:
        if response.status_code == 416 and offset:
            # Nothing past our end: the .part is either complete (verification passes) or junk.
            if checks.mismatch() is None and (size is None or offset == size):
                return
            part.unlink()
            _stream_once(url, part, checks, size, progress, session, timeout, stall)
            return
        if response.status_code >= 400:
            reason = response.reason or "error"
            raise DownloadError(f"{url}: HTTP {response.status_code} {reason}")
        if response.status_code == 206 and offset:
            if _content_range_start(response.headers.get("Content-Range")) != offset:
                raise DownloadError(f"{url}: the server answered a resume with the wrong byte range")
            mode = "ab"
        else:  # 200: the server ignored Range (or there was none): start from the first byte
            offset = 0
            checks.reset()
            mode = "wb"
        length = response.headers.get("Content-Length")
        announced = offset + int(length) if length and length.isdigit() else None
        if size is not None and announced is not None and announced > size:
            part.unlink(missing_ok=True)
            raise DownloadError(f"{url}: the server announces {announced} bytes, more than the expected {size}; "
                                "refused before downloading")
        total = size if size is not None else announced
        done = offset
        if progress:
            progress(done, total)
        with part.open(mode) as handle, _StallWatch(response, stall) as watch:
            try:
                for block in response.iter_content(NETWORK_CHUNK):
                    watch.progress()
                    if size is not None and done + len(block) > size:  # never write past the expected size
                        break
                    handle.write(block)
                    checks.update(block)
                    done += len(block)
                    if progress:
                        progress(done, total)
                else:
                    watch.check()  # a cut connection without Content-Length ends like a complete body
                    handle.flush()
                    os.fsync(handle.fileno())
                    return
            except Exception:
                watch.check()
                raise
        part.unlink()  # a server streaming past the size would fill the disk: stop at the first extra byte
        raise DownloadError(f"{url}: the server sent more than the expected {size} bytes; the download was discarded")


def fetch(
    url: str,
    dest: Path,
    *,
    sha256: str | None = None,
    md5: str | None = None,
    size: int | None = None,
    progress: Progress | None = None,
    session: requests.Session | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    retries: int = 2,
    stall: float = DEFAULT_STALL,
) -> Path:
    """Download `url` to `dest`, verified, resuming any earlier partial download; returns `dest`.

    An existing `dest` that passes the checks is kept without touching the network. A dropped
    connection is retried `retries` times, each retry resuming with a Range request; when retries run
    out the `.part` stays, so the next call resumes too. A file that fails its checksum or size is
    deleted (nothing half-right is ever cached) and DownloadError is raised, as for HTTP errors and
    network failures; each message is one line. A transfer that delivers no network block (64 KB) for
    `stall` seconds counts as a dropped connection.
    """
    dest = Path(dest)
    if dest.is_file() and _verified(dest, sha256, md5, size):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with _folder_lock(dest.parent):
        if dest.is_file() and _verified(dest, sha256, md5, size):
            return dest  # another process finished it while we waited
        return _download(url, dest, sha256, md5, size, progress, session, timeout, retries, stall)


def _download(
    url: str,
    dest: Path,
    sha256: str | None,
    md5: str | None,
    size: int | None,
    progress: Progress | None,
    session: requests.Session | None,
    timeout: float,
    retries: int,
    stall: float,
) -> Path:
    import requests

    part = dest.with_name(fitting_name(dest.name, len(".part")) + ".part")
    checks = _Checksums(sha256, md5)
    own_session = session is None
    session = session or requests.Session()
    try:
        for attempt in range(retries + 1):
            try:
                _stream_once(url, part, checks, size, progress, session, timeout, stall)
                break
            except requests.RequestException as error:
                if attempt == retries:
                    kept = f"; {part.stat().st_size} bytes kept, run again to resume" if part.exists() else ""
                    raise DownloadError(f"{url}: {_describe(error)}{kept}") from error
    finally:
        if own_session:
            session.close()
    return _finish(url, part, dest, checks, size)


def _finish(url: str, part: Path, dest: Path, checks: _Checksums, size: int | None) -> Path:
    """Verify the complete .part and move it into place atomically, or delete it."""
    if not part.exists():
        raise DownloadError(f"{url}: the server sent nothing")
    got = part.stat().st_size
    problem = f"size mismatch: {got} bytes, expected {size}" if size is not None and got != size else checks.mismatch()
    if problem:
        part.unlink()
        raise DownloadError(f"{url}: {problem}; the download was discarded")
    move_into_place(part, dest)
    return dest


def fetch_first(urls: Sequence[str], dest: Path, **options) -> Path:
    """`fetch` from the first of `urls` that works (mirror first, then official); one-line error if none."""
    if not urls:
        raise ValueError("fetch_first needs at least one URL")
    failures = []
    for url in urls:
        try:
            return fetch(url, dest, **options)
        except DownloadError as error:
            failures.append(str(error))
    raise DownloadError("; ".join(failures))


# --- named downloadable things (`srcli download NAME...`) -------------------------------------------


@dataclass(frozen=True)
class Downloadable:
    """Something `srcli download` can fetch by name: a weights file now, a dataset archive later.

    `fetch(mirror, progress)` downloads it (or does nothing when present) and returns where it lies;
    `present()` says whether it is already there (no network).
    """

    name: str
    kind: str
    size: int | None
    describe: str
    present: Callable[[], bool]
    fetch: Callable[[str | None, Progress | None], Path]
    shipped: bool = False  # part of the install (srcli's embedded models): nothing to download


_PROVIDERS: dict[str, Callable[[], Iterable[Downloadable]]] = {}


def register(kind: str, provider: Callable[[], Iterable[Downloadable]]) -> None:
    """Make a family of downloadable things known; `provider` is called when the list is needed."""
    _PROVIDERS[kind] = provider


def downloadables() -> dict[str, Downloadable]:
    """Every registered downloadable thing by name."""
    items: dict[str, Downloadable] = {}
    for provider in _PROVIDERS.values():
        for item in provider():
            items[item.name] = item
    return items


def lookup(names: Iterable[str]) -> list[Downloadable]:
    """The things named, in order, or one error naming every unknown one."""
    known = downloadables()
    names = list(dict.fromkeys(names))
    unknown = [name for name in names if name not in known]
    if unknown:
        fetchable = sorted(name for name, item in known.items() if not item.shipped)
        raise UnknownModelError(
            f"nothing called {', '.join(unknown)} can be downloaded; known: {', '.join(fetchable)} "
            "(srcli's embedded models ship with it: `srcli models`)"
        )
    return [known[name] for name in names]
