"""Media handling for the emulator: download, inspect (format, size, duration) and render the result video.

Rendering uses the ffmpeg binary shipped by ``imageio-ffmpeg``: the portrait is cropped to ``ext_bbox``,
fitted to the output size of the ratio (512x512 or 512x704) and given a slow sway so the video is not a
frozen frame; emo-v1 videos carry the input audio (H.264 + AAC), emoji-v1 videos are silent (H.264).
Renders are cached by content, so a table of 200 identical rows costs one ffmpeg run.
"""

from __future__ import annotations

import hashlib
import io
import logging
import shutil
import struct
import subprocess
import tempfile
import threading
import urllib.error
import urllib.request
import wave
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

#: Output sizes per ``video_ratio`` (from the reference: 1:1 -> 512x512, 3:4 -> 512x704; emoji is 1:1).
OUTPUT_SIZES = {"1:1": (512, 512), "3:4": (512, 704), "standard": (512, 512)}
#: Frames per second of rendered videos: low, because nobody grades the emulator's animation.
RENDER_FPS = 12
#: The crop is this much larger than the output so the sway has room to move.
SWAY_MARGIN = 1.06

# An opener without proxy handlers: the emulator stands in for a cloud service that fetches media
# directly, and local media servers (127.0.0.1) must not be routed through a proxy from the environment.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class FetchError(Exception):
    """The media URL could not be downloaded (connection error, timeout, HTTP error status)."""


class TooLarge(Exception):
    """The media is larger than the allowed number of bytes."""


class MediaError(Exception):
    """The media bytes are not what they claim to be (undecodable header, no duration)."""


def fetch(url: str, max_bytes: int, timeout: float = 10.0) -> bytes:
    """Download ``url``; raises :class:`TooLarge` past ``max_bytes`` (without reading all of it)."""
    request = urllib.request.Request(url, headers={"User-Agent": "dashscope-emulator"})
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            length = response.headers.get("Content-Length")
            if length is not None and length.isdigit() and int(length) > max_bytes:
                raise TooLarge(f"{length} bytes")
            data = response.read(max_bytes + 1)
    except TooLarge:
        raise
    except (urllib.error.URLError, OSError, ValueError) as exc:  # HTTPError is a URLError
        raise FetchError(str(exc)) from exc
    if len(data) > max_bytes:
        raise TooLarge(f"more than {max_bytes} bytes")
    return data


def sniff_image(data: bytes) -> str | None:
    """The image format from its magic bytes (``jpeg``, ``png``, ``bmp``, ``webp``), or None."""
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith(b"BM") and len(data) > 26:
        return "bmp"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return None


def image_size(data: bytes) -> tuple[int, int]:
    """``(width, height)`` of an image; raises :class:`MediaError` if Pillow can't read its header."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.size
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise MediaError(str(exc)) from exc


def sniff_audio(data: bytes) -> str | None:
    """``wav`` or ``mp3`` from the magic bytes, or None for anything else (OGG, FLAC, text...)."""
    if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        return "wav"
    if data.startswith(b"ID3"):
        return "mp3"
    # A bare MPEG audio frame: 11-bit sync, layer III (bits 01), not a reserved version.
    if len(data) >= 4 and data[0] == 0xFF and (data[1] & 0xE0) == 0xE0 and (data[1] & 0x06) == 0x02:
        return "mp3"
    return None


def _riff_wav_duration(data: bytes) -> float:
    """Duration from the RIFF chunks, for WAVs the ``wave`` module refuses (float PCM, extensible)."""
    pos, byte_rate, data_size = 12, 0, None
    while pos + 8 <= len(data):
        chunk_id, size = data[pos : pos + 4], struct.unpack("<I", data[pos + 4 : pos + 8])[0]
        if chunk_id == b"fmt " and size >= 16:
            byte_rate = struct.unpack("<I", data[pos + 16 : pos + 20])[0]
        elif chunk_id == b"data":
            data_size = min(size, len(data) - pos - 8)
            break
        pos += 8 + size + (size & 1)
    if not byte_rate or data_size is None:
        raise MediaError("WAV without a fmt or data chunk")
    return data_size / byte_rate


def audio_duration(data: bytes, kind: str) -> float:
    """Duration in seconds of WAV (``wave``, RIFF fallback) or MP3 (``mutagen``) bytes."""
    if kind == "wav":
        try:
            with wave.open(io.BytesIO(data)) as clip:
                return clip.getnframes() / float(clip.getframerate())
        except (wave.Error, EOFError, ZeroDivisionError, struct.error):
            return _riff_wav_duration(data)
    if kind == "mp3":
        from mutagen import MutagenError
        from mutagen.mp3 import MP3

        try:
            length = MP3(io.BytesIO(data)).info.length
        except (MutagenError, ValueError, struct.error) as exc:
            raise MediaError(f"not a decodable MP3: {exc}") from exc
        if not length:
            raise MediaError("MP3 without audio frames")
        return float(length)
    raise MediaError(f"unsupported audio kind {kind!r}")


def ffmpeg_exe() -> str:
    """The ffmpeg binary that ``imageio-ffmpeg`` ships (no system ffmpeg needed)."""
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


@dataclass(frozen=True)
class RenderJob:
    """What a result video is made of; equal jobs give the same video (the cache key)."""

    image: bytes
    ext_bbox: tuple[int, int, int, int]
    ratio: str
    duration: float
    audio: bytes | None = None
    audio_kind: str | None = None
    motion: str = "normal"

    def key(self) -> str:
        digest = hashlib.sha256()
        digest.update(hashlib.sha256(self.image).digest())
        digest.update(hashlib.sha256(self.audio or b"").digest())
        digest.update(repr((self.ext_bbox, self.ratio, round(self.duration, 3), self.audio_kind, self.motion)).encode())
        return digest.hexdigest()[:32]


class Renderer:
    """Renders :class:`RenderJob` s to MP4 files under ``cache_dir``, once per distinct job.

    ``max_parallel`` bounds concurrent ffmpeg processes (the machine may have 2 cores and many keys
    running at once); identical jobs submitted concurrently wait for the first one instead of
    rendering twice.
    """

    def __init__(self, cache_dir: Path, max_parallel: int = 2) -> None:
        self.cache_dir = Path(cache_dir)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self._slots = threading.BoundedSemaphore(max(1, max_parallel))
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        self.renders = 0  # how many ffmpeg runs happened (the cache's effect is testable)

    def render(self, job: RenderJob) -> Path:
        """The MP4 for ``job``, rendering it if it isn't cached yet."""
        key = job.key()
        target = self.cache_dir / f"{key}.mp4"
        with self._locks_guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            if target.exists():
                return target
            with self._slots:
                self._render(job, target)
            with self._locks_guard:
                self.renders += 1
        return target

    def _render(self, job: RenderJob, target: Path) -> None:
        # A private scratch folder per render: emulators in other processes may share the cache folder.
        scratch = Path(tempfile.mkdtemp(prefix="render-", dir=self.cache_dir))
        try:
            self._run_ffmpeg(job, scratch)
            # Rename last: a reader never sees a half-written video under the cached name.
            (scratch / "out.mp4").replace(target)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    @staticmethod
    def _run_ffmpeg(job: RenderJob, scratch: Path) -> None:
        from PIL import Image, ImageOps

        width, height = OUTPUT_SIZES[job.ratio]
        frame_path = scratch / "frame.png"
        with Image.open(io.BytesIO(job.image)) as image:
            crop = image.convert("RGB").crop(job.ext_bbox)
        # Fit (center-crop to the aspect, then scale): 512x704 is not exactly 3:4, so a plain resize
        # would stretch the face.
        oversize = (round(width * SWAY_MARGIN / 2) * 2, round(height * SWAY_MARGIN / 2) * 2)
        ImageOps.fit(crop, oversize, Image.Resampling.LANCZOS).save(frame_path)

        # A slow sway: the output window drifts inside the slightly larger frame; "active" moves more.
        period = {"calm": 5.0, "normal": 3.5, "active": 2.0}.get(job.motion, 3.5)
        sway = (
            f"crop={width}:{height}:"
            f"x='(iw-ow)/2*(1+sin(2*PI*t/{period}))':"
            f"y='(ih-oh)/2*(1+sin(2*PI*t/{period * 1.3:.2f}+1))',format=yuv420p"
        )
        cmd = [
            ffmpeg_exe(),
            "-hide_banner",
            "-loglevel",
            "error",
            "-y",
            "-loop",
            "1",
            "-framerate",
            str(RENDER_FPS),
            "-i",
            str(frame_path),
        ]
        if job.audio is not None:
            audio_path = scratch / f"audio.{job.audio_kind or 'wav'}"
            audio_path.write_bytes(job.audio)
            cmd += ["-i", str(audio_path), "-map", "0:v", "-map", "1:a", "-c:a", "aac", "-b:a", "96k"]
        else:
            cmd += ["-an"]
        cmd += [
            "-vf",
            sway,
            "-t",
            f"{max(job.duration, 0.1):.3f}",
            "-r",
            str(RENDER_FPS),
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-tune",
            "stillimage",
            "-movflags",
            "+faststart",
            str(scratch / "out.mp4"),
        ]
        result = subprocess.run(cmd, capture_output=True, timeout=300, check=False)
        if result.returncode != 0:
            tail = result.stderr.decode(errors="replace")[-500:]
            raise MediaError(f"ffmpeg failed ({result.returncode}): {tail}")
