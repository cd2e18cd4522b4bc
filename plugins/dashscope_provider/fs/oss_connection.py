"""What an Airflow connection (or the ``OSS_*`` environment) says about an OSS endpoint and its credentials.

Used by :func:`dashscope_provider.fs.oss.get_fs`; see that module for the connection types it reads.
"""

from __future__ import annotations

import os
import re
from typing import Any

_ENDPOINT_REGION = re.compile(r"^(?:[^.]+\.)?oss-([a-z0-9-]+?)(?:-internal)?\.aliyuncs\.com$")


def normalize_endpoint(endpoint: str | None) -> str | None:
    if not endpoint:
        return None
    endpoint = endpoint.strip().rstrip("/")
    return endpoint if "://" in endpoint else f"https://{endpoint}"


def connection_options(conn_id: str) -> dict[str, Any]:
    from airflow.sdk import BaseHook

    conn = BaseHook.get_connection(conn_id)
    extra = conn.extra_dejson
    auth_type = extra.get("auth_type")
    if auth_type not in (None, "", "AK"):
        raise ValueError(
            f"OSS connection {conn_id!r}: auth_type {auth_type!r} is not supported; use 'AK' (an AccessKey pair)"
        )
    key = extra.get("access_key_id") or conn.login or None
    secret = extra.get("access_key_secret") or conn.password or None
    if bool(key) != bool(secret):
        raise ValueError(
            f"OSS connection {conn_id!r} has an AccessKey {'ID' if key else 'secret'} but no "
            f"{'secret' if key else 'ID'} (extras access_key_id/access_key_secret, or login/password)"
        )
    endpoint = extra.get("endpoint")
    if not endpoint and conn.host:
        endpoint = conn.host if conn.port is None else f"{conn.host}:{conn.port}"
    region = extra.get("region") or extra.get("region_name")
    options: dict[str, Any] = {
        "conn_id": conn_id,
        "key": key,
        "secret": secret,
        "token": extra.get("security_token") or None,
        "endpoint": normalize_endpoint(endpoint or (f"oss-{bare_region(region)}.aliyuncs.com" if region else None)),
        "region": region,
    }
    for name in ("signature_version", "is_path_style", "multipart_threshold", "part_size"):
        if extra.get(name) is not None:
            options[name] = extra[name]
    if not options["endpoint"]:
        raise ValueError(f"OSS connection {conn_id!r} needs an 'endpoint' or a 'region' extra")
    return options


def environment_defaults(kwargs: dict[str, Any]) -> None:
    """Fill what the caller did not give from ``OSS_*`` variables (oss2's and ossfs's names)."""
    if "key" not in kwargs and os.environ.get("OSS_ACCESS_KEY_ID"):
        kwargs["key"] = os.environ["OSS_ACCESS_KEY_ID"]
        kwargs.setdefault("secret", os.environ.get("OSS_ACCESS_KEY_SECRET"))
        kwargs.setdefault("token", os.environ.get("OSS_SESSION_TOKEN") or None)
    if not kwargs.get("endpoint"):
        region = kwargs.get("region") or os.environ.get("OSS_REGION")
        endpoint = os.environ.get("OSS_ENDPOINT") or (f"oss-{bare_region(region)}.aliyuncs.com" if region else None)
        kwargs["endpoint"] = normalize_endpoint(endpoint)


def bare_region(region: str | None) -> str | None:
    """``cn-hangzhou`` for ``cn-hangzhou`` or ``oss-cn-hangzhou`` (both spellings are in use)."""
    return region.removeprefix("oss-") if region else None


def region_from_endpoint(endpoint: str | None) -> str | None:
    if not endpoint:
        return None
    host = endpoint.split("://", 1)[-1].split("/", 1)[0].split(":", 1)[0].lower()
    match = _ENDPOINT_REGION.match(host)
    if not match or match.group(1).startswith("accelerate"):  # the acceleration endpoints name no region
        return None
    return match.group(1)
