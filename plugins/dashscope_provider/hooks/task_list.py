""":meth:`DashScopeHook.list_tasks <TaskListMixin.list_tasks>`: the account's task list, every page.

A mixin of :class:`~dashscope_provider.hooks.dashscope.DashScopeHook` (kept in its own module so the hook
stays readable); it uses the hook's session, retry policy and connection, like every other call.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from dashscope_provider.connection import account_from_connection
from dashscope_provider.models import (
    TASK_LIST_ENDPOINT,
    TASK_LIST_MARGIN,
    TASK_LIST_MAX_WINDOW,
    ListedTask,
    TaskPage,
    list_time,
    parse_task_page,
    read_answer,
)

if TYPE_CHECKING:
    import requests

    from dashscope_provider.hooks.dashscope import DashScopeHook
    from dashscope_provider.rate_limit import RateLimiter

#: Entries asked per page, and the most pages read for one window (a runaway guard).
TASK_LIST_PAGE_SIZE = 100
TASK_LIST_MAX_PAGES = 200


class TaskListMixin:
    """The task list of the connection's Alibaba Cloud account (``GET /api/v1/tasks/``)."""

    @property
    def account(self: DashScopeHook) -> str:  # type: ignore[misc]
        """The Alibaba Cloud account the connection's calls count against (and whose tasks it lists)."""
        return account_from_connection(self.dashscope_connection)

    def task_list_limiter(self: DashScopeHook) -> RateLimiter:  # type: ignore[misc]
        """The limiter list calls are paced with: the account's query budget (20/s on the service; this
        process stays at :data:`~dashscope_provider.rate_limit.DEFAULT_QUERY_QPS`), shared in this process
        by every hook of the same base URL and account, sync or async, with their task queries
        (:meth:`~dashscope_provider.hooks.pacing.PacingMixin.query_limiter`)."""
        return self.query_limiter()

    def list_tasks(  # type: ignore[misc]
        self: DashScopeHook, model: str, start: datetime, end: datetime, status: str | None = None
    ) -> list[ListedTask]:
        """The account's tasks of ``model`` created from ``start`` to ``end`` (aware datetimes), oldest first.

        The service's window names no time zone: it is sent in UTC+8 and widened by
        :data:`~dashscope_provider.models.TASK_LIST_MARGIN` on each side (never past 24 h), then the
        answer is cut to ``[start, end]`` by each task's ``gmt_create`` (epoch ms, no zone to guess).
        Every page is read; each call counts against the account's query budget (:meth:`task_list_limiter`)
        and is retried like a query. Tasks of every key of the account are listed, not only this key's.

        :param model: ``model_name`` filter (``emo-v1``...).
        :param start: the window's start; ``end - start`` at most 24 h.
        :param end: the window's end.
        :param status: a ``TaskStatus`` to filter by, or None for all.
        :raises ValueError: a naive datetime, a reversed window or one longer than 24 h (nothing is sent).
        :raises DashScopeAPIError: on a non-retryable error, or after the retries.
        """
        if end < start or end - start > TASK_LIST_MAX_WINDOW:
            raise ValueError(f"a task-list window runs forward and spans at most 24 h: {start} .. {end}")
        spare = (TASK_LIST_MAX_WINDOW - (end - start)) / 2
        margin = min(TASK_LIST_MARGIN, spare)
        params = {"start_time": list_time(start - margin), "end_time": list_time(end + margin), "model_name": model}
        if status:
            params["status"] = str(status)
        limiter = self.task_list_limiter()

        def handle(response: requests.Response, text: str) -> TaskPage:
            content_type = response.headers.get("Content-Type")
            return read_answer(response.status_code, text, content_type, "list", parse_task_page, "task-list")

        found: dict[str, ListedTask] = {}
        for page_no in range(1, TASK_LIST_MAX_PAGES + 1):
            query = {**params, "page_no": str(page_no), "page_size": str(TASK_LIST_PAGE_SIZE)}
            page = self._idempotent_call("GET", TASK_LIST_ENDPOINT, "list", handle, limiter=limiter, params=query)
            for task in page.tasks:  # a task created while paging may shift a page: keep each id once
                found.setdefault(task.task_id, task)
            if not page.tasks or page_no >= page.total_page:
                break
        tasks = sorted(
            (t for t in found.values() if start <= t.created <= end and t.model in (model, "")),
            key=lambda t: (t.created, t.task_id),
        )
        self.log.info(
            "DashScope task list: %d %s task(s) created %s .. %s", len(tasks), model, start.isoformat(), end.isoformat()
        )
        return tasks
