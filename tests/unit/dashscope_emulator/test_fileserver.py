"""The static media server (:mod:`dashscope_emulator.fileserver`)."""

from __future__ import annotations

import requests


def test_serve_directory_supports_head_and_range(media: dict) -> None:
    data = (media["dir"] / "voice.wav").read_bytes()
    head = requests.head(f"{media['url']}/voice.wav")
    assert head.status_code == 200 and int(head.headers["Content-Length"]) == len(data)
    part = requests.get(f"{media['url']}/voice.wav", headers={"Range": "bytes=-10"})
    assert part.status_code == 206 and part.content == data[-10:]
    assert requests.get(f"{media['url']}/voice.wav", headers={"Range": f"bytes={len(data)}-"}).status_code == 416
    # The emulator_error query string doesn't change which file is served.
    assert requests.get(f"{media['url']}/tiny.png?emulator_error=InvalidFile.Value").status_code == 200
