"""What a dashscope connection says: base URL and API key."""

from __future__ import annotations

import pytest
from dashscope_provider.connection import (
    account_from_connection,
    api_key_from_connection,
    base_url_from_connection,
    key_fingerprint,
)
from dashscope_provider.exceptions import DashScopeConfigError
from dashscope_provider.models import DEFAULT_BASE_URL

from tests.unit.conftest import KEY


class _Conn:
    def __init__(self, host: str | None, port: int | None = None, schema: str | None = None) -> None:
        self.host, self.port, self.schema, self.conn_id, self.password = host, port, schema, "x", KEY


@pytest.mark.parametrize(
    ("host", "port", "expected"),
    [
        (None, None, DEFAULT_BASE_URL),
        ("", None, DEFAULT_BASE_URL),
        ("dashscope.aliyuncs.com", None, "https://dashscope.aliyuncs.com"),
        ("https://ws-1.cn-beijing.maas.aliyuncs.com/", None, "https://ws-1.cn-beijing.maas.aliyuncs.com"),
        ("https://dashscope.aliyuncs.com/api/v1", None, "https://dashscope.aliyuncs.com"),
        ("http://127.0.0.1:8000", None, "http://127.0.0.1:8000"),
        ("127.0.0.1", 8000, "https://127.0.0.1:8000"),
    ],
)
def test_base_url_from_connection(host: str | None, port: int | None, expected: str) -> None:
    assert base_url_from_connection(_Conn(host, port)) == expected  # type: ignore[arg-type]


def test_api_key_from_connection() -> None:
    assert api_key_from_connection(_Conn("h")) == KEY  # type: ignore[arg-type]
    no_key = _Conn("h")
    no_key.password = "  "
    with pytest.raises(DashScopeConfigError, match="no API key"):
        api_key_from_connection(no_key)  # type: ignore[arg-type]


def test_key_fingerprint_identifies_a_key_without_being_it() -> None:
    assert key_fingerprint(KEY) == key_fingerprint(KEY) != key_fingerprint(KEY + "x")
    assert len(key_fingerprint(KEY)) == 16 and KEY not in key_fingerprint(KEY)


def test_account_from_connection() -> None:
    named = _Conn("h")
    named.extra_dejson = {"account": " acct-1 "}  # type: ignore[attr-defined]
    assert account_from_connection(named) == "acct-1"  # type: ignore[arg-type]
    unnamed = _Conn("h")
    unnamed.extra_dejson = {}  # type: ignore[attr-defined]
    assert account_from_connection(unnamed) == f"key-{key_fingerprint(KEY)}"  # type: ignore[arg-type]
    assert KEY not in account_from_connection(unnamed)  # type: ignore[arg-type]
