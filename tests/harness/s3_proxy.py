"""A reverse proxy in front of an S3-compatible server that can vanish in the middle of an upload.

Every request is passed to the real server (moto in server mode) and its answer passed back, except
that while ``cut_uploads`` is above zero (or ``always_cut`` is set), a ``PUT`` whose path matches
``cut_pattern`` has only half its body read, and then the connection is closed without an answer: what
a client sees when the store crashes or the network drops mid-upload. The object was never completed,
so the real server never stores it.
"""

from __future__ import annotations

import http.client
import re
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # no ~40 ms delayed-ACK stall per keep-alive request
    server: FaultyS3Proxy

    def log_message(self, format: str, *args: object) -> None:  # the stdlib's signature
        pass

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _handle(self) -> None:
        proxy = self.server
        if self.command == "PUT" and proxy.should_cut(self.path):
            length = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(length // 2)
            proxy.record_cut(self.path)
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        body = self._body()
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            headers["Content-Length"] = str(len(body))
        upstream = http.client.HTTPConnection(proxy.upstream_host, proxy.upstream_port, timeout=60)
        try:
            upstream.request(self.command, self.path, body=body or None, headers=headers)
            response = upstream.getresponse()
            payload = response.read()
        finally:
            upstream.close()
        self.send_response(response.status, response.reason)
        for key, value in response.getheaders():
            # A HEAD answer's Content-Length is the object's size, not the (empty) body's.
            if key.lower() not in HOP_BY_HOP and (key.lower() != "content-length" or self.command == "HEAD"):
                self.send_header(key, value)
        if self.command != "HEAD":
            self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle


class FaultyS3Proxy(ThreadingHTTPServer):
    """``with FaultyS3Proxy(moto_url) as proxy:`` -> ``proxy.url``; set ``cut_uploads``/``always_cut``."""

    daemon_threads = True

    def __init__(self, upstream: str, cut_pattern: str = r"/videos/") -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        parts = urlsplit(upstream)
        self.upstream_host, self.upstream_port = parts.hostname or "127.0.0.1", parts.port or 80
        self.cut_pattern = re.compile(cut_pattern)
        self.cut_uploads = 0
        self.always_cut = False
        self.cuts: list[str] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def should_cut(self, path: str) -> bool:
        with self._lock:
            if not self.cut_pattern.search(path):
                return False
            if self.always_cut:
                return True
            if self.cut_uploads > 0:
                self.cut_uploads -= 1
                return True
            return False

    def record_cut(self, path: str) -> None:
        with self._lock:
            self.cuts.append(path)

    def __enter__(self) -> FaultyS3Proxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()
