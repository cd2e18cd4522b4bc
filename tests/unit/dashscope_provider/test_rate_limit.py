"""The rate limiters: one budget per key shared by every poller of a process, held back after a 429."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from dashscope_provider.models import DashScopeTask
from dashscope_provider.rate_limit import AsyncRateLimiter, get_rate_limiter

from tests.unit.conftest import is_query, logged_requests
from tests.unit.dashscope_provider.conftest import fast_hook

pytestmark = pytest.mark.usefixtures("no_key_in_logs")


def test_many_pollers_share_one_rate_limit(dashscope_conn: str, emulator: Any) -> None:
    # 40 triggers' worth of queries at once with one key: the service allows 20/s, the shared limiter 15/s.
    async def burst() -> list[DashScopeTask]:
        hooks = [fast_hook() for _ in range(40)]
        return await asyncio.gather(*(hook.get_task(f"task-{i}") for i, hook in enumerate(hooks)))

    started = time.monotonic()
    tasks = asyncio.run(burst())
    elapsed = time.monotonic() - started
    assert [t.status for t in tasks] == ["UNKNOWN"] * 40
    statuses = [r["status"] for r in logged_requests(emulator, is_query, 40)]
    assert statuses == [200] * 40  # not one 429
    assert elapsed >= 39 / 15 - 0.2  # paced at 15 per second


def test_rate_limiter_is_shared_per_key_and_backs_off() -> None:
    assert get_rate_limiter("http://a", "k1") is get_rate_limiter("http://a", "k1")
    assert get_rate_limiter("http://a", "k1") is not get_rate_limiter("http://a", "k2")
    limiter = AsyncRateLimiter(qps=1000)
    limiter.penalize(0.3)  # after a 429
    started = time.monotonic()
    asyncio.run(limiter.acquire())
    assert time.monotonic() - started >= 0.25
