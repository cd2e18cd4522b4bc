"""Client-side pacing of DashScope calls, shared by every hook of one process.

The service limits calls per second per Alibaba Cloud account (all its API keys, RAM users and
workspaces together), each model on its own: queries 20/s, submits emo-v1 5/s and emoji-v1 1/s,
face-detects emo-detect-v1 5/s and emoji-detect-v1 1/s (``detection-and-limits.md``). A limiter spaces
this process's calls of one account below that (queries at 15/s, submits and detects at
:data:`PACING_SHARE` of their rate: requests spaced exactly at the limit arrive with jitter and would
now and then land two in one second), and after a 429 holds every caller back, not just the one that
was refused. :class:`RateLimiter` is for threads (the sync hook), :class:`AsyncRateLimiter` for
event loops (triggers; the sync hook's queries use the same one, with :meth:`RateLimiter.wait`).
Limiters are per process: processes of one account do not share them, so a 429 can still come, and
is retried (see :mod:`~dashscope_provider.retry`).
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections import deque
from typing import cast

#: The service allows 20 queries per second; stay below it, leaving room for other clients.
DEFAULT_QUERY_QPS = 15.0
#: Face-detect calls per second per account, per model (the rate-limit page).
DETECT_RPS: dict[str, float] = {"emo-detect-v1": 5.0, "emoji-detect-v1": 1.0}
#: Task submissions per second per account, per model (the rate-limit page; emo-v1's also its own page).
SUBMIT_RPS: dict[str, float] = {"emo-v1": 5.0, "emoji-v1": 1.0}
#: The rate for a model the page does not list: the lowest listed.
DEFAULT_DETECT_RPS = 1.0
#: The share of a model's rate that submits and detects are paced at: 0.9 leaves about 0.1 s of room
#: for arrival jitter in each 1 s window (emo-v1: one submit every 0.22 s; emoji-v1: every 1.11 s).
#: Submit pacing costs no throughput: an account runs one task at a time, for minutes.
PACING_SHARE = 0.9


class RateLimiter:
    """Spaces requests evenly so that no more than ``qps`` start in any second; thread-safe.

    Each caller reserves the next free slot under a lock and then sleeps until it, outside the lock, so
    callers in many threads are served in order without holding each other up longer than their slots.
    A caller woken late (a busy event loop, a starved thread) must not catch up in a burst: the slots it and
    the others missed would all start at once, more in one second than ``qps``, and the service counts
    arrivals in its own 1 s window. So each start is admitted only while fewer than ``ceil(qps)`` started in
    the last second (:meth:`_admit`); otherwise the caller waits for the oldest of them to age out.
    After a 429, :meth:`penalize` pushes every later slot back.

    :param qps: requests per second.
    """

    def __init__(self, qps: float) -> None:
        self.qps = qps
        self._next = 0.0
        self._starts: deque[float] = deque()
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

    def _admit(self) -> float:
        """Record a start now and return 0, unless ``ceil(qps)`` started in the last second: then the
        seconds until the oldest of them leaves that second (nothing recorded; ask again after them)."""
        with self._lock:
            now = time.monotonic()
            while self._starts and now - self._starts[0] >= 1.0:
                self._starts.popleft()
            if len(self._starts) >= math.ceil(self._qps):
                return self._starts[0] + 1.0 - now
            self._starts.append(now)
            return 0.0

    def wait(self) -> float:
        """Block until this caller's slot, and until its start keeps the last second within ``qps``;
        returns the seconds waited."""
        waited = max(self.reserve(), 0.0)
        if waited > 0:
            time.sleep(waited)
        while (extra := self._admit()) > 0:
            time.sleep(extra)
            waited += extra
        return waited

    def penalize(self, seconds: float) -> None:
        """Start no request before ``seconds`` from now (the service said 429)."""
        with self._lock:
            self._next = max(self._next, time.monotonic() + seconds)


class AsyncRateLimiter(RateLimiter):
    """A :class:`RateLimiter` for coroutines: :meth:`acquire` awaits the slot instead of sleeping.

    Reserving takes no await, so it needs no asyncio lock and works across event loops (a triggerer has
    one; tests start several) and threads.

    :param qps: requests per second.
    """

    async def acquire(self) -> None:
        """Wait for this caller's slot, and until its start keeps the last second within ``qps``."""
        delay = self.reserve()
        if delay > 0:
            await asyncio.sleep(delay)
        while (extra := self._admit()) > 0:
            await asyncio.sleep(extra)


_LIMITERS: dict[tuple[str, ...], RateLimiter] = {}
_LIMITERS_LOCK = threading.Lock()


def _shared(kind: type[RateLimiter], key: tuple[str, ...], qps: float) -> RateLimiter:
    with _LIMITERS_LOCK:
        full_key = (kind.__name__, *key)
        limiter = _LIMITERS.get(full_key)
        if limiter is None:
            limiter = _LIMITERS[full_key] = kind(qps)
        elif limiter.qps != qps:
            limiter.qps = qps
        return limiter


def get_rate_limiter(base_url: str, key_id: str, qps: float = DEFAULT_QUERY_QPS) -> AsyncRateLimiter:
    """The process-wide async limiter of one (base URL, account); created on first use, its rate set to ``qps``.

    :param base_url: the API base URL.
    :param key_id: the account the calls count against (a connection's ``account``, by default a hash of
        its key), so every connection of the same account shares one budget.
    :param qps: requests per second for this account.
    """
    return cast("AsyncRateLimiter", _shared(AsyncRateLimiter, (base_url, key_id), qps))


def detect_rps(model: str) -> float:
    """The face-detect rate of ``model`` per account (:data:`DETECT_RPS`, else :data:`DEFAULT_DETECT_RPS`)."""
    return DETECT_RPS.get(model, DEFAULT_DETECT_RPS)


def model_rps(model: str) -> float:
    """The calls per second per account the service allows ``model``: :data:`SUBMIT_RPS` for a video
    model, else :func:`detect_rps` (a model neither lists gets the lowest listed rate, 1/s)."""
    return SUBMIT_RPS.get(model) or detect_rps(model)


def paced_rps(model: str) -> float:
    """The rate this process paces ``model`` at by default: :data:`PACING_SHARE` of :func:`model_rps`."""
    return PACING_SHARE * model_rps(model)


def get_sync_rate_limiter(base_url: str, account: str, model: str, qps: float | None = None) -> RateLimiter:
    """The process-wide thread-safe limiter of one (base URL, account, model), for the sync hook's submits
    (a video model: ``emo-v1``...) and face-detects (a detect model).

    :param base_url: the API base URL.
    :param account: the Alibaba Cloud account the calls count against (see
        :func:`~dashscope_provider.connection.account_from_connection`).
    :param model: the model called (each has its own limit).
    :param qps: requests per second (default :func:`paced_rps` of ``model``).
    """
    return _shared(RateLimiter, (base_url, account, model), paced_rps(model) if qps is None else qps)
