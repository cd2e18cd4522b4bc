"""Media inspection (:mod:`dashscope_emulator.media`)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from dashscope_emulator.media import ffmpeg_exe


def test_media_sniffing_and_durations(media: dict, tmp_path: Path) -> None:
    from dashscope_emulator.media import audio_duration, sniff_audio, sniff_image

    folder = media["dir"]
    assert sniff_image((folder / "portrait_square.png").read_bytes()) == "png"
    assert sniff_image((folder / "portrait_halfbody.jpg").read_bytes()) == "jpeg"
    assert sniff_image(b"GIF89a....") is None
    assert sniff_audio((folder / "voice.mp3").read_bytes()) == "mp3"
    assert sniff_audio((folder / "not_audio.ogg").read_bytes()) is None
    # A 32-bit float WAV, which the wave module refuses: the RIFF fallback still finds its length.
    floats = tmp_path / "float.wav"
    subprocess.run(
        [ffmpeg_exe(), "-loglevel", "error", "-i", str(folder / "voice.wav"), "-c:a", "pcm_f32le", str(floats)],
        check=True,
    )
    wav_seconds = audio_duration((folder / "voice.wav").read_bytes(), "wav")
    assert audio_duration(floats.read_bytes(), "wav") == pytest.approx(wav_seconds, abs=0.01)
    assert audio_duration((folder / "voice.mp3").read_bytes(), "mp3") == pytest.approx(wav_seconds, abs=0.15)
