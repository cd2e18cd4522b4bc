"""DashScopeTaskTrigger against the emulator, run in a real event loop."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
from airflow.triggers.base import TriggerEvent
from dashscope_provider.hooks.dashscope import DashScopeHook
from dashscope_provider.models import DashScopeTask
from dashscope_provider.triggers.dashscope import DashScopeTaskTrigger

from tests.unit.conftest import CONN_ID, conn_json, is_query, logged_requests

pytestmark = pytest.mark.usefixtures("no_key_in_logs")


CLASSPATH = "dashscope_provider.triggers.dashscope.DashScopeTaskTrigger"


def run_trigger(trigger: DashScopeTaskTrigger, limit: float = 30.0) -> list[TriggerEvent]:
    """Run the trigger's async generator to its end in a fresh event loop; return every event."""

    async def collect() -> list[TriggerEvent]:
        return [event async for event in trigger.run()]

    return asyncio.run(asyncio.wait_for(collect(), limit))


def test_serialize_round_trip() -> None:
    trigger = DashScopeTaskTrigger(
        dashscope_task_id="t-1", dashscope_conn_id="dashscope_x", poll_interval=2, timeout=600
    )
    classpath, kwargs = trigger.serialize()
    assert classpath == CLASSPATH
    assert kwargs == {
        "dashscope_task_id": "t-1",
        "dashscope_conn_id": "dashscope_x",
        "poll_interval": 2.0,
        "timeout": 600.0,
        "unknown_confirmations": 3,
    }
    json.dumps(kwargs)  # JSON-able as is
    from airflow.sdk.module_loading import import_string

    rebuilt = import_string(classpath)(**kwargs)
    assert rebuilt.serialize() == (classpath, kwargs)
    assert DashScopeTaskTrigger("t-2").serialize()[1]["timeout"] is None


@pytest.mark.usefixtures("quick_retries")
def test_trigger_until_succeeded(make_hook: Any, emo_input: dict[str, Any], emulator_100x: Any) -> None:
    task_id = make_hook().submit_task("emo-v1", emo_input).task_id
    events = run_trigger(DashScopeTaskTrigger(task_id, CONN_ID, poll_interval=0.05))
    assert len(events) == 1
    payload = events[0].payload
    assert payload["status"] == "success"
    task = DashScopeTask.from_dict(payload["task"])
    assert (task.task_id, task.status, task.video_ratio) == (task_id, "SUCCEEDED", "1:1")
    assert task.video_url and task.video_duration
    json.dumps(payload)  # trigger events must be serializable
    # It polled more than once: it waited through PENDING/RUNNING.
    assert len(logged_requests(emulator_100x, is_query, 2)) >= 2


@pytest.mark.usefixtures("quick_retries")
def test_trigger_failed_task(dashscope_conn: str, make_hook: Any, emo_input: dict[str, Any]) -> None:
    bad = {**emo_input, "image_url": emo_input["image_url"] + "?emulator_error=InvalidFile.Content"}
    task_id = make_hook().submit_task("emo-v1", bad).task_id
    [event] = run_trigger(DashScopeTaskTrigger(task_id, dashscope_conn, poll_interval=0.05))
    assert event.payload["status"] == "failed"
    assert event.payload["task"]["status"] == "FAILED"
    assert event.payload["task"]["code"] == "InvalidFile.Content"
    assert "InvalidFile.Content" in event.payload["message"]


@pytest.mark.usefixtures("quick_retries")
def test_trigger_unknown_task(dashscope_conn: str, emulator: Any) -> None:
    [event] = run_trigger(DashScopeTaskTrigger("no-such-task", dashscope_conn, poll_interval=0.05))
    assert (event.payload["status"], event.payload["task"]["status"]) == ("failed", "UNKNOWN")
    # Believed only when it repeats: a task store lagging behind the submit must not end a paid task.
    queries = logged_requests(emulator, lambda r: is_query(r) and r.get("task_id") == "no-such-task", at_least=3)
    assert len(queries) == 3


@pytest.mark.usefixtures("quick_retries")
def test_trigger_keeps_waiting_through_transient_errors(
    dashscope_conn: str, make_hook: Any, emoji_input: dict[str, Any], emulator: Any
) -> None:
    task_id = make_hook().submit_task("emoji-v1", emoji_input).task_id
    # More consecutive failures than one get_task call retries (5): the trigger must outlast them.
    for fault in ["query_500", "drop_query", "query_503"] * 3:
        emulator.force_next(fault)
    [event] = run_trigger(DashScopeTaskTrigger(task_id, dashscope_conn, poll_interval=0.05))
    assert event.payload["status"] == "success"
    statuses = [r["status"] for r in logged_requests(emulator, is_query, 10)]
    assert [s for s in statuses if s != 200] == [500, None, 503] * 3  # lists and reads alike outlast them


@pytest.mark.usefixtures("quick_retries")
def test_trigger_timeout(
    slow_emulator: Any, make_hook: Any, emo_input: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", conn_json(slow_emulator.base_url))
    task_id = make_hook().submit_task("emo-v1", emo_input).task_id
    started = time.monotonic()
    # 1.5 s: the account's watcher reads the PENDING and the RUNNING list 0.625 s apart (WATCH_QPS).
    [event] = run_trigger(DashScopeTaskTrigger(task_id, CONN_ID, poll_interval=0.1, timeout=1.5))
    assert 1.4 < time.monotonic() - started < 5
    assert event.payload["status"] == "timeout"
    assert event.payload["task"]["status"] in ("PENDING", "RUNNING")


@pytest.mark.usefixtures("quick_retries")
def test_trigger_ends_with_error_on_persistent_401(emulator: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", conn_json(emulator.base_url, "sk-wrong-key"))
    [event] = run_trigger(DashScopeTaskTrigger("some-task", CONN_ID, poll_interval=0.05))
    assert event.payload["status"] == "error"
    assert "InvalidApiKey" in event.payload["message"]
    assert "sk-wrong-key" not in json.dumps(event.payload)
    assert len(logged_requests(emulator, is_query, 3)) == 3  # a few tries, then it gives up


@pytest.mark.usefixtures("quick_retries")
def test_trigger_error_when_connection_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIRFLOW_CONN_DASHSCOPE_MISSING", raising=False)
    [event] = run_trigger(DashScopeTaskTrigger("some-task", "dashscope_missing", poll_interval=0.05))
    assert event.payload["status"] == "error"
    assert "dashscope_missing" in event.payload["message"]


def test_on_kill_cancels_a_queued_task_and_leaves_a_running_one(
    slow_emulator: Any, emoji_input: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Mark-failed or clear of a deferred wait: Airflow calls the trigger's on_kill in the triggerer."""

    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", conn_json(slow_emulator.base_url))
    hook = DashScopeHook(dashscope_conn_id=CONN_ID)
    running = hook.submit_task("emoji-v1", emoji_input).task_id
    queued = hook.submit_task("emoji-v1", emoji_input).task_id
    asyncio.run(DashScopeTaskTrigger(queued, CONN_ID).on_kill())
    asyncio.run(DashScopeTaskTrigger(running, CONN_ID).on_kill())
    assert hook.get_task(queued).status == "CANCELED"
    assert hook.get_task(running).status == "RUNNING"
    assert not [b for b in slow_emulator.billing() if b["task_id"] == queued]
