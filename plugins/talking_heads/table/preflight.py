"""Cheap checks of each row's media before anything is submitted, and the cost estimate they allow.

The service fetches and checks the media only once a task runs, after it has waited in the queue;
a row that would fail there is caught here for the price of a partial GET. Images are read up to
their header (format and size); voice clips are read whole, as they are capped at 15 MB, to learn
their duration, which is also what an emo-v1 video will last and so what it will cost.
"""

from __future__ import annotations

import io
import wave
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass

import requests
from PIL import Image, UnidentifiedImageError

from talking_heads.progress import Progress
from talking_heads.row.media import MediaSigner, kind_of
from talking_heads.table.validation import RowRequest

IMAGE_FORMATS = {"JPEG", "PNG", "BMP", "WEBP"}
MIN_SIDE, MAX_SIDE = 400, 7000
MAX_AUDIO_BYTES = 15 * 1024 * 1024
MAX_AUDIO_SECONDS = 60.0
IMAGE_HEAD_BYTES = 256 * 1024


@dataclass(frozen=True)
class MediaCheck:
    """What a URL turned out to hold; ``problem`` is None when the service would accept it."""

    url: str
    problem: str | None = None
    seconds: float | None = None


def _fetch(
    session: requests.Session, url: str, limit: int, timeout: float, signer: MediaSigner | None = None
) -> tuple[bytes, int | None]:
    """The first ``limit`` bytes of the medium and its total size if known: http(s) with a range request,
    store URLs and local files through fsspec."""
    if kind_of(url) != "http":
        if signer is None:
            raise ValueError("a store URL or local file needs the run's storage settings")
        path = signer.open(url)
        with path.open("rb") as handle:
            data = handle.read(limit)
        return data, path.stat().get("size")
    headers = {"Range": f"bytes=0-{limit - 1}"}
    with session.get(url, headers=headers, stream=True, timeout=timeout) as response:
        if response.status_code not in (200, 206):
            raise ValueError(f"HTTP {response.status_code}")
        total = response.headers.get("Content-Range", "").rpartition("/")[2] or response.headers.get("Content-Length")
        data = b""
        for chunk in response.iter_content(64 * 1024):
            data += chunk
            if len(data) >= limit:
                break
        return data[:limit], int(total) if total and total.isdigit() else None


def check_image(
    session: requests.Session, url: str, timeout: float = 10.0, signer: MediaSigner | None = None
) -> MediaCheck:
    try:
        head, _ = _fetch(session, url, IMAGE_HEAD_BYTES, timeout, signer)
    except (requests.RequestException, ValueError, OSError) as error:
        return MediaCheck(url, f"cannot be fetched ({error})")
    try:
        with Image.open(io.BytesIO(head)) as image:
            kind, (width, height) = image.format, image.size
    except (UnidentifiedImageError, OSError):
        return MediaCheck(url, "is not a JPEG, PNG, BMP or WebP image")
    if kind not in IMAGE_FORMATS:
        return MediaCheck(url, f"is a {kind} image; the service takes JPEG, PNG, BMP or WebP")
    if min(width, height) < MIN_SIDE or max(width, height) > MAX_SIDE:
        return MediaCheck(url, f"is {width}x{height} px; each side must be {MIN_SIDE}..{MAX_SIDE} px")
    return MediaCheck(url)


def audio_seconds(data: bytes) -> float | None:
    """Duration of a WAV or MP3 clip, or None if it is neither."""
    if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        try:
            with wave.open(io.BytesIO(data)) as clip:
                return clip.getnframes() / float(clip.getframerate())
        except (wave.Error, EOFError):
            return None
    from mutagen import MutagenError
    from mutagen.mp3 import MP3

    try:
        return float(MP3(io.BytesIO(data)).info.length)
    except (MutagenError, OSError, ValueError):
        return None


def check_audio(
    session: requests.Session, url: str, timeout: float = 20.0, signer: MediaSigner | None = None
) -> MediaCheck:
    try:
        data, total = _fetch(session, url, MAX_AUDIO_BYTES + 1, timeout, signer)
    except (requests.RequestException, ValueError, OSError) as error:
        return MediaCheck(url, f"cannot be fetched ({error})")
    if (total or len(data)) > MAX_AUDIO_BYTES:
        return MediaCheck(url, f"is {(total or len(data)) / 1048576:.1f} MB; the limit is 15 MB")
    seconds = audio_seconds(data)
    if seconds is None:
        return MediaCheck(url, "is not a WAV or MP3 clip")
    if seconds > MAX_AUDIO_SECONDS:
        return MediaCheck(url, f"lasts {seconds:.1f} s; the limit is 60 s", seconds)
    return MediaCheck(url, seconds=seconds)


def check_media(
    requests_: Iterable[RowRequest], *, images: bool = True, workers: int = 8, signer: MediaSigner | None = None
) -> dict[str, MediaCheck]:
    """Check every distinct audio URL, and image URL unless ``images`` is False, once; keyed by URL.

    Store URLs and local files are read through fsspec with ``signer``'s storage settings.
    """
    rows = list(requests_)
    image_urls = {r.image_url for r in rows} if images else set()
    audio = {r.audio_url for r in rows if r.audio_url}
    with requests.Session() as session, ThreadPoolExecutor(max_workers=workers) as pool:
        jobs = [pool.submit(check_image, session, u, signer=signer) for u in image_urls]
        jobs += [pool.submit(check_audio, session, u, signer=signer) for u in audio]
        progress = Progress("pre-flight: media checked", len(jobs))
        results = []
        for job in as_completed(jobs):
            results.append(job.result())
            progress.step()
        progress.finish()
    return {check.url: check for check in results}


def media_problem(request: RowRequest, checks: dict[str, MediaCheck]) -> str | None:
    """The first problem with a row's media, naming the field, or None."""
    for field, url in (("image_url", request.image_url), ("audio_url", request.audio_url)):
        check = checks.get(url) if url else None
        if check is not None and check.problem:
            return f"field '{field}': {url} {check.problem}"
    return None
