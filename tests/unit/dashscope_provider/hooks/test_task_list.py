"""``DashScopeHook.list_tasks`` against the emulator's task list: every page, the account's tasks only, the
window sent in UTC+8 and widened, then cut exactly by ``gmt_create``; typed results."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from dashscope_provider.hooks import task_list
from dashscope_provider.hooks.dashscope import DashScopeHook
from dashscope_provider.models import ListedTask, TaskStatus

from tests.unit.conftest import CONN_ID, KEY, OTHER_ACCOUNT_KEY, SAME_ACCOUNT_KEY, submit_as

pytestmark = pytest.mark.usefixtures("no_key_in_logs")


def test_list_tasks_reads_every_page_of_the_accounts_tasks_in_the_window(
    account_emulator: Any,
    emoji_input: dict[str, Any],
    emo_input: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    sent: list[dict[str, str]],
) -> None:
    monkeypatch.setattr(task_list, "TASK_LIST_PAGE_SIZE", 2)
    emoji = {"model": "emoji-v1", "input": emoji_input}
    before = submit_as(account_emulator, KEY, emoji)  # made before the window
    time.sleep(1.1)
    start = datetime.now(UTC)
    ours = [submit_as(account_emulator, k, emoji) for k in (KEY, SAME_ACCOUNT_KEY, KEY, KEY, SAME_ACCOUNT_KEY)]
    submit_as(account_emulator, KEY, {"model": "emo-v1", "input": emo_input})  # another model
    submit_as(account_emulator, OTHER_ACCOUNT_KEY, emoji)  # another account
    end = datetime.now(UTC)
    time.sleep(1.1)
    after = submit_as(account_emulator, KEY, emoji)  # made after the window

    hook = DashScopeHook(dashscope_conn_id=CONN_ID)
    listed = hook.list_tasks("emoji-v1", start, end)
    assert [t.task_id for t in listed] == ours  # both keys of the account, oldest first; nothing else
    assert all(isinstance(t, ListedTask) and t.model == "emoji-v1" and start <= t.created <= end for t in listed)
    assert all(t.created.tzinfo is not None and isinstance(t.status, TaskStatus) for t in listed)
    # The widened window reached the tasks just outside it; gmt_create cut them off.
    assert before not in {t.task_id for t in listed} and after not in {t.task_id for t in listed}

    calls = [r for r in account_emulator.request_log() if r["path"] == "/api/v1/tasks/"]
    assert len(calls) == len(sent) == 4  # 7 emoji tasks of the account in the widened window, 2 a page
    assert [q["page_no"] for q in sent] == ["1", "2", "3", "4"]
    # The window was sent as YYYYMMDDhhmmss in UTC+8, widened on both sides.
    utc8 = timedelta(hours=8)
    sent_start = datetime.strptime(sent[0]["start_time"], "%Y%m%d%H%M%S").replace(tzinfo=UTC) - utc8
    sent_end = datetime.strptime(sent[0]["end_time"], "%Y%m%d%H%M%S").replace(tzinfo=UTC) - utc8
    assert sent_start <= start - timedelta(minutes=10) and sent_end >= end + timedelta(minutes=10)
    assert sent[0]["model_name"] == "emoji-v1" and sent[0]["page_size"] == "2"

    assert [t.task_id for t in hook.list_tasks("emoji-v1", start, end, status="CANCELED")] == []


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, str]]:
    """The query strings of the task-list requests sent (the emulator's request log keeps paths only)."""
    queries: list[dict[str, str]] = []
    original = requests.Session.send

    def send(self: requests.Session, request: requests.PreparedRequest, **kwargs: Any) -> Any:
        parts = urlsplit(request.url or "")
        if parts.path == "/api/v1/tasks/":
            queries.append({k: v[0] for k, v in parse_qs(parts.query).items()})
        return original(self, request, **kwargs)

    monkeypatch.setattr(requests.Session, "send", send)
    return queries


def test_list_tasks_refuses_a_window_it_cannot_send(account_emulator: Any) -> None:
    hook = DashScopeHook(dashscope_conn_id=CONN_ID)
    now = datetime.now(UTC)
    with pytest.raises(ValueError, match="24 h"):
        hook.list_tasks("emo-v1", now - timedelta(hours=25), now)
    with pytest.raises(ValueError, match="24 h"):
        hook.list_tasks("emo-v1", now, now - timedelta(seconds=1))
    with pytest.raises(ValueError, match="timezone-aware"):
        hook.list_tasks("emo-v1", datetime(2026, 1, 1), datetime(2026, 1, 1, 1))
    # A window of the full 24 h is sent without the margin (the service refuses more than 24 h).
    assert hook.list_tasks("emo-v1", now - timedelta(hours=24), now) == []


def test_task_list_keeps_a_task_shifted_across_pages_once_and_stops_at_the_last_page() -> None:
    """Paging alone (the pages given, not fetched): a task created while paging pushes an entry onto the
    next page, where it comes again; it is listed once, and no page past ``total_page`` is asked for."""
    import logging

    from dashscope_provider.hooks.task_list import TaskList
    from dashscope_provider.models import TaskPage

    start = datetime(2026, 12, 1, 8, tzinfo=UTC)

    def task(task_id: str, minutes: int, model: str = "emo-v1") -> ListedTask:
        return ListedTask(task_id, "SUCCEEDED", model, start + timedelta(minutes=minutes))

    pages = {
        "1": TaskPage(5, 3, 1, 2, (task("c", 30), task("b", 20))),
        "2": TaskPage(5, 3, 2, 2, (task("b", 20), task("a", 10))),  # "b" again: shifted by a new task
        "3": TaskPage(5, 3, 3, 2, (task("late", 200), task("x", 15, "emoji-v1"))),
    }
    asked: list[dict[str, str]] = []

    def fetch_page(query: dict[str, str]) -> TaskPage:
        asked.append(query)
        return pages[query["page_no"]]

    listed = TaskList(fetch_page, logging.getLogger(__name__)).list_tasks("emo-v1", start, start + timedelta(hours=1))
    assert [t.task_id for t in listed] == ["a", "b", "c"]  # once each, oldest first; "late" and emoji cut
    assert [q["page_no"] for q in asked] == ["1", "2", "3"]
    assert {q["model_name"] for q in asked} == {"emo-v1"} and "status" not in asked[0]
