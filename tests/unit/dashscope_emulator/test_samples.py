"""The sample media (:mod:`dashscope_emulator.samples`)."""

from __future__ import annotations

import wave

import pytest

from tests.unit.dashscope_emulator.helpers import probe


def test_samples_fit_the_reference_limits(media: dict) -> None:
    from PIL import Image

    folder, boxes = media["dir"], media["boxes"]
    for name in ("portrait_square.png", "portrait_halfbody.jpg", "portrait_emoji.png"):
        with Image.open(folder / name) as image:
            width, height = image.size
        assert min(width, height) >= 400
        fx1, fy1, fx2, fy2 = boxes[name]["face_bbox"]
        ex1, ey1, ex2, ey2 = boxes[name]["ext_bbox"]
        assert 0 <= ex1 <= fx1 < fx2 <= ex2 <= width and 0 <= ey1 <= fy1 < fy2 <= ey2 <= height
        ratio = (ex2 - ex1) / (ey2 - ey1)
        assert ratio == (0.75 if name == "portrait_halfbody.jpg" else 1.0)
    with Image.open(folder / "tiny.png") as image:
        assert image.size == (300, 300)
    with wave.open(str(folder / "voice.wav")) as clip:
        assert (clip.getnchannels(), clip.getsampwidth(), clip.getframerate()) == (1, 2, 16000)
        assert 4.0 <= clip.getnframes() / clip.getframerate() <= 6.0
    with wave.open(str(folder / "long.wav")) as clip:
        assert clip.getnframes() / clip.getframerate() == pytest.approx(61.0)
    assert "mp3" in probe(folder / "voice.mp3")
    assert (folder / "not_audio.ogg").read_bytes()[:4] == b"OggS"
