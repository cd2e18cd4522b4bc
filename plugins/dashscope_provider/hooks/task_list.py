""":class:`TaskList`: the account's task list, every page; :meth:`DashScopeHook.list_tasks` delegates to it.

A helper the hook holds (kept in its own module so the hook stays readable): it decides what to ask for
and what to keep; each page is fetched by the hook, with its session, retry policy, pacing and
connection, like every other call.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

from dashscope_provider.models import TASK_LIST_MARGIN, TASK_LIST_MAX_WINDOW, ListedTask, TaskPage, list_time

#: Entries asked per page, and the most pages read for one window (a runaway guard).
TASK_LIST_PAGE_SIZE = 100
TASK_LIST_MAX_PAGES = 200


def list_query(start: datetime, end: datetime, model: str | None = None, status: str | None = None) -> dict[str, str]:
    """The query string of one task-list window, without its page: ``start_time``/``end_time`` in UTC+8,
    widened by :data:`~dashscope_provider.models.TASK_LIST_MARGIN` on each side (never past 24 h: the
    service names no time zone, so the boundary is not trusted), then ``model_name`` and ``status`` when given.

    :raises ValueError: a naive datetime, a reversed window or one longer than 24 h.
    """
    if end < start or end - start > TASK_LIST_MAX_WINDOW:
        raise ValueError(f"a task-list window runs forward and spans at most 24 h: {start} .. {end}")
    margin = min(TASK_LIST_MARGIN, (TASK_LIST_MAX_WINDOW - (end - start)) / 2)
    params = {"start_time": list_time(start - margin), "end_time": list_time(end + margin)}
    if model:
        params["model_name"] = model
    if status:
        params["status"] = str(status)
    return params


class TaskList:
    """The task list of one connection's Alibaba Cloud account (``GET /api/v1/tasks/``).

    :param fetch_page: the hook's ``GET /api/v1/tasks/`` of one query string (``start_time``...,
        ``page_no``, ``page_size``): paced by the account's query budget, shared in this process with
        every hook of the same base URL and account, sync or async, and their task queries
        (:meth:`~dashscope_provider.hooks.pacing.Pacing.query_limiter`), and retried like a query.
    :param log: where the listing's one line goes (the hook's logger).
    """

    def __init__(self, fetch_page: Callable[[dict[str, str]], TaskPage], log: logging.Logger | Any) -> None:
        self._fetch_page = fetch_page
        self._log = log

    def list_tasks(self, model: str, start: datetime, end: datetime, status: str | None = None) -> list[ListedTask]:
        """The account's tasks of ``model`` created from ``start`` to ``end`` (aware datetimes), oldest first.

        The service's window names no time zone: it is sent in UTC+8 and widened by
        :data:`~dashscope_provider.models.TASK_LIST_MARGIN` on each side (never past 24 h), then the
        answer is cut to ``[start, end]`` by each task's ``gmt_create`` (epoch ms, no zone to guess).
        Every page is read; each call counts against the account's query budget and is retried like a
        query. Tasks of every key of the account are listed, not only this key's.

        :param model: ``model_name`` filter (``emo-v1``...).
        :param start: the window's start; ``end - start`` at most 24 h.
        :param end: the window's end.
        :param status: a ``TaskStatus`` to filter by, or None for all.
        :raises ValueError: a naive datetime, a reversed window or one longer than 24 h (nothing is sent).
        :raises DashScopeAPIError: on a non-retryable error, or after the retries.
        """
        params = list_query(start, end, model, status)
        found: dict[str, ListedTask] = {}
        for task in self._every_entry(params):  # a task created while paging may shift a page: keep each id once
            found.setdefault(task.task_id, task)
        tasks = sorted(
            (t for t in found.values() if start <= t.created <= end and t.model in (model, "")),
            key=lambda t: (t.created, t.task_id),
        )
        self._log.info(
            "DashScope task list: %d %s task(s) created %s .. %s", len(tasks), model, start.isoformat(), end.isoformat()
        )
        return tasks

    def _every_entry(self, params: dict[str, str]) -> Iterator[ListedTask]:
        """The entries of every page of one window's listing, page by page."""
        for page_no in range(1, TASK_LIST_MAX_PAGES + 1):
            page = self._fetch_page({**params, "page_no": str(page_no), "page_size": str(TASK_LIST_PAGE_SIZE)})
            yield from page.tasks
            if not page.tasks or page_no >= page.total_page:
                return
