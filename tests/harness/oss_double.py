"""A test double standing in for Alibaba Cloud OSS (Object Storage Service): a strict, in-memory server.

No OSS server can run in the test environment, so this is a real ``http.server`` on 127.0.0.1 that speaks
the part of the OSS REST API that ``ossfs``/``oss2`` use for reading, writing, listing, deleting and
signing objects. It is **not** Alibaba Cloud OSS and makes no claim to be complete; what it does implement,
it implements as the OSS API reference describes, and it refuses what it does not implement (``501
NotImplemented``) instead of answering something plausible.

Implemented (objects live in memory, per bucket):

* ``GET /`` ListBuckets; ``GET /?bucketInfo`` GetBucketInfo;
* ``GET /`` ListObjects (V1: ``prefix``, ``delimiter``, ``marker``, ``max-keys``, ``encoding-type=url``) and
  ``GET /?list-type=2`` ListObjectsV2 (``continuation-token``, ``start-after``);
* ``PUT`` PutObject (``Content-MD5`` checked when sent, ``x-oss-forbid-overwrite``), CopyObject
  (``x-oss-copy-source``), ``POST ?append&position=`` AppendObject;
* ``GET`` GetObject, with ``Range`` (``x-oss-range-behavior: standard`` or the legacy behaviour) and the
  ``response-*`` overrides; ``HEAD`` HeadObject and ``HEAD ?objectMeta`` GetObjectMeta (errors in the
  ``x-oss-err`` header, as OSS does for bodiless answers);
* ``DELETE`` DeleteObject; ``POST /?delete`` DeleteMultipleObjects (``Content-MD5`` required);
* ``POST ?uploads`` InitiateMultipartUpload, ``PUT ?partNumber&uploadId`` UploadPart,
  ``POST ?uploadId`` CompleteMultipartUpload (part order, ETags, the 100 KB minimum part size of every part
  but the last, ``x-oss-forbid-overwrite``), ``DELETE ?uploadId`` AbortMultipartUpload.

Every answer carries ``x-oss-request-id``, and object answers the ``x-oss-hash-crc64ecma`` the client checks.

Every request must be signed, and the signature is **checked** (there is no anonymous access):

* V1 header signature: ``Authorization: OSS <AccessKeyId>:<Signature>``, base64 HMAC-SHA1 over
  ``VERB\\nContent-MD5\\nContent-Type\\nDate\\n`` + the canonicalized ``x-oss-*`` headers + the canonicalized
  resource ``/bucket/key`` with its sub-resources (``?uploadId=...&partNumber=...``); ``Date`` within 15
  minutes of the server's clock;
* V1 presigned URL: ``OSSAccessKeyId``, ``Expires`` (unix time, in place of ``Date``), ``Signature``;
* V4 header signature: ``Authorization: OSS4-HMAC-SHA256 Credential=<ak>/<date>/<region>/oss/aliyun_v4_request,
  [AdditionalHeaders=...,] Signature=<hex>``, with ``x-oss-date`` and ``x-oss-content-sha256``; the signing key
  is derived from ``aliyun_v4<secret>``, the date, the region and ``oss``;
* V4 presigned URL: ``x-oss-signature-version``, ``x-oss-credential``, ``x-oss-date``, ``x-oss-expires``
  (at most 7 days), ``x-oss-signature``.

A wrong signature gets ``403 SignatureDoesNotMatch`` (with the ``StringToSign`` the server computed, as OSS
sends it); an unknown key id ``403 InvalidAccessKeyId``; an expired URL ``403 AccessDenied`` "Request has
expired."; a clock too far off ``403 RequestTimeTooSkewed``; no signature at all ``403 AccessDenied`` (every
bucket is private). A bucket that does not exist is ``404 NoSuchBucket`` before any signature check, as on
OSS. A V4 signature scoped to another region than the double's gets ``400 InvalidArgument`` (the double's
choice). :meth:`OSSDouble.advance` moves the server's clock, to expire URLs without sleeping;
:meth:`OSSDouble.requests` lists what was asked, how it was signed and the answer, for assertions.

Addressing: OSS itself uses virtual-hosted URLs (``https://bucket.oss-cn-hangzhou.aliyuncs.com/key``). The
double serves both styles. A request whose ``Host`` is an IP address, ``localhost`` or the double's own
``service_host`` is path style (``/bucket/key``): that is what ``oss2`` sends when the endpoint is an IP
address such as ``http://127.0.0.1:PORT`` (it switches to path style by itself for IP endpoints), so tests
need no DNS. A request whose ``Host`` is ``<bucket>.<service_host>`` is virtual-hosted, the bucket taken
from the host name, as real OSS does; tests exercise it by sending such a ``Host`` header to 127.0.0.1.
"""

from __future__ import annotations

import base64
import calendar
import hashlib
import hmac
import ipaddress
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from email.utils import formatdate, parsedate_to_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit
from xml.etree import ElementTree

import crcmod
from dashscope_emulator.fileserver import read_chunked

#: The sub-resources that are part of a V1 signature's canonicalized resource (OSS API reference,
#: "Include signatures in the Authorization header"). Query parameters not listed here (``prefix``,
#: ``marker``, ``max-keys``, ``list-type``...) are not signed in V1.
_V1_SUBRESOURCE_NAMES = """
    acl uploads location cors logging website referer lifecycle delete append tagging objectMeta uploadId
    partNumber security-token position img style styleName replication replicationProgress replicationLocation
    cname bucketInfo comp qos live status vod startTime endTime symlink x-oss-process response-content-type
    x-oss-traffic-limit response-content-language response-expires response-cache-control
    response-content-disposition response-content-encoding udf udfName udfImage udfId udfImageDesc udfApplication
    udfApplicationLog restore callback callback-var qosInfo policy stat encryption versions versioning versionId
    requestPayment x-oss-request-payer sequential inventory inventoryId continuation-token asyncFetch worm wormId
    wormExtend withHashContext x-oss-enable-md5 x-oss-enable-sha1 x-oss-enable-sha256 x-oss-hash-ctx x-oss-md5-ctx
    transferAcceleration regionList cloudboxes x-oss-ac-source-ip x-oss-ac-subnet-mask x-oss-ac-vpc-id
    x-oss-ac-forward-allow metaQuery resourceGroup rtc accessPoint accessPointPolicy httpsConfig"""
V1_SUBRESOURCES = frozenset(_V1_SUBRESOURCE_NAMES.split())
#: Headers that a V4 signature always covers when present, besides every ``x-oss-*`` header.
V4_DEFAULT_SIGNED_HEADERS = frozenset({"content-type", "content-md5"})
V4_ALGORITHM = "OSS4-HMAC-SHA256"
V4_MAX_EXPIRES = 7 * 24 * 3600
MAX_CLOCK_SKEW = 15 * 60
MIN_PART_SIZE = 100 * 1024
MAX_PART_NUMBER = 10000
MAX_KEYS_LIMIT = 1000
_PRESIGN_V1_PARAMS = frozenset({"OSSAccessKeyId", "Expires", "Signature"})

#: CRC-64/XZ (ECMA-182, reflected), the ``x-oss-hash-crc64ecma`` of OSS.
_crc64 = crcmod.mkCrcFun(0x142F0E1EBA9EA3693, initCrc=0, xorOut=0xFFFFFFFFFFFFFFFF, rev=True)


class OSSError(Exception):
    """An OSS error answer: HTTP status, ``Code``, ``Message`` and extra ``<Error>`` fields."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        headers: Mapping[str, str] | None = None,
        **details: str,
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})
        self.details = details


@dataclass
class StoredObject:
    data: bytes
    content_type: str
    etag: str  # without quotes, as OSS prints it: upper-case hex, "-N" for a multipart object
    object_type: str  # Normal, Multipart or Appendable
    last_modified: float
    meta: dict[str, str] = field(default_factory=dict)

    @property
    def crc64(self) -> str:
        return str(_crc64(self.data))


@dataclass
class MultipartUpload:
    bucket: str
    key: str
    content_type: str
    meta: dict[str, str]
    forbid_overwrite: bool
    parts: dict[int, tuple[str, bytes]] = field(default_factory=dict)  # number -> (etag, data)


@dataclass
class Bucket:
    name: str
    created: float
    objects: dict[str, StoredObject] = field(default_factory=dict)


@dataclass
class RequestRecord:
    """One request as the double saw it, for assertions."""

    method: str
    bucket: str
    key: str
    params: dict[str, str]
    auth: str  # how it claimed to be signed: "v1", "v4", "v1-url", "v4-url", "other" or "none"
    status: int
    code: str | None  # the error code, if any


@dataclass
class _Request:
    method: str
    bucket: str
    key: str
    params: dict[str, str]
    raw_query: list[tuple[str, str]]
    headers: dict[str, str]  # lower-cased names
    body: bytes


def _md5_hex(data: bytes) -> str:
    return hashlib.md5(data).hexdigest().upper()


def _iso8601(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(ts))


def _xml(root: ElementTree.Element) -> bytes:
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + ElementTree.tostring(root, encoding="utf-8")


def _sub(parent: ElementTree.Element, tag: str, text: Any = None) -> ElementTree.Element:
    node = ElementTree.SubElement(parent, tag)
    if text is not None:
        node.text = str(text)
    return node


def _v4_encode(text: str, keep_slash: bool) -> str:
    """URI-encode as V4 signing does: unreserved characters kept, everything else ``%XX`` (upper case)."""
    return quote(text, safe="-_.~/" if keep_slash else "-_.~")


def _is_ip_or_localhost(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


class OSSDouble:
    """The server. Use as a context manager, or :meth:`start` / :meth:`stop`.

    :param credentials: AccessKey ID -> AccessKey secret pairs the server accepts.
    :param buckets: buckets that exist from the start.
    :param region: the region V4 signatures must be scoped to (``cn-hangzhou``...).
    :param service_host: the host name the double answers to as its endpoint; ``<bucket>.<service_host>``
        selects the bucket virtual-hosted style.
    """

    def __init__(
        self,
        credentials: Mapping[str, str],
        buckets: Iterable[str] = (),
        region: str = "cn-hangzhou",
        service_host: str = "oss-test.aliyuncs.test",
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.credentials = dict(credentials)
        self.region = region
        self.service_host = service_host
        self._host, self._port = host, port
        self._lock = threading.RLock()
        self._buckets = {name: Bucket(name, time.time()) for name in buckets}
        self._uploads: dict[str, MultipartUpload] = {}
        self._log: list[RequestRecord] = []
        self._clock_offset = 0.0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- life cycle -----------------------------------------------------------------------------------

    def start(self) -> OSSDouble:
        double = self

        class Handler(_Handler):
            server_double = double

        self._server = ThreadingHTTPServer((self._host, self._port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), name="oss-double", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> OSSDouble:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None, "not started"
        return self._server.server_address[1]

    @property
    def endpoint(self) -> str:
        """``http://127.0.0.1:PORT``: the endpoint to give the client (path-style addressing)."""
        return f"http://{self._host}:{self.port}"

    # -- test helpers -----------------------------------------------------------------------------------

    def now(self) -> float:
        return time.time() + self._clock_offset

    def advance(self, seconds: float) -> None:
        """Move the server's clock forward (expires presigned URLs without sleeping)."""
        self._clock_offset += seconds

    def create_bucket(self, name: str) -> None:
        with self._lock:
            self._buckets.setdefault(name, Bucket(name, self.now()))

    def put(self, bucket: str, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        """Store an object directly (seeding a test), as a Normal object."""
        with self._lock:
            self._buckets[bucket].objects[key] = StoredObject(data, content_type, _md5_hex(data), "Normal", self.now())

    def get(self, bucket: str, key: str) -> StoredObject | None:
        with self._lock:
            return self._buckets[bucket].objects.get(key)

    def keys(self, bucket: str) -> list[str]:
        with self._lock:
            return sorted(self._buckets[bucket].objects)

    def uploads(self) -> list[MultipartUpload]:
        """Multipart uploads initiated and neither completed nor aborted."""
        with self._lock:
            return list(self._uploads.values())

    def requests(self) -> list[RequestRecord]:
        with self._lock:
            return list(self._log)

    def clear_log(self) -> None:
        with self._lock:
            self._log.clear()

    # -- authentication ---------------------------------------------------------------------------------

    def _secret(self, access_key_id: str) -> str:
        secret = self.credentials.get(access_key_id)
        if secret is None:
            raise OSSError(
                403,
                "InvalidAccessKeyId",
                "The OSS Access Key Id you provided does not exist in our records.",
                OSSAccessKeyId=access_key_id,
            )
        return secret

    @staticmethod
    def _auth_kind(req: _Request) -> str:
        """How the request claims to be signed: ``v1``, ``v4``, ``v1-url``, ``v4-url``, ``other`` or ``none``."""
        authorization = req.headers.get("authorization")
        if authorization is not None:
            if authorization.startswith(V4_ALGORITHM + " "):
                return "v4"
            return "v1" if authorization.startswith("OSS ") else "other"
        if "Signature" in req.params:
            return "v1-url"
        return "v4-url" if "x-oss-signature" in req.params else "none"

    def _authenticate(self, req: _Request, kind: str) -> None:
        """Check the request's signature, or raise ``OSSError`` as OSS would."""
        authorization = req.headers.get("authorization", "")
        if kind == "v4":
            self._check_v4(req, authorization[len(V4_ALGORITHM) + 1 :], presigned=False)
        elif kind == "v1":
            self._check_v1_header(req, authorization[4:])
        elif kind == "v1-url":
            self._check_v1_url(req)
        elif kind == "v4-url":
            self._check_v4(req, None, presigned=True)
        elif kind == "other":
            raise OSSError(400, "InvalidArgument", "Authorization header is invalid.", Authorization=authorization)
        else:
            raise OSSError(403, "AccessDenied", "You have no right to access this object because of bucket acl.")

    def _check_clock(self, when: float) -> None:
        if abs(self.now() - when) > MAX_CLOCK_SKEW:
            raise OSSError(
                403,
                "RequestTimeTooSkewed",
                "The difference between the request time and the current time is too large.",
                RequestTime=formatdate(when, usegmt=True),
                ServerTime=formatdate(self.now(), usegmt=True),
            )

    def _v1_string_to_sign(self, req: _Request, date: str) -> str:
        oss_headers = sorted((k, v.strip()) for k, v in req.headers.items() if k.startswith("x-oss-"))
        resource = f"/{req.bucket}/{req.key}" if req.bucket else "/"
        subresources = sorted((k, v) for k, v in req.params.items() if k in V1_SUBRESOURCES)
        if subresources:
            resource += "?" + "&".join(f"{k}={v}" if v else k for k, v in subresources)
        return "\n".join(
            [
                req.method,
                req.headers.get("content-md5", ""),
                req.headers.get("content-type", ""),
                date,
                "".join(f"{k}:{v}\n" for k, v in oss_headers) + resource,
            ]
        )

    def _v1_verify(self, access_key_id: str, signature: str, string_to_sign: str) -> None:
        secret = self._secret(access_key_id)
        digest = hmac.new(secret.encode(), string_to_sign.encode("utf-8"), hashlib.sha1).digest()
        expected = base64.b64encode(digest).decode()
        if not hmac.compare_digest(expected, signature):
            raise _signature_mismatch(access_key_id, signature, string_to_sign)

    def _check_v1_header(self, req: _Request, credential: str) -> None:
        access_key_id, sep, signature = credential.partition(":")
        if not sep or not access_key_id or not signature:
            raise OSSError(400, "InvalidArgument", "Authorization header is invalid.")
        date = req.headers.get("x-oss-date") or req.headers.get("date")
        if not date:
            raise OSSError(403, "AccessDenied", "Date header not specified.")
        try:
            when = parsedate_to_datetime(date).timestamp()
        except (TypeError, ValueError):
            raise OSSError(403, "AccessDenied", f"Invalid date: {date}") from None
        self._check_clock(when)
        self._v1_verify(access_key_id, signature, self._v1_string_to_sign(req, date))

    def _check_v1_url(self, req: _Request) -> None:
        missing = [p for p in ("OSSAccessKeyId", "Expires") if not req.params.get(p)]
        if missing:
            raise OSSError(403, "AccessDenied", f"Missing parameter {missing[0]} in the signed URL.")
        expires = req.params["Expires"]
        if not expires.isdigit():
            raise OSSError(403, "AccessDenied", f"Invalid Expires: {expires}")
        if self.now() > int(expires):
            raise OSSError(
                403, "AccessDenied", "Request has expired.", Expires=expires, ServerTime=_iso8601(self.now())
            )
        self._v1_verify(req.params["OSSAccessKeyId"], req.params["Signature"], self._v1_string_to_sign(req, expires))

    def _check_v4(self, req: _Request, authorization: str | None, *, presigned: bool) -> None:
        if presigned:
            if req.params.get("x-oss-signature-version") != V4_ALGORITHM:
                raise OSSError(400, "InvalidArgument", "x-oss-signature-version must be OSS4-HMAC-SHA256.")
            fields = {
                "Credential": req.params.get("x-oss-credential", ""),
                "Signature": req.params.get("x-oss-signature", ""),
                "AdditionalHeaders": req.params.get("x-oss-additional-headers", ""),
            }
            date_time = req.params.get("x-oss-date", "")
        else:
            assert authorization is not None
            fields = {}
            for item in authorization.split(","):
                name, sep, value = item.strip().partition("=")
                if not sep:
                    raise OSSError(400, "InvalidArgument", "Authorization header is invalid.")
                fields[name] = value
            date_time = req.headers.get("x-oss-date", "")
        credential, signature = fields.get("Credential", ""), fields.get("Signature", "")
        parts = credential.split("/")
        if len(parts) != 5 or parts[3] != "oss" or parts[4] != "aliyun_v4_request" or not signature:
            raise OSSError(400, "InvalidArgument", f"Invalid credential: {credential}")
        access_key_id, scope_date, scope_region = parts[0], parts[1], parts[2]
        try:
            when = calendar.timegm(time.strptime(date_time, "%Y%m%dT%H%M%SZ"))
        except ValueError:
            raise OSSError(403, "AccessDenied", f"Invalid x-oss-date: {date_time!r}") from None
        if scope_date != date_time[:8]:
            raise OSSError(400, "InvalidArgument", "The date in the credential scope does not match x-oss-date.")
        if scope_region != self.region:
            raise OSSError(
                400,
                "InvalidArgument",
                f"Invalid signing region in Authorization header: {scope_region!r} (the bucket is in {self.region!r}).",
            )
        if presigned:
            expires = req.params.get("x-oss-expires", "")
            if not expires.isdigit() or not 0 < int(expires) <= V4_MAX_EXPIRES:
                raise OSSError(400, "InvalidArgument", f"x-oss-expires must be 1..{V4_MAX_EXPIRES}: {expires!r}")
            if self.now() > when + int(expires):
                raise OSSError(403, "AccessDenied", "Request has expired.", ServerTime=_iso8601(self.now()))
            payload_hash = "UNSIGNED-PAYLOAD"
        else:
            self._check_clock(when)
            payload_hash = req.headers.get("x-oss-content-sha256", "")
            if not payload_hash:
                raise OSSError(400, "InvalidArgument", "Missing x-oss-content-sha256 header.")
            if payload_hash != "UNSIGNED-PAYLOAD" and payload_hash != hashlib.sha256(req.body).hexdigest():
                raise OSSError(400, "InvalidArgument", "x-oss-content-sha256 does not match the body.")
        additional = sorted(h.lower() for h in fields.get("AdditionalHeaders", "").split(";") if h)
        signed = {
            k: v.strip()
            for k, v in req.headers.items()
            if k.startswith("x-oss-") or k in V4_DEFAULT_SIGNED_HEADERS or k in additional
        }
        uri = _v4_encode(f"/{req.bucket}/{req.key}" if req.bucket else "/", keep_slash=True)
        query = sorted((_v4_encode(k, False), _v4_encode(v, False)) for k, v in req.raw_query if k != "x-oss-signature")
        canonical_request = "\n".join(
            [
                req.method,
                uri,
                "&".join(f"{k}={v}" if v else k for k, v in query),
                "".join(f"{k}:{signed[k]}\n" for k in sorted(signed)),
                ";".join(additional),
                payload_hash,
            ]
        )
        scope = f"{scope_date}/{scope_region}/oss/aliyun_v4_request"
        string_to_sign = "\n".join(
            [V4_ALGORITHM, date_time, scope, hashlib.sha256(canonical_request.encode("utf-8")).hexdigest()]
        )
        key = ("aliyun_v4" + self._secret(access_key_id)).encode()
        for part in (scope_date, scope_region, "oss", "aliyun_v4_request"):
            key = hmac.new(key, part.encode(), hashlib.sha256).digest()
        expected = hmac.new(key, string_to_sign.encode("utf-8"), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, signature):
            raise _signature_mismatch(access_key_id, signature, string_to_sign, CanonicalRequest=canonical_request)

    # -- operations -------------------------------------------------------------------------------------

    def _handle(self, req: _Request) -> tuple[int, dict[str, str], bytes]:
        with self._lock:
            if not req.bucket:
                if req.method == "GET" and not req.params:
                    return self._list_buckets()
                raise _not_implemented(req)
            bucket = self._buckets.get(req.bucket)
            if bucket is None:
                raise OSSError(404, "NoSuchBucket", "The specified bucket does not exist.", BucketName=req.bucket)
            if not req.key:
                return self._bucket_operation(req, bucket)
            return self._object_operation(req, bucket)

    def _list_buckets(self) -> tuple[int, dict[str, str], bytes]:
        root = ElementTree.Element("ListAllMyBucketsResult")
        owner = _sub(root, "Owner")
        _sub(owner, "ID", "1234567890")
        _sub(owner, "DisplayName", "1234567890")
        buckets = _sub(root, "Buckets")
        for bucket in sorted(self._buckets.values(), key=lambda b: b.name):
            node = _sub(buckets, "Bucket")
            _sub(node, "CreationDate", _iso8601(bucket.created))
            _sub(node, "ExtranetEndpoint", self.service_host)
            _sub(node, "IntranetEndpoint", self.service_host)
            _sub(node, "Location", f"oss-{self.region}")
            _sub(node, "Name", bucket.name)
            _sub(node, "Region", self.region)
            _sub(node, "StorageClass", "Standard")
        return 200, {"Content-Type": "application/xml"}, _xml(root)

    def _bucket_operation(self, req: _Request, bucket: Bucket) -> tuple[int, dict[str, str], bytes]:
        if req.method == "GET" and "bucketInfo" in req.params:
            return self._bucket_info(bucket)
        if req.method == "GET" and not set(req.params) & (V1_SUBRESOURCES - {"continuation-token"}):
            return self._list_objects(req, bucket)
        if req.method == "POST" and "delete" in req.params:
            return self._delete_multiple(req, bucket)
        raise _not_implemented(req)

    def _bucket_info(self, bucket: Bucket) -> tuple[int, dict[str, str], bytes]:
        root = ElementTree.Element("BucketInfo")
        node = _sub(root, "Bucket")
        _sub(node, "CreationDate", _iso8601(bucket.created))
        _sub(node, "ExtranetEndpoint", self.service_host)
        _sub(node, "IntranetEndpoint", self.service_host)
        _sub(node, "Location", f"oss-{self.region}")
        _sub(node, "StorageClass", "Standard")
        _sub(node, "Name", bucket.name)
        owner = _sub(node, "Owner")
        _sub(owner, "DisplayName", "1234567890")
        _sub(owner, "ID", "1234567890")
        acl = _sub(node, "AccessControlList")
        _sub(acl, "Grant", "private")
        return 200, {"Content-Type": "application/xml"}, _xml(root)

    def _list_objects(self, req: _Request, bucket: Bucket) -> tuple[int, dict[str, str], bytes]:
        p = req.params
        v2 = p.get("list-type") == "2"
        if "list-type" in p and not v2:
            raise OSSError(400, "InvalidArgument", f"Invalid list-type: {p['list-type']}")
        prefix, delimiter = p.get("prefix", ""), p.get("delimiter", "")
        max_keys_text = p.get("max-keys") or "100"
        if not max_keys_text.isdigit() or not 0 < int(max_keys_text) <= MAX_KEYS_LIMIT:
            raise OSSError(400, "InvalidArgument", f"max-keys must be 1..{MAX_KEYS_LIMIT}: {max_keys_text}")
        max_keys = int(max_keys_text)
        encode_url = p.get("encoding-type") == "url"
        if "encoding-type" in p and p["encoding-type"] not in ("", "url"):
            raise OSSError(400, "InvalidArgument", f"Invalid encoding-type: {p['encoding-type']}")
        if v2:
            token = p.get("continuation-token", "")
            after = base64.urlsafe_b64decode(token.encode()).decode() if token else p.get("start-after", "")
        else:
            after = p.get("marker", "")

        def enc(text: str) -> str:
            return quote(text, safe="") if encode_url else text

        contents: list[tuple[str, StoredObject]] = []
        prefixes: list[str] = []
        last = ""
        truncated = False
        for key in sorted(bucket.objects):
            if not key.startswith(prefix) or key <= after:
                continue
            rest = key[len(prefix) :]
            common = (
                prefix + rest[: rest.index(delimiter) + len(delimiter)] if delimiter and delimiter in rest else None
            )
            if common is not None and prefixes and prefixes[-1] == common:
                continue
            if common is not None and common <= after:
                continue  # the listing already gave this common prefix on an earlier page
            if len(contents) + len(prefixes) == max_keys:
                truncated = True
                break
            if common is not None:
                prefixes.append(common)
                last = common
            else:
                contents.append((key, bucket.objects[key]))
                last = key

        root = ElementTree.Element("ListBucketResult")
        _sub(root, "Name", bucket.name)
        _sub(root, "Prefix", enc(prefix))
        if v2:
            if p.get("start-after"):
                _sub(root, "StartAfter", enc(p["start-after"]))
            if p.get("continuation-token"):
                _sub(root, "ContinuationToken", p["continuation-token"])
        else:
            _sub(root, "Marker", enc(after))
        _sub(root, "MaxKeys", max_keys)
        _sub(root, "Delimiter", enc(delimiter))
        if encode_url:
            _sub(root, "EncodingType", "url")
        _sub(root, "IsTruncated", "true" if truncated else "false")
        if truncated:
            if v2:
                _sub(root, "NextContinuationToken", base64.urlsafe_b64encode(last.encode()).decode())
            else:
                _sub(root, "NextMarker", enc(last))
        for key, obj in contents:
            node = _sub(root, "Contents")
            _sub(node, "Key", enc(key))
            _sub(node, "LastModified", _iso8601(obj.last_modified))
            _sub(node, "ETag", f'"{obj.etag}"')
            _sub(node, "Type", obj.object_type)
            _sub(node, "Size", len(obj.data))
            _sub(node, "StorageClass", "Standard")
            if not v2 or p.get("fetch-owner") == "true":
                owner = _sub(node, "Owner")
                _sub(owner, "ID", "1234567890")
                _sub(owner, "DisplayName", "1234567890")
        for common in prefixes:
            _sub(_sub(root, "CommonPrefixes"), "Prefix", enc(common))
        if v2:
            _sub(root, "KeyCount", len(contents) + len(prefixes))
        return 200, {"Content-Type": "application/xml"}, _xml(root)

    def _delete_multiple(self, req: _Request, bucket: Bucket) -> tuple[int, dict[str, str], bytes]:
        if "content-md5" not in req.headers:
            raise OSSError(400, "MissingArgument", "Missing Some Required Arguments.", ArgumentName="Content-MD5")
        self._check_md5(req)
        try:
            root = ElementTree.fromstring(req.body)
        except ElementTree.ParseError:
            raise OSSError(400, "MalformedXML", "The XML you provided was not well-formed.") from None
        quiet = (root.findtext("Quiet") or "false").lower() == "true"
        keys = [node.findtext("Key") or "" for node in root.findall("Object")]
        if not keys or len(keys) > 1000:
            raise OSSError(400, "MalformedXML", "Delete needs 1 to 1000 objects.")
        encode_url = req.params.get("encoding-type") == "url"
        out = ElementTree.Element("DeleteResult")
        if encode_url:
            _sub(out, "EncodingType", "url")
        for key in keys:
            bucket.objects.pop(key, None)  # deleting a missing key succeeds, as in OSS
            if not quiet:
                _sub(_sub(out, "Deleted"), "Key", quote(key, safe="") if encode_url else key)
        return 200, {"Content-Type": "application/xml"}, _xml(out)

    @staticmethod
    def _check_md5(req: _Request) -> None:
        given = req.headers.get("content-md5")
        if given is not None and given != base64.b64encode(hashlib.md5(req.body).digest()).decode():
            raise OSSError(400, "InvalidDigest", "The Content-MD5 you specified is not valid.", ContentMD5=given)

    @staticmethod
    def _forbid_overwrite(req: _Request, bucket: Bucket, key: str, forbid: bool = False) -> bool:
        forbid = forbid or req.headers.get("x-oss-forbid-overwrite", "false").lower() == "true"
        if forbid and key in bucket.objects:
            raise OSSError(
                409, "FileAlreadyExists", "The object you specified already exists and can not be overwritten."
            )
        return forbid

    @staticmethod
    def _meta(req: _Request) -> dict[str, str]:
        return {k: v for k, v in req.headers.items() if k.startswith("x-oss-meta-")}

    def _object_operation(self, req: _Request, bucket: Bucket) -> tuple[int, dict[str, str], bytes]:
        p, m = req.params, req.method
        if m == "PUT" and "partNumber" in p and "uploadId" in p:
            return self._upload_part(req)
        if m == "PUT" and not set(p) & V1_SUBRESOURCES:
            if "x-oss-copy-source" in req.headers:
                return self._copy_object(req, bucket)
            return self._put_object(req, bucket)
        if m == "POST" and "uploads" in p:
            return self._initiate_multipart(req, bucket)
        if m == "POST" and "uploadId" in p:
            return self._complete_multipart(req, bucket)
        if m == "POST" and "append" in p:
            return self._append_object(req, bucket)
        if m == "DELETE" and "uploadId" in p:
            return self._abort_multipart(req)
        if m == "DELETE" and not set(p) & V1_SUBRESOURCES:
            bucket.objects.pop(req.key, None)
            return 204, {}, b""
        response_overrides = {k for k in p if k.startswith("response-")}
        if m in ("GET", "HEAD") and not set(p) & (V1_SUBRESOURCES - response_overrides - {"objectMeta"}):
            return self._get_object(req, bucket)
        raise _not_implemented(req)

    def _put_object(self, req: _Request, bucket: Bucket) -> tuple[int, dict[str, str], bytes]:
        self._check_md5(req)
        self._forbid_overwrite(req, bucket, req.key)
        content_type = req.headers.get("content-type") or "application/octet-stream"
        obj = StoredObject(req.body, content_type, _md5_hex(req.body), "Normal", self.now(), self._meta(req))
        bucket.objects[req.key] = obj
        return 200, {"ETag": f'"{obj.etag}"', "x-oss-hash-crc64ecma": obj.crc64, "Content-MD5": _b64md5(req.body)}, b""

    def _copy_object(self, req: _Request, bucket: Bucket) -> tuple[int, dict[str, str], bytes]:
        source = unquote(req.headers["x-oss-copy-source"]).lstrip("/")
        src_bucket_name, _, src_key = source.partition("/")
        src_bucket = self._buckets.get(src_bucket_name)
        if src_bucket is None:
            raise OSSError(404, "NoSuchBucket", "The specified bucket does not exist.", BucketName=src_bucket_name)
        src = src_bucket.objects.get(src_key)
        if src is None:
            raise OSSError(404, "NoSuchKey", "The specified key does not exist.", Key=src_key)
        self._forbid_overwrite(req, bucket, req.key)
        replace = req.headers.get("x-oss-metadata-directive", "COPY").upper() == "REPLACE"
        obj = StoredObject(
            src.data,
            req.headers.get("content-type", src.content_type) if replace else src.content_type,
            _md5_hex(src.data),
            "Normal",
            self.now(),
            self._meta(req) if replace else dict(src.meta),
        )
        bucket.objects[req.key] = obj
        root = ElementTree.Element("CopyObjectResult")
        _sub(root, "ETag", f'"{obj.etag}"')
        _sub(root, "LastModified", _iso8601(obj.last_modified))
        return 200, {"Content-Type": "application/xml", "x-oss-hash-crc64ecma": obj.crc64}, _xml(root)

    def _append_object(self, req: _Request, bucket: Bucket) -> tuple[int, dict[str, str], bytes]:
        position_text = req.params.get("position", "")
        if not position_text.isdigit():
            raise OSSError(400, "InvalidArgument", f"Invalid position: {position_text!r}")
        position = int(position_text)
        current = bucket.objects.get(req.key)
        if current is not None and current.object_type != "Appendable":
            raise OSSError(409, "ObjectNotAppendable", "The object is not appendable.")
        length = len(current.data) if current is not None else 0
        if position != length:
            raise OSSError(
                409,
                "PositionNotEqualToLength",
                "Position is not equal to file length.",
                headers={"x-oss-next-append-position": str(length)},
            )
        self._check_md5(req)
        data = (current.data if current is not None else b"") + req.body
        content_type = current.content_type if current else req.headers.get("content-type", "application/octet-stream")
        obj = StoredObject(data, content_type, _md5_hex(data), "Appendable", self.now(), self._meta(req))
        bucket.objects[req.key] = obj
        headers = {
            "ETag": f'"{obj.etag}"',
            "x-oss-next-append-position": str(len(data)),
            "x-oss-hash-crc64ecma": obj.crc64,
        }
        return 200, headers, b""

    def _get_object(self, req: _Request, bucket: Bucket) -> tuple[int, dict[str, str], bytes]:
        obj = bucket.objects.get(req.key)
        if obj is None:
            raise OSSError(404, "NoSuchKey", "The specified key does not exist.", Key=req.key)
        headers = {
            "Content-Type": obj.content_type,
            "ETag": f'"{obj.etag}"',
            "Last-Modified": formatdate(obj.last_modified, usegmt=True),
            "x-oss-object-type": obj.object_type,
            "x-oss-hash-crc64ecma": obj.crc64,
            "x-oss-storage-class": "Standard",
            "Accept-Ranges": "bytes",
            **obj.meta,
        }
        if obj.object_type == "Appendable":
            headers["x-oss-next-append-position"] = str(len(obj.data))
        for param, header in (
            ("response-content-type", "Content-Type"),
            ("response-content-disposition", "Content-Disposition"),
            ("response-cache-control", "Cache-Control"),
            ("response-content-encoding", "Content-Encoding"),
            ("response-content-language", "Content-Language"),
            ("response-expires", "Expires"),
        ):
            if param in req.params:
                headers[header] = req.params[param]
        if req.method == "HEAD" and "objectMeta" in req.params:
            return 200, {k: headers[k] for k in ("ETag", "Last-Modified", "x-oss-hash-crc64ecma")}, obj.data
        data = obj.data
        byte_range = self._range(req, len(data))
        if byte_range is None:
            return 200, headers, data
        start, end = byte_range
        headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
        return 206, headers, data[start : end + 1]

    @staticmethod
    def _range(req: _Request, size: int) -> tuple[int, int] | None:
        """The inclusive byte range to answer, ``None`` for the whole object (OSS's Range rules)."""
        header = req.headers.get("range")
        if not header:
            return None
        standard = req.headers.get("x-oss-range-behavior", "").lower() == "standard"
        spec = header.strip()
        invalid = OSSError(416, "InvalidRange", "The requested range cannot be satisfied.", headers={})
        if not spec.startswith("bytes=") or "," in spec:
            return None  # malformed or multiple ranges: OSS ignores the header
        first, sep, last = spec[6:].partition("-")
        if not sep or not (first.isdigit() or last.isdigit()) or (first and not first.isdigit()):
            return None
        if last and not last.isdigit():
            return None
        if not first:  # suffix range: the last N bytes
            n = int(last)
            if n == 0:
                if standard:
                    raise invalid
                return None
            return max(size - n, 0), size - 1
        start = int(first)
        end = int(last) if last else size - 1
        if start >= size or (last and end < start):
            if standard:
                raise invalid
            return None  # the legacy behaviour: an invalid range gets the whole object
        if end >= size:
            if not standard:
                return None
            end = size - 1
        return start, end

    def _initiate_multipart(self, req: _Request, bucket: Bucket) -> tuple[int, dict[str, str], bytes]:
        forbid = self._forbid_overwrite(req, bucket, req.key)
        upload_id = uuid.uuid4().hex.upper()
        content_type = req.headers.get("content-type") or "application/octet-stream"
        self._uploads[upload_id] = MultipartUpload(bucket.name, req.key, content_type, self._meta(req), forbid)
        root = ElementTree.Element("InitiateMultipartUploadResult")
        _sub(root, "Bucket", bucket.name)
        _sub(root, "Key", req.key)
        _sub(root, "UploadId", upload_id)
        return 200, {"Content-Type": "application/xml"}, _xml(root)

    def _upload(self, req: _Request) -> MultipartUpload:
        upload = self._uploads.get(req.params.get("uploadId", ""))
        if upload is None or upload.bucket != req.bucket or upload.key != req.key:
            raise OSSError(
                404,
                "NoSuchUpload",
                "The specified upload does not exist. The upload ID may be invalid, or the upload may have been "
                "aborted or completed.",
                UploadId=req.params.get("uploadId", ""),
            )
        return upload

    def _upload_part(self, req: _Request) -> tuple[int, dict[str, str], bytes]:
        upload = self._upload(req)
        number = req.params["partNumber"]
        if not number.isdigit() or not 1 <= int(number) <= MAX_PART_NUMBER:
            raise OSSError(400, "InvalidArgument", f"Part number must be an integer between 1 and {MAX_PART_NUMBER}.")
        self._check_md5(req)
        etag = _md5_hex(req.body)
        upload.parts[int(number)] = (etag, req.body)
        return 200, {"ETag": f'"{etag}"', "x-oss-hash-crc64ecma": str(_crc64(req.body))}, b""

    def _complete_multipart(self, req: _Request, bucket: Bucket) -> tuple[int, dict[str, str], bytes]:
        upload = self._upload(req)
        try:
            root = ElementTree.fromstring(req.body)
        except ElementTree.ParseError:
            raise OSSError(400, "MalformedXML", "The XML you provided was not well-formed.") from None
        listed = []
        for node in root.findall("Part"):
            number, etag = node.findtext("PartNumber") or "", (node.findtext("ETag") or "").strip('"').upper()
            if not number.isdigit():
                raise OSSError(400, "MalformedXML", "The XML you provided was not well-formed.")
            listed.append((int(number), etag))
        if not listed:
            raise OSSError(400, "MalformedXML", "CompleteMultipartUpload needs at least one part.")
        numbers = [n for n, _ in listed]
        if numbers != sorted(set(numbers)):
            raise OSSError(400, "InvalidPartOrder", "The list of parts was not in ascending order.")
        for index, (number, etag) in enumerate(listed):
            stored = upload.parts.get(number)
            if stored is None or stored[0] != etag:
                raise OSSError(
                    400,
                    "InvalidPart",
                    "One or more of the specified parts could not be found or the specified entity tag might not "
                    "have matched the part's entity tag.",
                    PartNumber=str(number),
                )
            if index < len(listed) - 1 and len(stored[1]) < MIN_PART_SIZE:
                raise OSSError(
                    400,
                    "EntityTooSmall",
                    "Your proposed upload is smaller than the minimum allowed size.",
                    PartNumber=str(number),
                    MinSizeAllowed=str(MIN_PART_SIZE),
                )
        self._forbid_overwrite(req, bucket, req.key, upload.forbid_overwrite)
        data = b"".join(upload.parts[n][1] for n in numbers)
        digest = hashlib.md5(b"".join(bytes.fromhex(upload.parts[n][0]) for n in numbers)).hexdigest()
        obj = StoredObject(
            data, upload.content_type, f"{digest.upper()}-{len(numbers)}", "Multipart", self.now(), upload.meta
        )
        bucket.objects[req.key] = obj
        del self._uploads[req.params["uploadId"]]
        out = ElementTree.Element("CompleteMultipartUploadResult")
        _sub(out, "Location", f"http://{bucket.name}.{self.service_host}/{quote(req.key)}")
        _sub(out, "Bucket", bucket.name)
        _sub(out, "Key", req.key)
        _sub(out, "ETag", f'"{obj.etag}"')
        headers = {"Content-Type": "application/xml", "ETag": f'"{obj.etag}"', "x-oss-hash-crc64ecma": obj.crc64}
        return 200, headers, _xml(out)

    def _abort_multipart(self, req: _Request) -> tuple[int, dict[str, str], bytes]:
        self._upload(req)
        del self._uploads[req.params["uploadId"]]
        return 204, {}, b""

    def _record(self, record: RequestRecord) -> None:
        with self._lock:
            self._log.append(record)


def _b64md5(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode()


def _signature_mismatch(access_key_id: str, provided: str, string_to_sign: str, **extra: str) -> OSSError:
    return OSSError(
        403,
        "SignatureDoesNotMatch",
        "The request signature we calculated does not match the signature you provided. Check your key and "
        "signing method.",
        OSSAccessKeyId=access_key_id,
        SignatureProvided=provided,
        StringToSign=string_to_sign,
        **extra,
    )


def _not_implemented(req: _Request) -> OSSError:
    return OSSError(
        501,
        "NotImplemented",
        f"The OSS test double does not implement {req.method} with {sorted(req.params)} on "
        f"{'an object' if req.key else 'a bucket' if req.bucket else 'the service'}.",
    )


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # no ~40 ms delayed-ACK stall per keep-alive request
    server_version = "AliyunOSS"
    sys_version = ""
    server_double: OSSDouble

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        self._serve()

    def do_HEAD(self) -> None:
        self._serve()

    def do_PUT(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def do_DELETE(self) -> None:
        self._serve()

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            return read_chunked(self.rfile)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _parse(self, body: bytes) -> _Request:
        double = self.server_double
        split = urlsplit(self.path)
        raw_query = parse_qsl(split.query, keep_blank_values=True)
        params = dict(raw_query)
        path = unquote(split.path)
        host = (self.headers.get("Host") or "").lower()
        hostname = host[: host.rindex("]") + 1] if host.startswith("[") else host.split(":", 1)[0]
        if hostname.endswith("." + double.service_host):  # virtual-hosted: bucket.endpoint/key
            bucket, key = hostname[: -len(double.service_host) - 1], path[1:]
        elif _is_ip_or_localhost(hostname) or hostname == double.service_host:  # path style: endpoint/bucket/key
            bucket, _, key = path[1:].partition("/")
        else:
            raise OSSError(400, "InvalidArgument", f"Unknown host {hostname!r} (expected {double.service_host})")
        headers = {k.lower(): v for k, v in self.headers.items()}
        return _Request(self.command, bucket, key, params, raw_query, headers, body)

    def _serve(self) -> None:
        double = self.server_double
        request_id = uuid.uuid4().hex[:24].upper()
        bucket = key = ""
        params: dict[str, str] = {}
        auth = "none"
        try:
            body = self._read_body()
            req = self._parse(body)
            bucket, key, params = req.bucket, req.key, req.params
            auth = double._auth_kind(req)
            if req.bucket and req.bucket not in double._buckets:  # OSS answers this before checking who asks
                raise OSSError(404, "NoSuchBucket", "The specified bucket does not exist.", BucketName=req.bucket)
            double._authenticate(req, auth)
            status, headers, payload = double._handle(req)
            code = None
        except Exception as exc:
            if not isinstance(exc, OSSError):  # a bug in the double: say so, as a 500
                exc = OSSError(500, "InternalError", f"OSS test double failed: {type(exc).__name__}: {exc}")
            status, code = exc.status, exc.code
            root = ElementTree.Element("Error")
            _sub(root, "Code", exc.code)
            _sub(root, "Message", exc.message)
            _sub(root, "RequestId", request_id)
            _sub(root, "HostId", double.service_host)
            for name, value in exc.details.items():
                _sub(root, name, value)
            payload = _xml(root)
            headers = {"Content-Type": "application/xml", **exc.headers}
            if self.command == "HEAD":
                headers["x-oss-err"] = base64.b64encode(payload).decode()
        double._record(RequestRecord(self.command, bucket, key, dict(params), auth, status, code))
        self.send_response(status)
        headers = {"x-oss-request-id": request_id, "Date": formatdate(usegmt=True), **headers}
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD" and payload:
            self.wfile.write(payload)
