"""The account's watcher against the emulator: many waits of one account share its task-list polls."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from airflow.triggers.base import TriggerEvent
from dashscope_provider.hooks.dashscope import DashScopeHook
from dashscope_provider.hooks.dashscope_async import DashScopeAsyncHook
from dashscope_provider.triggers import task_watcher
from dashscope_provider.triggers.dashscope import DashScopeTaskTrigger

from tests.unit.conftest import CONN_ID, KEY, conn_json, is_query, logged_requests

pytestmark = pytest.mark.usefixtures("no_key_in_logs", "quick_retries")

LIST_PATH = "/api/v1/tasks/"


def is_list(record: dict[str, Any]) -> bool:
    return record["method"] == "GET" and record["path"] == LIST_PATH


def is_read(record: dict[str, Any]) -> bool:
    return is_query(record) and record["path"] != LIST_PATH


@pytest.fixture
def paced_emulator(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """An emulator at 40x: an emoji task runs about half a second, one at a time, so 30 tasks queue for
    seconds and finish one by one; ``dashscope_test`` points at it."""
    from dashscope_emulator import EmulatorServer

    server = EmulatorServer(api_keys=[KEY], port=0, speed=40, submit_qps=1000).start()
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", conn_json(server.base_url))
    try:
        yield server
    finally:
        server.stop()


def submit(count: int, task_input: dict[str, Any], conn_id: str = CONN_ID) -> list[str]:
    hook = DashScopeHook(dashscope_conn_id=conn_id, submit_qps={"emoji-v1": 1000.0})
    return [hook.submit_task("emoji-v1", task_input).task_id for _ in range(count)]


def watchers_here(base_url: str) -> list[task_watcher.AccountWatcher]:
    """The watchers of ``base_url`` in the running event loop: not one an earlier loop left under the same key."""
    loop = asyncio.get_running_loop()
    return [w for w in task_watcher.watchers() if w.key[0] == base_url and w.loop is loop]


async def leave_a_watcher(conn_id: str) -> None:
    """Leave, in this (soon ended) event loop, a watcher of the connection's account that has had rounds."""
    key = await DashScopeAsyncHook(dashscope_conn_id=conn_id).account_key()
    task_watcher.watcher_for(key).rounds = 1


async def run_all(triggers: list[DashScopeTaskTrigger]) -> list[TriggerEvent]:
    """Every trigger's one event, the triggers running together in this event loop as in a triggerer."""

    async def one(trigger: DashScopeTaskTrigger) -> TriggerEvent:
        return await anext(aiter(trigger.run()))

    return list(await asyncio.gather(*(one(t) for t in triggers)))


def test_many_waits_of_one_account_share_the_list_and_read_each_task_once(
    paced_emulator: Any, emoji_input: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """30 waits pending together: each ends with its own task's result; each task is read once, when it has
    ended (the last FEW_TASKS: read directly, every poll), and the lists cost about a round per finish: at
    most 3 queries a task in all."""
    monkeypatch.setattr(task_watcher, "WATCH_QPS", 10.0)  # the test's pace, not production's 1.6/s
    task_ids = submit(30, emoji_input)
    mark = len(paced_emulator.request_log())
    started = time.monotonic()
    events = asyncio.run(
        asyncio.wait_for(run_all([DashScopeTaskTrigger(t, CONN_ID, poll_interval=0.2) for t in task_ids]), 120)
    )
    elapsed = time.monotonic() - started

    assert [e.payload["status"] for e in events] == ["success"] * 30
    assert [e.payload["task"]["task_id"] for e in events] == task_ids
    assert all(e.payload["task"]["video_url"] and e.payload["task"]["video_duration"] for e in events)
    logged_requests(paced_emulator, is_read, 30)  # the log catches up with the answers
    log = [r for r in paced_emulator.request_log()[mark:] if is_query(r)]
    reads = Counter(r["task_id"] for r in log if is_read(r))
    lists = [r for r in log if is_list(r)]
    # One read per task, once the lists stopped showing it; but with FEW_TASKS or fewer left watched a round
    # reads them instead of listing (as cheap as the two pages), so the last ones may be read while running.
    listed_through, last_few = task_ids[: -task_watcher.FEW_TASKS], task_ids[-task_watcher.FEW_TASKS :]
    assert {t: reads[t] for t in listed_through} == dict.fromkeys(listed_through, 1)
    assert set(reads) == set(task_ids) and all(reads[t] >= 1 for t in last_few)
    # Polling alone, each wait would query every 0.2 s for its ~8 s in the queue: ~40 queries a task.
    assert len(log) <= 3 * len(task_ids), (len(lists), elapsed)
    assert len(lists) <= 2 * (elapsed / 0.2 + 1)  # never more than a round (2 pages) per poll interval
    [watcher] = [w for w in task_watcher.watchers() if w.key[0] == paced_emulator.base_url]
    assert not watcher.running and watcher.watched == 0  # the loop stopped with the last wait


def test_an_unknown_task_is_still_confirmed_while_others_of_the_account_end(
    paced_emulator: Any, emoji_input: dict[str, Any]
) -> None:
    [task_id] = submit(1, emoji_input)
    mark = len(paced_emulator.request_log())
    known, unknown = asyncio.run(
        run_all(
            [
                DashScopeTaskTrigger(task_id, CONN_ID, poll_interval=0.05),
                DashScopeTaskTrigger("no-such-task", CONN_ID, poll_interval=0.05, unknown_confirmations=3),
            ]
        )
    )
    assert known.payload["status"] == "success"
    assert (unknown.payload["status"], unknown.payload["task"]["status"]) == ("failed", "UNKNOWN")
    logged_requests(paced_emulator, lambda r: is_read(r) and r["task_id"] == "no-such-task", 3)
    reads = [r for r in paced_emulator.request_log()[mark:] if is_read(r) and r["task_id"] == "no-such-task"]
    assert len(reads) == 3  # believed only when it repeats, as before


@pytest.mark.parametrize("left_over", [False, True], ids=["fresh", "after-an-earlier-loop"])
def test_a_cancelled_wait_unregisters_and_the_loop_stops(
    slow_emulator: Any, emoji_input: dict[str, Any], left_over: bool
) -> None:
    """A wait cleared or killed, or the triggerer stopping: the trigger's task is cancelled.

    ``after-an-earlier-loop``: a watcher of the same (base URL, account) is left by an event loop that ended, as
    an earlier test's emulator on the same port left one (a CI run failed so); a new one replaces it."""
    conn = conn_json(slow_emulator.base_url)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", conn)
        task_ids = submit(2, emoji_input)
        if left_over:
            asyncio.run(leave_a_watcher(CONN_ID))

        async def scenario() -> tuple[int, bool, int, bool]:
            jobs = [
                asyncio.create_task(anext(DashScopeTaskTrigger(t, CONN_ID, poll_interval=0.05).run())) for t in task_ids
            ]
            while not any(w.rounds for w in watchers_here(slow_emulator.base_url)):
                await asyncio.sleep(0.05)
            [watcher] = watchers_here(slow_emulator.base_url)
            jobs[0].cancel()
            await asyncio.sleep(0.1)
            one_left = (watcher.watched, watcher.running)
            jobs[1].cancel()
            await asyncio.gather(*jobs, return_exceptions=True)
            await asyncio.sleep(0.1)
            return (*one_left, watcher.watched, watcher.running)

        assert asyncio.run(asyncio.wait_for(scenario(), 30)) == (1, True, 0, False)
    before = len([r for r in slow_emulator.request_log() if is_list(r)])
    time.sleep(1.0)
    assert len([r for r in slow_emulator.request_log() if is_list(r)]) == before  # nothing polls any more


def test_two_accounts_get_two_watchers(
    emoji_input: dict[str, Any], media_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dashscope_emulator import EmulatorServer

    keys = {"acct-a": KEY, "acct-b": "sk-test-b"}
    server = EmulatorServer(accounts={a: [k] for a, k in keys.items()}, port=0, speed=200, submit_qps=1000).start()
    try:
        conns = {}
        for account, key in keys.items():
            conns[account] = conn_id = f"dashscope_{account.replace('-', '_')}"
            value = {"conn_type": "dashscope", "host": server.base_url, "password": key, "extra": {"account": account}}
            monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(value))
        tasks = [(conn, t) for conn in conns.values() for t in submit(3, emoji_input, conn)]

        async def scenario() -> tuple[list[TriggerEvent], set[tuple[str, str]]]:
            waits = asyncio.gather(*(one(DashScopeTaskTrigger(t, c, poll_interval=0.05)) for c, t in tasks))
            await asyncio.sleep(0.2)
            running = {w.key for w in watchers_here(server.base_url) if w.running}
            return await waits, running

        async def one(trigger: DashScopeTaskTrigger) -> TriggerEvent:
            return await anext(aiter(trigger.run()))

        events, running = asyncio.run(scenario())
        lists = Counter(r["key_fingerprint"] for r in server.request_log() if is_list(r))
        base_url = server.base_url
    finally:
        server.stop()
    assert [e.payload["status"] for e in events] == ["success"] * 6
    assert running == {(base_url, "acct-a"), (base_url, "acct-b")}
    assert len(lists) == 2  # each account's own watcher listed its own tasks


def test_without_the_watcher_the_trigger_polls_its_task_alone(
    dashscope_conn: str, emulator: Any, emoji_input: dict[str, Any]
) -> None:
    [task_id] = submit(1, emoji_input)
    trigger = DashScopeTaskTrigger(task_id, dashscope_conn, poll_interval=0.05, watch_account=False)
    assert trigger.serialize()[1]["watch_account"] is False
    assert "watch_account" not in DashScopeTaskTrigger(task_id).serialize()[1]  # the default, as stored before
    [event] = asyncio.run(run_all([trigger]))
    assert event.payload["status"] == "success"
    assert not [r for r in emulator.request_log() if is_list(r)]
