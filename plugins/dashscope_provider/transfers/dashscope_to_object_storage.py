"""Copy a DashScope result video from its pre-signed URL to any object storage (``ObjectStoragePath``).

The URL is pre-signed (it lives 24 h after the task succeeded), so the copy needs no DashScope connection
or hook: :func:`download_video` does it, :class:`DashScopeVideoToObjectStorageOperator` runs it as a
task.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import requests
from airflow.sdk import BaseOperator, Context, ObjectStoragePath

from dashscope_provider.exceptions import DashScopeConnectionError, DashScopeError, DashScopeResultExpired
from dashscope_provider.retry import RetryPolicy

log = logging.getLogger(__name__)

DEFAULT_CHUNK_SIZE = 8 * 1024 * 1024
#: Per-request ``(connect, read)`` timeout of a download, in seconds.
DEFAULT_TIMEOUT = (10.0, 60.0)
#: Part size of multipart uploads to S3-compatible stores (S3's minimum part is 5 MiB).
UPLOAD_PART_SIZE = 8 * 1024 * 1024
_S3_PROTOCOLS = frozenset({"s3", "s3a", "s3n"})
# Object stores have no directories to create (and "creating" a bucket is not ours to do).
_OBJECT_STORE_PROTOCOLS = frozenset(
    {"s3", "s3a", "s3n", "gs", "gcs", "abfs", "abfss", "az", "adl", "oss", "r2", "wasb", "wasbs"}
)


@dataclass(frozen=True)
class StoredVideo:
    """A stored result video.

    :param uri: where it is stored (a plain URL or local path, without any conn id).
    :param size_bytes: its size.
    :param sha256: its SHA-256 (hex).
    """

    uri: str
    size_bytes: int
    sha256: str

    def to_dict(self) -> dict[str, Any]:
        """``{"uri", "size_bytes", "sha256"}``."""
        return asdict(self)


def safe_url(url: str) -> str:
    """The URL without its query string: pre-signed URLs carry their signature there."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def download_video(
    video_url: str,
    destination: ObjectStoragePath | str,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    *,
    conn_id: str | None = None,
    retry_policy: RetryPolicy | None = None,
    timeout: Any = DEFAULT_TIMEOUT,
    logger: logging.Logger | Any = None,
) -> StoredVideo:
    """Copy a result video from its pre-signed URL to ``destination``, streaming.

    The video is never held in memory. A partial file never appears under ``destination``: on a
    local file system the bytes go to a hidden sibling that is renamed into place once complete; for
    other stores they go to a local temporary file, which is uploaded once complete (an object store
    publishes an object only when its single PUT or multipart upload completes). The byte count is
    checked against ``Content-Length``. Transient failures (429, 5xx, connection errors, truncated bodies)
    are retried. Uses no DashScope credential: the URL is pre-signed.

    :param video_url: the task's ``video_url``.
    :param destination: where to store it: an :class:`~airflow.sdk.ObjectStoragePath`, or any fsspec
        URL or local path.
    :param chunk_size: bytes per read.
    :param conn_id: the connection of the destination store when ``destination`` is a string.
    :param retry_policy: attempts and back-off (default :class:`~dashscope_provider.retry.RetryPolicy()`).
    :param timeout: per-request ``requests`` timeout, ``(connect, read)`` seconds.
    :param logger: where to log (default: this module's logger).
    :raises DashScopeResultExpired: the URL answers 403/404 (expired after 24 h, or invalid).
    """
    logger = logger or log
    policy = retry_policy or RetryPolicy()
    dest = (
        destination
        if isinstance(destination, ObjectStoragePath)
        else ObjectStoragePath(str(destination), conn_id=conn_id)
    )
    url_for_logs = safe_url(video_url)
    local_path = _local_path(dest)
    tmp = _temporary_file(local_path)
    try:
        size, digest = policy.retrying("download", logger, idempotent=True)(
            _fetch_to_file, video_url, url_for_logs, tmp, chunk_size, timeout
        )
        _publish(tmp, dest, local_path, size)
    finally:
        tmp.unlink(missing_ok=True)
    # The plain URL (``s3://bucket/key``, a local path...): str(dest) would embed the conn id.
    uri = f"{dest.protocol}://{dest.path}" if dest.protocol else dest.path
    logger.info("Stored %s (%d bytes, sha256 %s) from %s", uri, size, digest, url_for_logs)
    return StoredVideo(uri=uri, size_bytes=size, sha256=digest)


def _temporary_file(local_path: Path | None) -> Path:
    """An empty temporary file for the bytes: beside ``local_path`` (hidden), or in the temp dir for a store."""
    if local_path is not None:
        local_path.parent.mkdir(parents=True, exist_ok=True)
        # Same directory, so the final rename is atomic and never crosses file systems.
        fd, tmp_name = tempfile.mkstemp(prefix=f".{local_path.name}.", suffix=".part", dir=local_path.parent)
    else:
        fd, tmp_name = tempfile.mkstemp(prefix="dashscope-video-", suffix=".part")
    os.close(fd)
    return Path(tmp_name)


def _publish(tmp: Path, dest: ObjectStoragePath, local_path: Path | None, size: int) -> None:
    """Make the complete file ``tmp`` appear at ``dest`` at once: a rename on a local disk, else one upload
    (checked against ``size``)."""
    if local_path is not None:
        os.replace(tmp, local_path)
        return
    _upload(tmp, dest)
    stored = dest.fs.size(dest.path)
    if stored is not None and int(stored) != size:
        raise DashScopeError(f"{dest} holds {stored} bytes after upload, expected {size}")


def _local_path(dest: ObjectStoragePath) -> Path | None:
    from fsspec.implementations.local import LocalFileSystem

    return Path(dest.path) if isinstance(dest.fs, LocalFileSystem) else None


def _upload(tmp: Path, dest: ObjectStoragePath) -> None:
    if dest.protocol not in _OBJECT_STORE_PROTOCOLS:
        parent = dest.fs._parent(dest.path)
        if parent:
            dest.fs.makedirs(parent, exist_ok=True)
    # s3fs would upload 10 parts of 50 MiB at once, holding them all in memory (over 1 GB for a 500 MB
    # video); small parts, two at a time, keep memory flat whatever the size. The multipart upload is
    # completed only when every part is in (and aborted on failure), so the object appears whole or
    # not at all.
    extra = {"chunksize": UPLOAD_PART_SIZE, "max_concurrency": 2} if dest.protocol in _S3_PROTOCOLS else {}
    dest.fs.put_file(str(tmp), dest.path, **extra)


def _fetch_to_file(video_url: str, url_for_logs: str, tmp: Path, chunk_size: int, timeout: Any) -> tuple[int, str]:
    """One download attempt into ``tmp`` (truncated first); returns (bytes, sha256 hex)."""
    # A bare session on purpose: no credential of any kind goes to the storage host.
    with requests.Session() as session:
        try:
            with session.get(
                video_url, stream=True, timeout=timeout, headers={"Accept-Encoding": "identity"}
            ) as response:
                status = response.status_code
                if status in (403, 404):
                    raise DashScopeResultExpired(status, url_for_logs, _storage_error(response))
                if status == 429 or status >= 500:
                    raise DashScopeConnectionError(f"HTTP {status} downloading {url_for_logs}")
                if not 200 <= status < 300:
                    raise DashScopeError(f"HTTP {status} downloading {url_for_logs}")
                expected = _content_length(response)
                digest = hashlib.sha256()
                size = 0
                # Hashing runs beside the copy (hashlib releases the GIL on large buffers), one chunk
                # behind it, so the digest costs no throughput; chunks stay in order.
                with tmp.open("wb") as out, ThreadPoolExecutor(1, thread_name_prefix="sha256") as hasher:
                    hashed: Future[None] | None = None
                    for chunk in response.iter_content(chunk_size=chunk_size):
                        if hashed is not None:
                            hashed.result()
                        hashed = hasher.submit(digest.update, chunk)
                        out.write(chunk)
                        size += len(chunk)
                    if hashed is not None:
                        hashed.result()
        except requests.RequestException as exc:
            raise DashScopeConnectionError(f"downloading {url_for_logs}: {type(exc).__name__}") from exc
    if expected is not None and size != expected:
        raise DashScopeConnectionError(f"truncated download of {url_for_logs}: {size} of {expected} bytes")
    return size, digest.hexdigest()


def _content_length(response: requests.Response) -> int | None:
    encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
    length = response.headers.get("Content-Length")
    # A compressed body's length is not the length of the bytes iter_content yields.
    if length is None or encoding not in ("", "identity"):
        return None
    try:
        return int(length)
    except ValueError:
        return None


def _storage_error(response: requests.Response) -> str | None:
    """``Code: Message`` from an OSS/S3-style XML error body, if any."""
    try:
        text = response.raw.read(4096, decode_content=True).decode("utf-8", "replace")
    except Exception:
        return None
    code = re.search(r"<Code>([^<]{1,100})</Code>", text)
    message = re.search(r"<Message>([^<]{1,300})</Message>", text)
    parts = [m.group(1) for m in (code, message) if m]
    return ": ".join(parts) or None


class DashScopeVideoToObjectStorageOperator(BaseOperator):
    """Copy a result video from its pre-signed URL to any storage; return ``{"uri", "size_bytes", "sha256"}``.

    Streams (never holds the video in memory), checks the size against ``Content-Length``, and never
    leaves a partial file under ``destination`` (see :func:`download_video`). Needs no DashScope
    connection: the URL is pre-signed. An expired URL (403/404) raises
    :class:`~dashscope_provider.exceptions.DashScopeResultExpired`.

    :param video_url: the task's ``video_url`` (templated).
    :param destination: where to write the video (templated): a local path or any fsspec URL
        (``file://``, ``s3://``, ``gs://``, ``oss://``...).
    :param conn_id: the Airflow connection of the destination store (templated), passed to
        :class:`~airflow.sdk.ObjectStoragePath`; None for local paths or ambient credentials.
    :param chunk_size: bytes per read while streaming.
    :param retry_policy: attempts and back-off of the download (default ``RetryPolicy()``).
    """

    template_fields: Sequence[str] = ("video_url", "destination", "conn_id")
    ui_color = "#ff6a00"

    def __init__(
        self,
        *,
        video_url: str,
        destination: str,
        conn_id: str | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        retry_policy: RetryPolicy | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.video_url = video_url
        self.destination = destination
        self.conn_id = conn_id
        self.chunk_size = chunk_size
        self.retry_policy = retry_policy or RetryPolicy()

    def execute(self, context: Context) -> dict[str, Any]:
        destination = ObjectStoragePath(str(self.destination), conn_id=self.conn_id or None)
        stored = download_video(
            self.video_url, destination, self.chunk_size, retry_policy=self.retry_policy, logger=self.log
        )
        return stored.to_dict()
