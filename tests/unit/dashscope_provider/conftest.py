"""Fixtures of the provider tests (the emulator, connections and media come from tests/unit/conftest.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from dashscope_provider.hooks.dashscope_async import DashScopeAsyncHook
from dashscope_provider.triggers.dashscope import DashScopeTaskTrigger

from tests.unit.conftest import CONN_ID, KEY
from tests.unit.dashscope_provider.face_detect_stub import FaceDetectStub


def fast_hook(conn_id: str = CONN_ID, **kwargs: Any) -> DashScopeAsyncHook:
    """A DashScopeAsyncHook with short back-offs (the defaults are seconds)."""
    kwargs.setdefault("retry_initial", 0.05)
    kwargs.setdefault("retry_max", 0.2)
    kwargs.setdefault("timeout", 5.0)
    return DashScopeAsyncHook(dashscope_conn_id=conn_id, **kwargs)


@pytest.fixture
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Triggers build their hook with production back-offs (seconds); shorten them for the tests."""
    monkeypatch.setattr(DashScopeTaskTrigger, "_hook", lambda self: fast_hook(self.dashscope_conn_id))


#: API keys the face-detect stub accepts, and their accounts: two keys of one account, one of another.
DETECT_KEYS = {KEY: "acct-1", "sk-same-account": "acct-1", "sk-other-account": "acct-2"}


def detect_conn(
    monkeypatch: pytest.MonkeyPatch, base_url: str, conn_id: str = CONN_ID, key: str = KEY, account: str | None = None
) -> str:
    """Set the connection ``conn_id`` (environment) to ``base_url`` with ``key`` and, if given, ``account``."""
    conn: dict[str, Any] = {"conn_type": "dashscope", "host": base_url, "password": key}
    if account is not None:
        conn["extra"] = {"account": account}
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(conn))
    return conn_id


@pytest.fixture
def detect_stub(monkeypatch: pytest.MonkeyPatch) -> Iterator[FaceDetectStub]:
    """The face-detect stub on 127.0.0.1, with ``dashscope_test`` pointing at it (key ``KEY``)."""
    with FaceDetectStub(DETECT_KEYS) as stub:
        detect_conn(monkeypatch, stub.base_url)
        yield stub
