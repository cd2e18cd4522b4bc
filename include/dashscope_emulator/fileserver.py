"""HTTP plumbing shared by the emulator's API server and its static media server.

* :class:`TrackingServer`: a ``ThreadingHTTPServer`` that can close its keep-alive connections on
  shutdown and keeps quiet about clients that hang up;
* :class:`TrackedQuietHandler`: the handler base that registers its connection and keeps no access log;
* :func:`send_file`: a file answer (200, or 206 for one ``Range``), streamed in chunks;
* :func:`read_chunked`: a ``Transfer-Encoding: chunked`` request body, trailers consumed;
* :func:`serve_directory`: a static file server for sample media, in a background thread (the
  emulator downloads inputs from URLs, so tests need their media served over HTTP).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import socket
import threading
from collections.abc import Iterator
from functools import partial
from http.server import BaseHTTPRequestHandler, SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, BinaryIO

log = logging.getLogger("dashscope_emulator")

_CHUNK = 64 * 1024


class TrackingServer(ThreadingHTTPServer):
    """ThreadingHTTPServer that can close its keep-alive connections on shutdown and stays quiet.

    Without closing them, a client's pooled connection would keep talking to a stopped server's
    handler thread; and the stdlib prints a traceback for every client that hangs up mid-request.
    ``address`` is ``(host, port)`` (port 0: any free port); ``handler`` a :class:`TrackedQuietHandler`.
    """

    daemon_threads = True
    block_on_close = False
    request_queue_size = 1024  # the listen backlog: many pollers may connect at once

    def __init__(self, address: tuple[str, int], handler: Any) -> None:
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, handler)

    def track(self, sock: socket.socket, add: bool) -> None:
        """Register (``add``) or forget an open connection."""
        with self._connections_lock:
            (self._connections.add if add else self._connections.discard)(sock)

    def close_connections(self) -> None:
        """Shut down every open connection (after :meth:`shutdown`, so no new ones arrive)."""
        with self._connections_lock:
            connections = list(self._connections)
        for sock in connections:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("error while serving %s", client_address, exc_info=True)


class TrackedQuietHandler(BaseHTTPRequestHandler):
    """Registers its connection with the :class:`TrackingServer` (so stop() can close it) and keeps
    no access log (the emulator logs one line per request itself, without client addresses)."""

    protocol_version = "HTTP/1.1"
    # The headers and the body leave as separate writes: with Nagle's algorithm on, a keep-alive client's
    # delayed ACK holds each answer's body about 40 ms (every request after a connection's first).
    disable_nagle_algorithm = True
    # Idle keep-alive connections are closed after this many seconds, so threads don't pile up.
    timeout = 120

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection, True)  # type: ignore[attr-defined]

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.track(self.connection, False)  # type: ignore[attr-defined]

    def log_message(self, format: str, *args: Any) -> None:  # the stdlib's signature
        pass


def read_chunked(rfile: BinaryIO) -> bytes:
    """The body of a ``Transfer-Encoding: chunked`` request, read to its end (trailers consumed)."""
    chunks = []
    while True:
        size = int(rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
        if size == 0:
            while rfile.readline() not in (b"\r\n", b"\n", b""):
                pass  # trailers
            break
        chunks.append(rfile.read(size))
        rfile.readline()
    return b"".join(chunks)


def parse_range(header: str, size: int) -> tuple[int, int] | bool | None:
    """Inclusive ``(start, end)`` of one ``bytes=`` range; None: ignore the header; False: unsatisfiable."""
    match = re.fullmatch(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*", header)
    if not match or (not match.group(1) and not match.group(2)):
        return None  # multi-range or malformed: RFC 9110 lets us answer with the whole file
    if not match.group(1):
        length = int(match.group(2))
        if length == 0:
            return False
        return max(0, size - length), size - 1
    start = int(match.group(1))
    end = int(match.group(2)) if match.group(2) else size - 1
    if start >= size or end < start:
        return False
    return start, min(end, size - 1)


def send_file(handler: BaseHTTPRequestHandler, path: Path, content_type: str, head: bool) -> int:
    """Answer with a file (200, or 206 for a ``Range``), streamed in chunks; returns the status sent."""
    size = path.stat().st_size
    wanted = parse_range(handler.headers.get("Range", ""), size) if handler.headers.get("Range") else None
    if wanted is False:
        handler.send_response(416)
        handler.send_header("Content-Range", f"bytes */{size}")
        handler.send_header("Content-Length", "0")
        handler.end_headers()
        return 416
    start, end = wanted if isinstance(wanted, tuple) else (0, size - 1)
    status = 206 if isinstance(wanted, tuple) else 200
    handler.send_response(status)
    handler.send_header("Content-Type", content_type)
    handler.send_header("Content-Length", str(max(0, end - start + 1)))
    handler.send_header("Accept-Ranges", "bytes")
    handler.send_header("Last-Modified", handler.date_time_string(int(path.stat().st_mtime)))
    if status == 206:
        handler.send_header("Content-Range", f"bytes {start}-{end}/{size}")
    handler.end_headers()
    if head:
        return status
    with path.open("rb") as source:
        source.seek(start)
        remaining = end - start + 1
        while remaining > 0:
            chunk = source.read(min(_CHUNK, remaining))
            if not chunk:
                break
            handler.wfile.write(chunk)
            remaining -= len(chunk)
    return status


class _QuietStaticHandler(TrackedQuietHandler, SimpleHTTPRequestHandler):
    """Static files over HTTP/1.1 keep-alive, with single ``Range`` requests, and no access log."""

    def do_GET(self) -> None:
        if self.headers.get("Range"):
            path = self.translate_path(self.path)
            if os.path.isfile(path):
                send_file(self, Path(path), self.guess_type(path), head=False)
                return
        super().do_GET()


@contextlib.contextmanager
def serve_directory(directory: str | os.PathLike[str], host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serve ``directory`` over HTTP in a background thread; yields its base URL (``http://host:port``)."""
    handler = partial(_QuietStaticHandler, directory=str(directory))
    httpd = TrackingServer((host, port), handler)
    thread = threading.Thread(
        target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="emulator-static", daemon=True
    )
    thread.start()
    try:
        yield f"http://{host}:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.close_connections()
        httpd.server_close()
        thread.join(timeout=2.0)
