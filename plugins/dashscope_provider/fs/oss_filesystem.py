"""The ``oss://`` filesystem behind :mod:`dashscope_provider.fs.oss`: Alibaba Cloud OSS through ``ossfs``/``oss2``.

Airflow finds :mod:`dashscope_provider.fs.oss` through ``get_provider_info()["filesystems"]`` and calls its
``get_fs`` with the path's ``conn_id`` (as for ``s3://``), which builds the filesystem here with
:func:`make_filesystem`. The Alibaba provider
(``apache-airflow-providers-alibaba``) defines the ``oss`` connection type but registers no filesystem, so
this module fills that gap::

    path = ObjectStoragePath("oss://my-bucket/videos/row-1.mp4", conn_id="oss_default")
    path.write_bytes(data); path.read_bytes(); list(path.parent.iterdir()); path.exists(); path.unlink()
    url = path.fs.sign(path.path, expiration=3600)  # a presigned https GET URL

Connections (``AIRFLOW_CONN_<ID>`` JSON, or the UI):

* the Alibaba provider's type ``oss``: extras ``auth_type`` (``"AK"``, the only type it knows),
  ``access_key_id``, ``access_key_secret``, ``region`` (``cn-hangzhou``...) and optionally ``endpoint``;
* any other type (``generic``...): ``login`` = AccessKey ID, ``password`` = AccessKey secret, extras
  ``endpoint`` and/or ``region`` (``host`` is taken as the endpoint when there is no ``endpoint`` extra).

Optional extras for both (also accepted as ``storage_options``): ``security_token`` (STS), ``signature_version``
(``"v4"`` or ``"v1"``), ``is_path_style`` (for a custom endpoint that is a host name), ``multipart_threshold``
and ``part_size`` (bytes). The endpoint defaults to ``https://oss-<region>.aliyuncs.com``; one given without
a scheme gets ``https://``. With no connection (``conn_id=None``): ``OSS_ACCESS_KEY_ID``,
``OSS_ACCESS_KEY_SECRET``, ``OSS_SESSION_TOKEN``, ``OSS_ENDPOINT`` and ``OSS_REGION`` from the environment
(oss2's and ossfs's variables), else ossfs's own default (anonymous access).

What this adds to ``ossfs.OSSFileSystem`` (V4 signatures, atomic multipart writes, exact ranged reads,
one-HEAD ``exists``, ``sign()``, clear credential errors, ``bucket/key`` paths) and why: docs/storage.md.

Not fixed by registering the filesystem alone: an ``ObjectStoragePath`` without ``conn_id`` runs ``exists``,
``iterdir``, ``write_bytes``... on fsspec's own ``oss`` filesystem (a bare ossfs: anonymous), and
universal_pathlib parses ``oss://`` paths with ossfs's rules (no bucket: ``oss:///bucket/key``).
:func:`register_fsspec_implementation`, called before the first ``oss://`` path is made, fixes both.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import oss2
from ossfs import OSSFileSystem

from dashscope_provider.fs.oss_connection import (
    bare_region,
    connection_options,
    environment_defaults,
    region_from_endpoint,
)
from dashscope_provider.fs.oss_upload import AtomicOSSFile, MultipartUpload

if TYPE_CHECKING:
    from fsspec.callbacks import Callback
    from ossfs.file import OSSFile

log = logging.getLogger(__name__)

#: Files from this size are uploaded in parts (``put_file``); oss2's own default.
DEFAULT_MULTIPART_THRESHOLD = 10 * 1024 * 1024
#: Size of an uploaded part, and of the write buffer of a file opened for writing; oss2's own default.
DEFAULT_PART_SIZE = 10 * 1024 * 1024
#: OSS refuses parts smaller than this (but the last) when the upload completes.
MIN_PART_SIZE = 100 * 1024
MAX_PARTS = 10000
#: A V4 presigned URL is valid for at most 7 days.
V4_MAX_EXPIRATION = 7 * 24 * 3600
#: OSS error codes that mean "these credentials (or this clock) are not accepted".
_CREDENTIAL_ERRORS = frozenset(
    {"SignatureDoesNotMatch", "InvalidAccessKeyId", "RequestTimeTooSkewed", "SecurityTokenExpired"}
)


def make_filesystem(conn_id: str | None, storage_options: dict[str, Any] | None = None) -> AirflowOSSFileSystem:
    """The filesystem for ``oss://`` paths of ``conn_id`` (``None``: the environment's OSS settings).

    :param conn_id: an Airflow connection of type ``oss`` (Alibaba provider) or any type with login/password.
    :param storage_options: keyword arguments for :class:`AirflowOSSFileSystem`; they win over the connection.
    """
    options = connection_options(conn_id) if conn_id else {}
    options.update(storage_options or {})
    return AirflowOSSFileSystem(**options)


class AirflowOSSFileSystem(OSSFileSystem):
    """``ossfs.OSSFileSystem`` with V4 signatures, atomic multipart writes, ``sign()`` and clear errors.

    :param region: the bucket's region id (``cn-hangzhou``); needed for V4 signatures.
    :param signature_version: ``"v4"`` (the default when the region is known) or ``"v1"``.
    :param is_path_style: address buckets as ``endpoint/bucket/key`` (oss2 does so by itself for IP endpoints).
    :param multipart_threshold: ``put_file`` uploads files of this size and more in parts.
    :param part_size: part size of multipart uploads, and write buffer of files opened for writing.
    :param conn_id: the Airflow connection it was made from (for error messages).

    Other keyword arguments (``endpoint``, ``key``, ``secret``, ``token``, ...) go to ``OSSFileSystem``.
    """

    protocol = "oss"

    def __init__(
        self,
        *,
        region: str | None = None,
        signature_version: str | None = None,
        is_path_style: bool = False,
        multipart_threshold: int = DEFAULT_MULTIPART_THRESHOLD,
        part_size: int = DEFAULT_PART_SIZE,
        conn_id: str | None = None,
        **kwargs: Any,
    ) -> None:
        if conn_id is None:
            kwargs.setdefault("region", region or os.environ.get("OSS_REGION"))
            environment_defaults(kwargs)
            region = kwargs.pop("region")
        super().__init__(**kwargs)
        self.conn_id = conn_id
        self.region = bare_region(region) or region_from_endpoint(self._endpoint)
        version = (signature_version or ("v4" if self.region else "v1")).lower()
        if version not in ("v1", "v4"):
            raise ValueError(f"signature_version must be 'v1' or 'v4', not {signature_version!r}")
        if version == "v4" and not self.region:
            raise ValueError(f"V4 signatures need the bucket's region (e.g. 'cn-hangzhou'){self._for_conn()}")
        if version == "v1" and not signature_version and kwargs.get("key"):
            log.warning(
                "OSS%s: no region known, so V1 signatures, which OSS no longer offers to new accounts and "
                "buckets; set the 'region' extra (e.g. 'cn-hangzhou') to sign with V4",
                self._for_conn(),
            )
        self.signature_version = version
        key, secret, token = kwargs.get("key"), kwargs.get("secret"), kwargs.get("token")
        if key and version == "v4":
            self._auth = (
                oss2.StsAuth(key, secret, token, auth_version=oss2.AUTH_VERSION_4)
                if token
                else oss2.AuthV4(key, secret)
            )
        if not key:
            log.info("No OSS credentials%s: anonymous access (public buckets only)", self._for_conn())
        self.is_path_style = _as_bool(is_path_style)
        self.multipart_threshold = int(multipart_threshold)
        self.part_size = int(part_size)
        if self.part_size < MIN_PART_SIZE:
            raise ValueError(f"part_size must be at least {MIN_PART_SIZE} bytes (OSS's minimum part size)")

    @classmethod
    def _strip_protocol(cls, path: Any) -> Any:
        """``bucket/key`` for ``oss://bucket/key``, as s3fs does (ossfs keeps a leading slash: ``/bucket/key``)."""
        stripped = super()._strip_protocol(path)
        return [p.lstrip("/") for p in stripped] if isinstance(stripped, list) else stripped.lstrip("/")

    def _for_conn(self) -> str:
        return f" (connection {self.conn_id!r})" if self.conn_id else ""

    # -- the oss2 client ------------------------------------------------------------------------------

    def _get_bucket(self, bucket_name: str, connect_timeout: int | None = None) -> oss2.Bucket:
        if not self._endpoint:
            raise ValueError(f"no OSS endpoint{self._for_conn()}: set the 'endpoint' or 'region' extra")
        try:
            return oss2.Bucket(
                self._auth,
                self._endpoint,
                bucket_name,
                session=self._session,
                connect_timeout=connect_timeout,
                app_name="ossfs",
                region=self.region,
                is_path_style=self.is_path_style,
            )
        except oss2.exceptions.ClientError as err:
            raise FileNotFoundError(bucket_name) from err

    def _call_oss(
        self,
        method_name: str,
        *args: Any,
        bucket: str | None = None,
        timeout: int | None = None,
        retry: int = 3,
        **kwargs: Any,
    ) -> Any:
        """ossfs's ``_call_oss`` (retry transport errors), with this class's bucket and errors."""
        if bucket:
            service: Any = self._get_bucket(bucket, timeout)
        else:
            service = oss2.Service(
                self._auth,
                self._endpoint,
                session=self._session,
                connect_timeout=timeout,
                region=self.region,
                is_path_style=self.is_path_style,
            )
        error: oss2.exceptions.OssError | None = None
        for _ in range(retry):
            try:
                method = getattr(service, method_name, None)
                if method is None:  # ObjectIterator, BucketIterator...: module-level helpers taking the service
                    return getattr(oss2, method_name)(service, *args, **kwargs)
                return method(*args, **kwargs)
            except oss2.exceptions.RequestError as err:
                error = err
            except oss2.exceptions.OssError as err:
                error = err
                break
        assert error is not None
        key = args[0] if args and isinstance(args[0], str) and method_name != "put_object_from_file" else ""
        raise self._translate(error, method_name, bucket, key) from error

    def _translate(
        self, error: oss2.exceptions.OssError, operation: str, bucket: str | None, key: str = ""
    ) -> BaseException:
        code = getattr(error, "code", "") or ""
        status = getattr(error, "status", None)
        text = f"{code or type(error).__name__}: {getattr(error, 'message', '') or error}"
        where = f"oss://{bucket}/{key}" if bucket else self._endpoint
        if code in ("NoSuchKey", "NoSuchBucket", "NoSuchUpload") or (status == 404 and not code):
            return FileNotFoundError(errno.ENOENT, text, where)
        if code == "FileAlreadyExists":
            return FileExistsError(errno.EEXIST, text, where)
        if code in _CREDENTIAL_ERRORS or code == "AccessDenied":
            hint = (
                "check the AccessKey ID and secret, the region and signature version, and the clock"
                if code != "AccessDenied"
                else "check the RAM policy of the AccessKey for this bucket"
            )
            return PermissionError(
                errno.EACCES,
                f"OSS refused {operation} on {where}{self._for_conn()}: {text} (request id "
                f"{getattr(error, 'request_id', '')}); {hint}",
            )
        if isinstance(error, oss2.exceptions.RequestError):
            return ConnectionError(f"OSS {operation} on {where}{self._for_conn()} failed: {error}")
        return OSError(errno.EIO, f"OSS {operation} on {where}{self._for_conn()} failed: {text}")

    def _ls_dir(
        self,
        path: str,
        delimiter: str = "/",
        refresh: bool = False,
        prefix: str = "",
        connect_timeout: int | None = None,
        **kwargs: Any,
    ) -> list[dict[str, Any]]:
        # ossfs's version reads its result back from the dircache (a KeyError with use_listings_cache=False)
        # and stores prefix searches there as if they were directory listings.
        norm_path = path.strip("/")
        cacheable = bool(delimiter) and not prefix
        if cacheable and not refresh and norm_path in self.dircache:
            return self.dircache[norm_path]
        bucket_name, key = self.split_path(norm_path)
        if key:
            prefix = f"{key}/{prefix}"
        listing = self._get_object_info_list(bucket_name, prefix, delimiter, connect_timeout)
        if cacheable:
            self.dircache[norm_path] = listing
        return listing

    def _get_object_info_list(
        self, bucket_name: str, prefix: str, delimiter: str, connect_timeout: int | None
    ) -> list[dict[str, Any]]:
        # ObjectIterator pages lazily: its errors surface while iterating, outside _call_oss.
        iterator = self._call_oss(
            "ObjectIterator", prefix=prefix, delimiter=delimiter, bucket=bucket_name, timeout=connect_timeout
        )
        try:
            return [self._transfer_object_info_to_dict(bucket_name, obj) for obj in iterator]
        except oss2.exceptions.OssError as err:
            raise self._translate(err, "ListObjects", bucket_name) from err

    # -- metadata ---------------------------------------------------------------------------------------

    def info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        """One HEAD for an object; a one-key listing for a "directory"; GetBucketInfo for a bucket."""
        bucket, key = self.split_path(path)
        if not bucket:
            return {"name": "", "size": 0, "type": "directory"}
        if not key:
            self._call_oss("get_bucket_info", bucket=bucket)
            return {"name": bucket, "size": 0, "type": "directory"}
        key = key.rstrip("/")
        if not self._strip_protocol(path).endswith("/"):
            with contextlib.suppress(FileNotFoundError):
                head = self._call_oss("head_object", key, bucket=bucket)
                return {
                    "name": f"{bucket}/{key}",
                    "size": head.content_length,
                    "type": "file",
                    "LastModified": datetime.fromtimestamp(head.last_modified, tz=UTC),
                    "ETag": head.etag,
                    "ContentType": head.content_type,
                    "ObjectType": head.object_type,
                    "crc64": head.server_crc,
                }
        listing = self._call_oss("list_objects", prefix=key + "/", delimiter="/", max_keys=1, bucket=bucket)
        if listing.object_list or listing.prefix_list:
            return {"name": f"{bucket}/{key}", "size": 0, "type": "directory"}
        raise FileNotFoundError(errno.ENOENT, "No such object or prefix", f"oss://{bucket}/{key}")

    def exists(self, path: str, **kwargs: Any) -> bool:
        """Whether the bucket, object or "directory" exists. Credential errors raise, never answer ``False``."""
        try:
            self.info(path)
        except FileNotFoundError:
            return False
        return True

    # fsspec's isdir/isfile answer False on any error: a refused credential would read as "no such directory".
    def isdir(self, path: str) -> bool:
        try:
            return self.info(path)["type"] == "directory"
        except FileNotFoundError:
            return False

    def isfile(self, path: str) -> bool:
        try:
            return self.info(path)["type"] == "file"
        except FileNotFoundError:
            return False

    def ukey(self, path: str) -> str:
        """The object's ETag (ossfs downloads the object to read its CRC)."""
        return self.info(path)["ETag"]

    # -- reading ----------------------------------------------------------------------------------------

    def get_object(self, path: str, start: int, end: int) -> bytes:
        """Bytes ``[start, end)`` (fsspec's end-exclusive convention; oss2's ``byte_range`` is inclusive)."""
        if end <= start:
            return b""
        bucket, key = self.split_path(path)
        result = self._call_oss(
            "get_object",
            key,
            bucket=bucket,
            byte_range=(start, end - 1),
            headers={"x-oss-range-behavior": "standard"},
        )
        return result.read()

    def cat_file(self, path: str, start: int | None = None, end: int | None = None, **kwargs: Any) -> bytes:
        if start is None and end is None:
            bucket, key = self.split_path(path)
            return self._call_oss("get_object", key, bucket=bucket).read()
        if (start is not None and start < 0) or (end is not None and end < 0):
            size = self.size(path)
            start = max(size + start, 0) if start is not None and start < 0 else start
            end = max(size + end, 0) if end is not None and end < 0 else end
        start = start or 0
        if end is None:
            bucket, key = self.split_path(path)
            try:
                result = self._call_oss(
                    "get_object",
                    key,
                    bucket=bucket,
                    byte_range=(start, None),
                    headers={"x-oss-range-behavior": "standard"},
                )
            except OSError as exc:
                if getattr(exc.__cause__, "code", "") == "InvalidRange":
                    return b""  # start at or past the end
                raise
            return result.read()
        try:
            return self.get_object(path, start, end)
        except OSError as exc:
            if getattr(exc.__cause__, "code", "") == "InvalidRange":
                return b""
            raise

    # -- writing ----------------------------------------------------------------------------------------

    def _open(
        self,
        path: str,
        mode: str = "rb",
        block_size: int | None = None,
        autocommit: bool = True,
        cache_options: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> OSSFile:
        if mode in ("wb", "xb"):
            return AtomicOSSFile(
                self, path, mode, block_size or self.part_size, autocommit, cache_options=cache_options, **kwargs
            )
        return super()._open(path, mode, block_size, autocommit, cache_options, **kwargs)

    def pipe_file(self, path: str, value: bytes, mode: str = "overwrite", **kwargs: Any) -> None:
        with self.open(path, "xb" if mode == "create" else "wb") as handle:
            handle.write(value)

    def put_file(
        self, lpath: str, rpath: str, callback: Callback | None = None, mode: str = "overwrite", **kwargs: Any
    ) -> None:
        """Upload a local file: one ``PutObject`` below ``multipart_threshold``, else parts of ``part_size``.

        Extra keyword arguments meant for other stores (``chunksize``, ``max_concurrency``) are ignored.
        """
        if os.path.isdir(lpath):
            return
        size = os.path.getsize(lpath)
        if callback is not None:
            callback.set_size(size)
        headers = {"x-oss-forbid-overwrite": "true"} if mode == "create" else None
        bucket, key = self.split_path(rpath)
        self.invalidate_cache(self._parent(rpath))
        if size < self.multipart_threshold:
            self._call_oss("put_object_from_file", key, lpath, bucket=bucket, headers=headers)
            if callback is not None:
                callback.relative_update(size)
            return
        part_size = max(self.part_size, -(-size // MAX_PARTS))
        upload = MultipartUpload(self, bucket, key, headers)
        try:
            with open(lpath, "rb") as handle:
                while chunk := handle.read(part_size):  # one part in memory, retry-safe
                    upload.add(chunk)
                    if callback is not None:
                        callback.relative_update(len(chunk))
            upload.complete()
        except BaseException:
            upload.abort()
            raise
        finally:
            self.invalidate_cache(self._parent(rpath))

    # -- signing ----------------------------------------------------------------------------------------

    def sign(self, path: str, expiration: int = 100, **kwargs: Any) -> str:
        """A presigned URL for ``path`` (GET unless ``method=`` says otherwise), valid ``expiration`` seconds.

        Made by ``oss2.Bucket.sign_url``: V4 (``x-oss-signature``...) or V1 (``OSSAccessKeyId``, ``Expires``,
        ``Signature``) as the filesystem signs; V4 URLs are valid for at most 7 days. The scheme is the
        endpoint's (``https://`` for OSS's public endpoints).
        """
        bucket, key = self.split_path(path)
        if not bucket or not key:
            raise ValueError(f"sign() needs an object path, not {path!r}")
        expiration = int(expiration)
        if expiration <= 0:
            raise ValueError("expiration must be a positive number of seconds")
        if self.signature_version == "v4" and expiration > V4_MAX_EXPIRATION:
            raise ValueError(f"a V4 presigned URL is valid for at most {V4_MAX_EXPIRATION} s (7 days)")
        return self._get_bucket(bucket).sign_url(
            kwargs.pop("method", "GET"),
            key,
            expiration,
            headers=kwargs.pop("headers", None),
            params=kwargs.pop("params", None),
            slash_safe=True,
        )


def register_fsspec_implementation() -> None:
    """Make :class:`AirflowOSSFileSystem` fsspec's ``oss`` filesystem in this process (replacing ossfs's).

    Two things in Airflow 3.3 bypass :func:`get_fs`: an ``ObjectStoragePath`` without ``conn_id`` runs
    ``exists``, ``iterdir``, ``write_bytes``... on a filesystem fsspec builds for the protocol (a bare
    ``ossfs.OSSFileSystem``: no endpoint, anonymous, V1), and universal_pathlib parses ``oss://`` paths with
    the path rules of fsspec's ``oss`` class (ossfs's keep a leading slash, so the path has no bucket and
    prints as ``oss:///bucket/key``). After this call both use this class (credentials from ``OSS_*``).
    universal_pathlib caches its path rules per protocol, so call it before the first ``oss://`` path is made
    (at import of the package that makes them).
    """
    import fsspec

    fsspec.register_implementation("oss", AirflowOSSFileSystem, clobber=True)


def _as_bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)
