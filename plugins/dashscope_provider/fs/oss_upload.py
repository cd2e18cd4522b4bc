"""Atomic writes to OSS: one ``PutObject``, or a multipart upload completed on close and aborted on failure."""

from __future__ import annotations

import io
import logging
from typing import Any, Protocol

from oss2.models import PartInfo
from ossfs.file import OSSFile

log = logging.getLogger(__name__)


class OSSCalls(Protocol):
    """What an upload needs of its filesystem (:class:`~dashscope_provider.fs.oss_filesystem.AirflowOSSFileSystem`,
    which imports this module): its OSS calls, with their retries, and its path split."""

    def _call_oss(self, method: str, *args: Any, **kwargs: Any) -> Any: ...

    def split_path(self, path: str) -> tuple[str, str]: ...


class MultipartUpload:
    """One multipart upload: parts added in order, completed, or aborted (best effort) on failure."""

    def __init__(self, fs: OSSCalls, bucket: str, key: str, headers: dict[str, str] | None) -> None:
        self.fs, self.bucket, self.key, self.headers = fs, bucket, key, headers
        self.upload_id: str = fs._call_oss("init_multipart_upload", key, bucket=bucket, headers=headers).upload_id
        self.parts: list[PartInfo] = []

    def add(self, data: bytes) -> None:
        number = len(self.parts) + 1
        result = self.fs._call_oss("upload_part", self.key, self.upload_id, number, data, bucket=self.bucket)
        self.parts.append(PartInfo(number, result.etag, size=len(data), part_crc=result.crc))

    def complete(self) -> None:
        self.fs._call_oss(
            "complete_multipart_upload", self.key, self.upload_id, self.parts, bucket=self.bucket, headers=self.headers
        )

    def abort(self) -> None:
        try:
            self.fs._call_oss("abort_multipart_upload", self.key, self.upload_id, bucket=self.bucket, retry=1)
        except Exception:
            log.warning("Could not abort multipart upload %s of oss://%s/%s", self.upload_id, self.bucket, self.key)


class AtomicOSSFile(OSSFile):
    """A file opened ``wb``/``xb``: one ``PutObject``, or a multipart upload completed on close.

    The buffer holds at most one part (``blocksize``, the filesystem's ``part_size``). ``xb`` sends
    ``x-oss-forbid-overwrite: true``. Leaving a ``with`` block on an exception aborts: nothing is published.
    """

    fs: OSSCalls

    def _initiate_upload(self) -> None:
        self._upload: MultipartUpload | None = None

    def _headers(self) -> dict[str, str] | None:
        return {"x-oss-forbid-overwrite": "true"} if self.mode == "xb" else None

    def _upload_chunk(self, final: bool = False) -> bool:
        bucket, key = self.fs.split_path(self.path)
        data = self.buffer.getvalue()
        try:
            if final and self._upload is None:
                self.fs._call_oss("put_object", key, data, bucket=bucket, headers=self._headers())
                return True
            if self._upload is None:
                self._upload = MultipartUpload(self.fs, bucket, key, self._headers())
            sent = 0
            while len(data) - sent >= self.blocksize or (final and sent < len(data)):
                chunk = data[sent : sent + self.blocksize]
                self._upload.add(chunk)
                sent += len(chunk)
            if final:
                self._upload.complete()
                return True
        except BaseException:
            self.discard()
            self.closed = True  # so that close() (or __del__) cannot publish what is left
            raise
        # Keep the tail (less than a part) for the next flush; fsspec resets the buffer only on True.
        self.offset += sent
        self.buffer = io.BytesIO()
        self.buffer.write(data[sent:])
        return False

    def discard(self) -> None:
        upload = getattr(self, "_upload", None)
        if upload is not None:
            upload.abort()
            self._upload = None
        self.buffer = io.BytesIO()

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is not None and not self.closed:
            self.discard()
            self.closed = True
            return
        self.close()
