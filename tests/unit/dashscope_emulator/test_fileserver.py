"""The static media server (:mod:`dashscope_emulator.fileserver`)."""

from __future__ import annotations

import socket
import threading

import requests
from dashscope_emulator.fileserver import TrackedQuietHandler, TrackingServer


def test_serve_directory_supports_head_and_range(media: dict) -> None:
    data = (media["dir"] / "voice.wav").read_bytes()
    head = requests.head(f"{media['url']}/voice.wav")
    assert head.status_code == 200 and int(head.headers["Content-Length"]) == len(data)
    part = requests.get(f"{media['url']}/voice.wav", headers={"Range": "bytes=-10"})
    assert part.status_code == 206 and part.content == data[-10:]
    assert requests.get(f"{media['url']}/voice.wav", headers={"Range": f"bytes={len(data)}-"}).status_code == 416
    # The emulator_error query string doesn't change which file is served.
    assert requests.get(f"{media['url']}/tiny.png?emulator_error=InvalidFile.Value").status_code == 200


def test_every_connection_sends_its_answers_without_nagles_delay() -> None:
    """An answer's headers and body leave as separate writes. With Nagle's algorithm on, a keep-alive
    client's delayed ACK held every answer after a connection's first about 40 ms (measured: 43 ms a status
    query against 1.8 ms), which stretched rate-limit bursts past their 1 s window on a loaded machine."""
    seen: list[int] = []

    class Probe(TrackedQuietHandler):
        def do_GET(self) -> None:
            seen.append(self.connection.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

    server = TrackingServer(("127.0.0.1", 0), Probe)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with requests.Session() as session:  # one keep-alive connection for all three
            answers = [session.get(f"http://127.0.0.1:{server.server_address[1]}/").text for _ in range(3)]
    finally:
        server.shutdown()
        server.close_connections()
        server.server_close()
    assert answers == ["ok"] * 3
    assert len(seen) == 3 and all(seen), seen
