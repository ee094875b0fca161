"""A real HTTP file server on 127.0.0.1 for download tests: Range requests, dropped connections, 404s.

Tests add files (`server.add(path, data)`), optionally make the first request for a path stop after
some bytes (`drop_after`), ignore Range (`ignore_range`), send no Content-Length and stream the body
`repeat` times (`no_length`), or call `on_resume` when a Range request comes and then hold it open
until the server closes, or send one byte every `trickle` seconds (a stalled mirror); and read back what
was asked (`requests`).
"""

from __future__ import annotations

import io
import re
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import torch


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on right now (the OS picks it): no fixed port to collide on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def saved(obj: object) -> bytes:
    """What torch.save writes for `obj` (a real checkpoint file's bytes, to serve or corrupt)."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


@dataclass
class Served:
    data: bytes
    drop_after: int | None = None  # first request only: send this many body bytes, then close the socket
    ignore_range: bool = False
    no_length: bool = False
    repeat: int = 1
    on_resume: Callable[[], None] | None = None
    trickle: float | None = None


@dataclass
class Seen:
    path: str
    range: str | None
    status: int


@dataclass
class FileServer:
    files: dict[str, Served] = field(default_factory=dict)
    requests: list[Seen] = field(default_factory=list)
    closing: threading.Event = field(default_factory=threading.Event)

    def add(self, path: str, data: bytes, *, drop_after: int | None = None, ignore_range: bool = False,
            no_length: bool = False, repeat: int = 1, on_resume: Callable[[], None] | None = None,
            trickle: float | None = None) -> str:
        """Serve `data` at `path`; returns its full URL."""
        self.files["/" + path.lstrip("/")] = Served(data, drop_after, ignore_range, no_length, repeat, on_resume,
                                                    trickle)
        return self.url(path)

    def url(self, path: str = "") -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/{path.lstrip('/')}"

    def __enter__(self) -> FileServer:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.01,), daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.closing.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


def _handler_for(server: FileServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:  # keep pytest output clean
            pass

        def do_GET(self) -> None:
            served = server.files.get(self.path)
            asked = self.headers.get("Range")
            if served is None:
                self._status(404, asked)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            data, start = served.data, 0
            match = re.fullmatch(r"bytes=(\d+)-", asked or "")
            if match and served.on_resume is not None:
                server.requests.append(Seen(self.path, asked, 0))
                served.on_resume()
                server.closing.wait(60)  # hold the request open, answering nothing
                self.close_connection = True
                return
            if match and not served.ignore_range:
                start = int(match.group(1))
                if start >= len(data):
                    self._status(416, asked)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self._status(206, asked)
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            else:
                self._status(200, asked)
            body = data[start:]
            if served.trickle is not None:
                self._trickle(body, served.trickle, served.no_length)
                return
            if served.no_length:
                self._stream(body, served.repeat)
                return
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Accept-Ranges", "bytes")
            self.end_headers()
            if served.drop_after is not None:
                cut, served.drop_after = served.drop_after, None
                self.wfile.write(body[:cut])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(2)
                return
            self.wfile.write(body)

        def _stream(self, body: bytes, repeat: int) -> None:
            """No Content-Length: the body is `body` `repeat` times, ended by closing the connection."""
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
            try:
                for _ in range(repeat):
                    self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):  # the client stopped reading: what is tested
                pass

        def _trickle(self, body: bytes, interval: float, no_length: bool) -> None:
            """One byte every `interval` seconds, until the client hangs up or the server closes."""
            self.send_header(*(("Connection", "close") if no_length else ("Content-Length", str(len(body)))))
            self.end_headers()
            self.close_connection = True
            try:
                for index in range(len(body)):
                    self.wfile.write(body[index : index + 1])
                    self.wfile.flush()
                    if server.closing.wait(interval):
                        return
            except (BrokenPipeError, ConnectionResetError):  # the client gave up: what is tested
                pass

        def _status(self, code: int, asked: str | None) -> None:
            server.requests.append(Seen(self.path, asked, code))
            self.send_response(code)

    return Handler
