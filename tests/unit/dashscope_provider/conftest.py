"""Fixtures of the provider tests (the emulator, connections and media come from tests/unit/conftest.py)."""

from __future__ import annotations

from typing import Any

import pytest
from dashscope_provider.hooks.dashscope_async import DashScopeAsyncHook
from dashscope_provider.triggers.dashscope import DashScopeTaskTrigger

from tests.unit.conftest import CONN_ID


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
