"""The async hook for DashScope: task queries and cancels from the triggerer's event loop."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import quote

import aiohttp
from airflow.sdk import BaseHook

from dashscope_provider.connection import account_from_connection, api_key_from_connection, base_url_from_connection
from dashscope_provider.exceptions import DashScopeConnectionError
from dashscope_provider.hooks.pacing import ThrottleCounter, refused
from dashscope_provider.models import (
    CANCEL_ENDPOINT,
    TASK_ENDPOINT,
    TASK_LIST_ENDPOINT,
    DashScopeTask,
    TaskPage,
    api_error,
    parse_task,
    parse_task_page,
)
from dashscope_provider.rate_limit import DEFAULT_QUERY_QPS, AsyncRateLimiter, get_rate_limiter
from dashscope_provider.retry import DEFAULT_THROTTLE_TIMEOUT, RetryPolicy, describe, transport_error

T = TypeVar("T")


class DashScopeAsyncHook(BaseHook):
    """Query DashScope tasks from async code (triggers), with the sync hook's parsing and retry rules.

    Built directly on aiohttp rather than on ``HttpAsyncHook``: that one retries 5xx only, at a fixed
    delay, and authenticates with basic auth, while this API needs a bearer token, 429 handling and a
    shared rate limit. The connection is read the Airflow 3 way for async code
    (``get_async_connection``), once per hook.

    Every query first waits for a slot of the rate limiter shared by all hooks of this process that use
    the same base URL and account (:func:`~dashscope_provider.rate_limit.get_rate_limiter`; the account is
    the connection's ``account`` extra, else its key), so that any number of triggers polling with one
    account stays within the service's 20 queries per second, which all keys of an account share. The
    sync hook's queries and task lists use the same limiter. A 429 that still comes (another process of
    the account) is retried without using up attempts and counted in :attr:`throttled`; a used-up free
    quota (:class:`~dashscope_provider.exceptions.DashScopeQuotaExhausted`) is raised at once.

    :param dashscope_conn_id: the connection id.
    :param max_attempts: attempts per query (429 answers not counted, see
        :class:`~dashscope_provider.retry.RetryPolicy`).
    :param retry_initial: first back-off in seconds (doubles per attempt, with jitter).
    :param retry_max: longest back-off in seconds.
    :param throttle_timeout: seconds one query keeps retrying while it is throttled (429).
    :param timeout: total seconds per request.
    :param max_qps: the shared query rate of this account in this process (default 15).
    """

    conn_name_attr = "dashscope_conn_id"
    default_conn_name = "dashscope_default"
    conn_type = "dashscope"
    hook_name = "DashScope"

    def __init__(
        self,
        dashscope_conn_id: str = default_conn_name,
        *,
        max_attempts: int = 5,
        retry_initial: float = 1.0,
        retry_max: float = 30.0,
        throttle_timeout: float = DEFAULT_THROTTLE_TIMEOUT,
        timeout: float = 60.0,
        max_qps: float = DEFAULT_QUERY_QPS,
    ) -> None:
        super().__init__()
        self.dashscope_conn_id = dashscope_conn_id
        self.retry_policy = RetryPolicy(max_attempts, retry_initial, retry_max, throttle_timeout)
        self.timeout = timeout
        self.max_qps = max_qps
        self._base_url: str | None = None
        self._headers: dict[str, str] | None = None
        self._limiter: AsyncRateLimiter | None = None
        self._account: str | None = None
        self._throttles = ThrottleCounter()

    @property
    def throttled(self) -> int:
        """How many 429 answers this hook's queries got and retried through (read-only; it only grows)."""
        return self._throttles.count

    async def _configure(self) -> tuple[str, dict[str, str], AsyncRateLimiter]:
        if self._base_url is None or self._headers is None or self._limiter is None:
            from airflow.providers.common.compat.connection import get_async_connection

            conn = await get_async_connection(conn_id=self.dashscope_conn_id, hook=self)
            key = api_key_from_connection(conn)
            self._base_url = base_url_from_connection(conn)
            self._headers = {"Authorization": f"Bearer {key}"}
            self._account = account_from_connection(conn)
            self._limiter = get_rate_limiter(self._base_url, self._account, self.max_qps)
        return self._base_url, self._headers, self._limiter

    async def account_key(self) -> tuple[str, str]:
        """(base URL, account) of the connection: what the service counts limits and lists tasks by.

        :raises AirflowNotFoundException: the connection does not exist.
        :raises DashScopeConfigError: it has no API key.
        """
        base_url, _, _ = await self._configure()
        return base_url, str(self._account)

    async def get_task(self, task_id: str) -> DashScopeTask:
        """The task's current status (see :meth:`DashScopeHook.get_task`); retries 429, 5xx, transport errors.

        :raises DashScopeAPIError: on a non-retryable error (401...) or after the retries.
        :raises DashScopeConnectionError: if the service stayed unreachable.
        """
        return await self._get(TASK_ENDPOINT.format(task_id=quote(task_id, safe="")), "query", parse_task)

    async def list_task_page(self, query: dict[str, str]) -> TaskPage:
        """One page of the account's task list (``query``: :func:`~dashscope_provider.hooks.task_list.list_query`
        plus ``page_no``, ``page_size``); paced and retried like a query, parsed as the sync hook does.

        :raises DashScopeAPIError: on a non-retryable error (401...) or after the retries.
        :raises DashScopeConnectionError: if the service stayed unreachable, or the answer is unreadable.
        """
        return await self._get(TASK_LIST_ENDPOINT, "list", parse_task_page, query)

    async def _get(
        self, endpoint: str, operation: str, parse: Callable[[Any], T], query: dict[str, str] | None = None
    ) -> T:
        """GET ``endpoint`` and parse its JSON answer: after a slot of the account's limiter, retried."""
        base_url, headers, limiter = await self._configure()
        url = f"{base_url}/{endpoint}"
        timeout = aiohttp.ClientTimeout(total=self.timeout)

        async def attempt() -> T:
            await limiter.acquire()
            try:
                async with (
                    aiohttp.ClientSession(timeout=timeout) as session,
                    session.get(url, headers=headers, params=query) as response,
                ):
                    status = response.status
                    content_type = response.headers.get("Content-Type")
                    text = await response.text()
            except (TimeoutError, aiohttp.ClientError) as exc:
                raise transport_error(exc, idempotent=True) from exc
            if status == 200:
                try:
                    return parse(json.loads(text))
                except ValueError as exc:
                    raise DashScopeConnectionError(f"unreadable {operation} answer ({exc})") from None
            # Throttled: every poller of this account is held back, not just this one.
            raise refused(api_error(status, text, content_type, operation), limiter)

        count = self._throttles.on_retry
        retrying = self.retry_policy.async_retrying(operation, self.log, idempotent=True, on_retry=count)
        return await retrying(attempt)

    async def cancel_task(self, task_id: str) -> bool:
        """Cancel a task that is still ``PENDING``; True if the service canceled it (one attempt).

        A refusal (the task already runs or ended) is an answer, not an error: False, with a log line.
        """
        base_url, headers, _ = await self._configure()
        url = f"{base_url}/{CANCEL_ENDPOINT.format(task_id=quote(task_id, safe=''))}"
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout)) as session,
                session.post(url, headers=headers) as response,
            ):
                if 200 <= response.status < 300:
                    self.log.info("DashScope task %s canceled", task_id)
                    return True
                error = api_error(
                    response.status, await response.text(), response.headers.get("Content-Type"), "cancel"
                )
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise DashScopeConnectionError(describe(exc)) from exc
        self.log.info("DashScope task %s not canceled: %s", task_id, error)
        return False
