"""The hooks' pacing per Alibaba Cloud account, and their count of the 429 answers they absorbed.

Helpers the hooks hold (kept in their own module so the hooks stay readable). The service counts its
limits per account, each model on its own, adding up every key of the account
(``detection-and-limits.md``); so the limiters here are keyed by (base URL, account, model), not by key
or connection: every hook of this process whose connections name the same account (connection extra
``account``; by default each key is its own account) waits for the same slots. See
:mod:`~dashscope_provider.rate_limit` for the rates.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from dashscope_provider.connection import account_from_connection, base_url_from_connection
from dashscope_provider.exceptions import DashScopeAPIError, DashScopeQuotaExhausted
from dashscope_provider.rate_limit import AsyncRateLimiter, RateLimiter, get_rate_limiter, get_sync_rate_limiter

if TYPE_CHECKING:
    from airflow.sdk import Connection


def refused(error: DashScopeAPIError, limiter: RateLimiter | None) -> DashScopeAPIError:
    """The error to raise for a refused call: a used-up free quota as :class:`DashScopeQuotaExhausted`;
    after any other 429, every user of ``limiter`` in this process is held back for a second (the service
    counts per account, so one caller's 429 means the others are about to get one too)."""
    error = DashScopeQuotaExhausted.refine(error)
    if error.status_code == 429 and error.retryable and limiter is not None:
        limiter.penalize(1.0)
    return error


class ThrottleCounter:
    """How many 429 (throttled) answers one hook got and retried through; it only grows.

    A 429 that is not retried is not counted: the one after ``throttle_timeout`` (raised), and a free
    quota used up (:class:`~dashscope_provider.exceptions.DashScopeQuotaExhausted`, raised at once).
    Locked: the sync hook may be shared by threads.
    """

    def __init__(self) -> None:
        self._count = 0
        self._lock = threading.Lock()

    @property
    def count(self) -> int:
        """The 429 answers retried through so far."""
        return self._count

    def on_retry(self, error: BaseException) -> None:
        """``on_retry`` of a hook's retry policy: counts the 429s about to be retried."""
        if isinstance(error, DashScopeAPIError) and error.status_code == 429:
            with self._lock:
                self._count += 1


class Pacing:
    """The limiters one sync hook's calls wait for: per account and model for submits and face-detects,
    and the account's query budget.

    :param connection: the hook's connection, read when a limiter is first asked for (not at construction:
        a hook reads its connection on first use).
    :param detect_qps: face-detect calls per second per model (default: 90 % of the page's limits).
    :param submit_qps: submits per second per model (default: 90 % of the page's limits).
    """

    def __init__(
        self,
        connection: Callable[[], Connection],
        detect_qps: dict[str, float] | None = None,
        submit_qps: dict[str, float] | None = None,
    ) -> None:
        self._connection = connection
        self.detect_qps = dict(detect_qps or {})
        self.submit_qps = dict(submit_qps or {})

    def _model_limiter(self, model: str, qps: float | None) -> RateLimiter:
        connection = self._connection()
        return get_sync_rate_limiter(
            base_url_from_connection(connection), account_from_connection(connection), model, qps
        )

    def submit_limiter(self, model: str) -> RateLimiter:
        """The limiter :meth:`~DashScopeHook.submit_task` paces ``model`` with: shared in this process by
        every hook of the same base URL and account (:func:`~dashscope_provider.rate_limit.paced_rps`:
        90 % of emo-v1's 5/s and emoji-v1's 1/s, unless ``submit_qps`` says otherwise)."""
        return self._model_limiter(model, self.submit_qps.get(model))

    def detect_limiter(self, model: str) -> RateLimiter:
        """The limiter :meth:`~DashScopeHook.detect_face` paces ``model`` with: shared in this process by
        every hook of the same base URL and account (see
        :func:`~dashscope_provider.rate_limit.get_sync_rate_limiter`)."""
        return self._model_limiter(model, self.detect_qps.get(model))

    def query_limiter(self) -> AsyncRateLimiter:
        """The account's query budget (20/s on the service; this process stays at
        :data:`~dashscope_provider.rate_limit.DEFAULT_QUERY_QPS`): the very limiter of
        :class:`~dashscope_provider.hooks.dashscope_async.DashScopeAsyncHook`, so task queries and task
        lists of this process, sync or async, share it."""
        connection = self._connection()
        return get_rate_limiter(base_url_from_connection(connection), account_from_connection(connection))
