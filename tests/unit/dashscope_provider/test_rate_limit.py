"""The rate limiters: one budget per key shared by every poller of a process, held back after a 429."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
from dashscope_provider.models import DashScopeTask
from dashscope_provider.rate_limit import (
    AsyncRateLimiter,
    RateLimiter,
    detect_rps,
    get_rate_limiter,
    get_sync_rate_limiter,
)

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


def test_sync_limiter_paces_many_threads() -> None:
    limiter = RateLimiter(qps=50)
    starts: list[float] = []
    lock = threading.Lock()

    def work() -> None:
        for _ in range(5):
            limiter.wait()
            with lock:
                starts.append(time.monotonic())

    started = time.monotonic()
    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(starts) == 20
    assert max(starts) - started >= 19 / 50 - 0.01  # 20 slots 20 ms apart, whatever the threads
    limiter.penalize(0.2)
    assert limiter.wait() >= 0.15


def test_sync_limiters_are_shared_per_base_url_account_and_model() -> None:
    one = get_sync_rate_limiter("http://a", "acct", "emo-detect-v1")
    assert one is get_sync_rate_limiter("http://a", "acct", "emo-detect-v1")
    assert one is not get_sync_rate_limiter("http://a", "acct", "emoji-detect-v1")
    assert one is not get_sync_rate_limiter("http://a", "other", "emo-detect-v1")
    assert one is not get_sync_rate_limiter("http://b", "acct", "emo-detect-v1")
    assert (one.qps, get_sync_rate_limiter("http://a", "acct", "emoji-detect-v1").qps) == (5.0, 1.0)
    assert detect_rps("some-new-detect") == 1.0
    # The async registry is apart: the same names give a different (async) limiter.
    assert not isinstance(one, AsyncRateLimiter)
    assert isinstance(get_rate_limiter("http://a", "acct"), AsyncRateLimiter)
    with pytest.raises(ValueError):
        RateLimiter(qps=0)
