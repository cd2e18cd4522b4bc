"""A row's media wherever it lives: http(s) URLs, store URLs (``s3://``, ``oss://``, ...) and local files.

The service fetches media itself, over https, when a task runs. So just before the call that needs it,
each file is turned into a URL the service can fetch:

- an http(s) URL is sent as it is;
- a store URL is presigned by its store (``fs.sign``), valid for ``ttl`` seconds;
- a local file is uploaded once, content-addressed, to ``{output_root}/inputs/{sha256}{suffix}``, then
  presigned (this needs an object-store ``output_root``).

A presigned URL is a credential: :func:`redact` takes it out of any text before it is logged or recorded.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import os
import re
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from airflow.sdk import ObjectStoragePath

if TYPE_CHECKING:
    import pandas as pd

from talking_heads.storage import OutputLayout, as_storage_path
from talking_heads.table.validation import RowRequest

#: How long a presigned media URL stays valid by default: the service fetches media when the task runs,
#: after it waited in the account's queue (one task at a time), which for a long table takes hours.
DEFAULT_MEDIA_URL_TTL_SECONDS = 24 * 3600
#: Hosts of the real service: media it is given must be reachable from the internet.
PUBLIC_SERVICE_HOST = re.compile(r"(^|\.)aliyuncs\.com$", re.IGNORECASE)
_SIGNED_QUERY = re.compile(r"(https?://[^\s?#'\"]+)\?[^\s'\"]*", re.IGNORECASE)


def kind_of(location: str) -> str:
    """``http`` (sent as is), ``local`` (uploaded, then presigned) or ``store`` (presigned)."""
    if re.match(r"^https?://", location, re.IGNORECASE):
        return "http"
    if location.startswith("/") or location.startswith("file://"):
        return "local"
    return "store"


def resolve_relative(frame: pd.DataFrame, table_url: str) -> pd.DataFrame:
    """The table with relative media paths (``portraits/ada.png``) made relative to the table's own folder:
    local files beside a local table, or keys beside a table in a store (``s3://b/t/portraits/ada.png``)."""
    base = table_url.rsplit("/", 1)[0] if "/" in table_url else "."
    if "://" not in base:
        base = os.path.abspath(os.path.expanduser(base))
    frame = frame.copy()
    for column in ("image_url", "audio_url"):
        if column in frame:
            frame[column] = frame[column].map(lambda v: f"{base}/{v.strip()}" if _is_relative(v) else v)
    return frame


def _is_relative(value: object) -> bool:
    return isinstance(value, str) and bool(re.match(r"^[\w.-][^:]*$", value.strip())) and not value.startswith("/")


def local_path(location: str) -> str:
    return location.removeprefix("file://")


def is_object_store(path: ObjectStoragePath) -> bool:
    return path.protocol not in ("file", "local", "")


def local_media_problem(request: RowRequest, output_root: ObjectStoragePath) -> str | None:
    """A row with local files needs an object-store ``output_root`` to upload them to; names the field."""
    if is_object_store(output_root):
        return None
    for field, location in request.media.items():
        if kind_of(location) == "local":
            return (
                f"field '{field}': {location[:120]} is a local file, which the service cannot fetch; it is uploaded "
                "to {output_root}/inputs/ and presigned, so output_root must be an object store (s3://, oss://, "
                "...), or give an http(s) or store URL instead"
            )
    return None


def service_is_public(base_url: str) -> bool:
    """Whether the connection points at the real service (which fetches media from the internet)."""
    return bool(PUBLIC_SERVICE_HOST.search(urlsplit(base_url).hostname or ""))


def private_address_problem(request: RowRequest) -> str | None:
    """A media URL on a loopback, private or link-local address, which the real service cannot reach (and
    which the pre-flight fetch must not be made to probe); names the field."""
    for field, location in request.media.items():
        if kind_of(location) != "http":
            continue
        host = urlsplit(location).hostname or ""
        for ip in _addresses(host):
            if ip.is_loopback or ip.is_private or ip.is_link_local or ip.is_reserved or ip.is_unspecified:
                return (
                    f"field '{field}': {host} is a {_address_kind(ip)} address ({ip}); the service fetches media "
                    "from the internet and cannot reach it. Use a public URL, a store URL or a local file"
                )
    return None


@functools.lru_cache(maxsize=1024)
def _addresses(host: str) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, ...]:
    """The host's addresses, resolved once per process (a table's media share a few hosts; the plan asks per
    row). Unresolvable here: none, and the pre-flight check (or the service) reports it."""
    try:
        found = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except (socket.gaierror, UnicodeError):
        return ()
    return tuple(ipaddress.ip_address(address.split("%")[0]) for address in sorted(found))


def _address_kind(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local"
    return "private"


@dataclass(frozen=True)
class MediaSigner:
    """Turns a row's media into URLs the service can fetch, just before the call that needs them.

    :param layout: the run's output layout (local files are uploaded under its ``inputs/``).
    :param storage_conn_id: the Airflow connection of the store(s) behind ``output_root`` and the media.
    :param ttl: seconds a presigned URL stays valid.
    """

    layout: OutputLayout
    storage_conn_id: str | None = None
    ttl: int = DEFAULT_MEDIA_URL_TTL_SECONDS

    def urls_for(self, request: RowRequest, fields: Iterable[str] | None = None) -> dict[str, str]:
        """The URL to send for each media field of the row (all of them, or the given ``fields``)."""
        wanted = set(fields) if fields is not None else None
        return {f: self.url_for(loc) for f, loc in request.media.items() if wanted is None or f in wanted}

    def url_for(self, location: str) -> str:
        kind = kind_of(location)
        if kind == "http":
            return location
        path = self.upload(location) if kind == "local" else self.open(location)
        return str(path.fs.sign(path.path, expiration=self.ttl))

    def open(self, location: str) -> ObjectStoragePath:
        """A store URL or local file as an ``ObjectStoragePath``, to read it through fsspec."""
        if kind_of(location) == "local":
            return as_storage_path(local_path(location))
        # The storage connection is the output store's: media in another store use its own default credentials.
        same_store = urlsplit(location).scheme == self.layout.root.protocol
        return ObjectStoragePath(location, conn_id=self.storage_conn_id if same_store else None)

    def upload(self, location: str) -> ObjectStoragePath:
        """Copy a local file to ``inputs/{sha256}{suffix}`` once (content-addressed: same bytes, same key)."""
        source = local_path(location)
        digest = hashlib.sha256()
        with open(source, "rb") as handle:
            for block in iter(lambda: handle.read(1024 * 1024), b""):
                digest.update(block)
        suffix = os.path.splitext(source)[1].lower()
        target = self.layout.root / "inputs" / f"{digest.hexdigest()}{suffix}"
        if not target.exists():
            with open(source, "rb") as handle, target.open("wb") as out:
                for block in iter(lambda: handle.read(8 * 1024 * 1024), b""):
                    out.write(block)
        return target

    def identity(self, location: str) -> str:
        """What names a medium across runs: the URL as given, or for a local file its uploaded key."""
        return str(self.upload(location).path) if kind_of(location) == "local" else location


def redact(text: str) -> str:
    """``text`` with the query string (the signature) of every http(s) URL in it taken out."""
    return _SIGNED_QUERY.sub(r"\1?<redacted>", text)
