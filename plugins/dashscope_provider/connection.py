"""What a ``dashscope`` connection says: the API base URL, the API key (its password field) and the account.

The account is optional: extra ``{"account": "<Alibaba Cloud account id or any name>"}``. The service's
rate limits count per Alibaba Cloud (main) account, adding up all its keys, so connections naming the same
account share one client-side budget; without it each key counts as its own account.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

from dashscope_provider.exceptions import DashScopeConfigError
from dashscope_provider.models import DEFAULT_BASE_URL

if TYPE_CHECKING:
    from airflow.sdk import Connection


def base_url_from_connection(conn: Connection) -> str:
    """The API base URL of a ``dashscope`` connection.

    ``host`` may be empty (the public endpoint), a bare host name (https is assumed unless the
    connection's schema says otherwise) or a full URL (a workspace/regional URL, a local emulator).
    A trailing ``/`` or ``/api/v1`` is dropped, so that both ``https://host`` and ``https://host/api/v1``
    work.
    """
    host = (conn.host or "").strip()
    if not host:
        base = DEFAULT_BASE_URL
    elif "://" in host:
        base = host
    else:
        base = f"{(conn.schema or 'https').strip()}://{host}"
    parts = urlsplit(base)
    netloc = parts.netloc
    if conn.port and parts.port is None:
        netloc = f"{netloc}:{conn.port}"
    path = parts.path.rstrip("/")
    if path.endswith("/api/v1"):
        path = path[: -len("/api/v1")]
    return urlunsplit((parts.scheme, netloc, path, "", "")).rstrip("/")


def api_key_from_connection(conn: Connection) -> str:
    """The connection's API key (its password field).

    :raises DashScopeConfigError: if it has none.
    """
    key = (conn.password or "").strip()
    if not key:
        raise DashScopeConfigError(
            f"Connection {conn.conn_id!r} has no API key: put the DashScope API key in its password field"
        )
    return key


def key_fingerprint(key: str) -> str:
    """An id of an API key that is not the key (16 hex digits of its SHA-256), for limiter names and logs."""
    return hashlib.sha256(key.encode()).hexdigest()[:16]


#: Connection extras this provider reads itself; they are not sent as HTTP headers.
DASHSCOPE_EXTRA_FIELDS = ("account",)


def account_from_connection(conn: Connection) -> str:
    """The Alibaba Cloud account the connection's calls count against, for client-side rate limits.

    The connection extra ``account`` when set; else ``key-`` and :func:`key_fingerprint` of its key (keys
    of one account not named as such are then paced as separate accounts).

    :raises DashScopeConfigError: with no ``account`` extra and no API key.
    """
    extra = conn.extra_dejson if isinstance(conn.extra_dejson, dict) else {}
    account = str(extra.get("account") or "").strip()
    return account or f"key-{key_fingerprint(api_key_from_connection(conn))}"
