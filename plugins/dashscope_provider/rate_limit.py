"""Client-side pacing of DashScope calls, shared by every hook of one process.

The service limits calls per second (queries 20/s; see the reference pages); a limiter spaces this
process's calls below that, and after a 429 holds every caller back, not just the one that was refused.
"""

from __future__ import annotations

import asyncio
import threading
import time

#: The service allows 20 queries per second; stay below it, leaving room for other clients.
DEFAULT_QUERY_QPS = 15.0


class AsyncRateLimiter:
    """Spaces requests evenly so that no more than ``qps`` start in any second.

    Each caller reserves the next free slot without awaiting in between, so it needs no asyncio lock and
    works across event loops (a triggerer has one; tests start several) and threads. After a 429,
    :meth:`penalize` pushes every later slot back.

    :param qps: requests per second.
    """

    def __init__(self, qps: float) -> None:
        self.qps = qps
        self._next = 0.0
        self._lock = threading.Lock()

    @property
    def qps(self) -> float:
        """Requests per second (> 0)."""
        return self._qps

    @qps.setter
    def qps(self, value: float) -> None:
        if value <= 0:
            raise ValueError("qps must be > 0")
        self._qps = float(value)

    def reserve(self) -> float:
        """Reserve the next slot; returns how many seconds to wait for it."""
        with self._lock:
            now = time.monotonic()
            slot = max(now, self._next)
            self._next = slot + 1.0 / self._qps
            return slot - now

    async def acquire(self) -> None:
        """Wait for this caller's slot."""
        delay = self.reserve()
        if delay > 0:
            await asyncio.sleep(delay)

    def penalize(self, seconds: float) -> None:
        """Start no request before ``seconds`` from now (the service said 429)."""
        with self._lock:
            self._next = max(self._next, time.monotonic() + seconds)


_LIMITERS: dict[tuple[str, str], AsyncRateLimiter] = {}
_LIMITERS_LOCK = threading.Lock()


def get_rate_limiter(base_url: str, key_id: str, qps: float = DEFAULT_QUERY_QPS) -> AsyncRateLimiter:
    """The process-wide limiter of one (base URL, API key); created on first use, its rate updated to ``qps``.

    :param base_url: the API base URL.
    :param key_id: identifies the key without being it (a hash), so every connection using the same key
        shares one budget.
    :param qps: requests per second for this key.
    """
    with _LIMITERS_LOCK:
        limiter = _LIMITERS.get((base_url, key_id))
        if limiter is None:
            limiter = _LIMITERS[(base_url, key_id)] = AsyncRateLimiter(qps)
        elif limiter.qps != qps:
            limiter.qps = qps
        return limiter
