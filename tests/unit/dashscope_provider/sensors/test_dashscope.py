"""The sensor against the emulator, including the deferral round trip through the trigger."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from dashscope_provider.compat import AirflowFailException, AirflowSensorTimeout
from dashscope_provider.exceptions import DashScopeError, DashScopeTaskFailed
from dashscope_provider.sensors.dashscope import DashScopeTaskSensor
from dashscope_provider.triggers.dashscope import DashScopeTaskTrigger

from tests.harness.airflow_compat import TaskDeferred

pytestmark = pytest.mark.usefixtures("no_key_in_logs")


def _task(status: str, **extra: Any) -> dict[str, Any]:
    return {"task_id": "t-1", "status": status, **extra}


def _sensor_on_new_task(
    make_hook: Any, dashscope_conn: str, inputs: dict[str, Any], **sensor_args: Any
) -> tuple[str, DashScopeTaskSensor]:
    """Submit an ``emo-v1`` task of ``inputs``; its id and a sensor ``wait`` on it (with ``sensor_args``)."""
    task_id = make_hook().submit_task("emo-v1", inputs).task_id
    sensor = DashScopeTaskSensor(
        task_id="wait", dashscope_task_id=task_id, dashscope_conn_id=dashscope_conn, **sensor_args
    )
    return task_id, sensor


@pytest.mark.usefixtures("quick_retries")
def test_sensor_defers_then_completes_through_the_trigger(
    dashscope_conn: str, emo_input: dict[str, Any], make_hook: Any
) -> None:
    task_id, sensor = _sensor_on_new_task(
        make_hook, dashscope_conn, emo_input, poll_interval=0.05, timeout=600, deferrable=True
    )
    with pytest.raises(TaskDeferred) as info:
        sensor.execute({})  # type: ignore[arg-type]
    deferred = info.value
    assert deferred.method_name == "execute_complete"
    assert deferred.timeout is not None and deferred.timeout.total_seconds() == 600
    assert isinstance(deferred.trigger, DashScopeTaskTrigger)
    assert deferred.trigger.serialize()[1] == {
        "dashscope_task_id": task_id,
        "dashscope_conn_id": dashscope_conn,
        "poll_interval": 0.05,
        "timeout": None,
        "unknown_confirmations": 3,
    }

    async def first_event() -> Any:
        async for event in deferred.trigger.run():
            return event

    event = asyncio.run(asyncio.wait_for(first_event(), 30))
    # What the task runner does when the trigger fires.
    result = sensor.resume_execution("execute_complete", {"event": event.payload}, {})  # type: ignore[arg-type]
    assert (result["task_id"], result["status"], result["video_ratio"]) == (task_id, "SUCCEEDED", "1:1")
    assert result["video_url"]


def test_sensor_returns_at_once_when_already_terminal(
    dashscope_conn: str, emoji_input: dict[str, Any], make_hook: Any, wait_terminal: Any
) -> None:
    hook = make_hook()
    task_id = hook.submit_task("emoji-v1", emoji_input).task_id
    wait_terminal(hook, task_id)
    sensor = DashScopeTaskSensor(task_id="wait", dashscope_task_id=task_id, dashscope_conn_id=dashscope_conn)
    result = sensor.execute({})  # type: ignore[arg-type]  # no TaskDeferred
    assert (result["status"], result["video_ratio"]) == ("SUCCEEDED", "standard")


def test_sensor_poke_mode(dashscope_conn: str, emo_input: dict[str, Any], make_hook: Any) -> None:
    _, sensor = _sensor_on_new_task(
        make_hook, dashscope_conn, emo_input, poll_interval="0.05", deferrable=False, timeout=60
    )
    result = sensor.execute({})  # type: ignore[arg-type]
    assert result["status"] == "SUCCEEDED"
    assert sensor.poke_interval == 0.05  # the (rendered) string was applied


def test_sensor_poke_mode_failed_task(dashscope_conn: str, emo_input: dict[str, Any], make_hook: Any) -> None:
    bad = {**emo_input, "image_url": emo_input["image_url"] + "?emulator_error=InvalidFile.FullFace"}
    task_id, sensor = _sensor_on_new_task(
        make_hook, dashscope_conn, bad, poll_interval=0.05, deferrable=False, timeout=60
    )
    with pytest.raises(DashScopeTaskFailed) as info:
        sensor.execute({})  # type: ignore[arg-type]
    assert (info.value.task_id, info.value.status, info.value.code) == (task_id, "FAILED", "InvalidFile.FullFace")
    assert isinstance(info.value, AirflowFailException)


@pytest.mark.parametrize("status", ["FAILED", "CANCELED", "UNKNOWN"])
def test_sensor_execute_complete_failures(status: str) -> None:
    sensor = DashScopeTaskSensor(task_id="wait", dashscope_task_id="t-1")
    event = {
        "status": "failed",
        "task": _task(status, code="InvalidURL" if status == "FAILED" else None),
        "message": "ended",
    }
    with pytest.raises(DashScopeTaskFailed, match=status):
        sensor.execute_complete({}, event)  # type: ignore[arg-type]
    lenient = DashScopeTaskSensor(task_id="wait2", dashscope_task_id="t-1", fail_on_task_failure=False)
    assert lenient.execute_complete({}, event)["status"] == status  # type: ignore[arg-type]


def test_sensor_execute_complete_success_timeout_error() -> None:
    sensor = DashScopeTaskSensor(task_id="wait", dashscope_task_id="t-1")
    ok = sensor.execute_complete(
        {},
        {
            "status": "success",
            "task": _task("SUCCEEDED", video_url="http://v"),  # type: ignore[arg-type]
            "message": "ok",
        },
    )
    assert ok["video_url"] == "http://v"
    with pytest.raises(AirflowSensorTimeout):
        sensor.execute_complete({}, {"status": "timeout", "task": _task("RUNNING"), "message": "late"})  # type: ignore[arg-type]
    with pytest.raises(DashScopeError, match="InvalidApiKey"):
        sensor.execute_complete({}, {"status": "error", "task": None, "message": "401 InvalidApiKey"})  # type: ignore[arg-type]


def test_sensor_templates() -> None:
    assert set(DashScopeTaskSensor.template_fields) >= {"dashscope_task_id", "dashscope_conn_id", "poll_interval"}
    sensor = DashScopeTaskSensor(task_id="wait", dashscope_task_id="{{ params.t }}", poll_interval="{{ params.p }}")
    sensor.render_template_fields({"params": {"t": "t-9", "p": 7}})  # type: ignore[arg-type]
    assert (sensor.dashscope_task_id, float(sensor.poll_interval)) == ("t-9", 7.0)


def test_sensor_deferrable_default_follows_the_config(monkeypatch: pytest.MonkeyPatch) -> None:
    """As Airflow's own sensors: ``[operators] default_deferrable``, read when the module is imported."""
    import importlib

    import dashscope_provider.sensors.dashscope as module

    assert DashScopeTaskSensor(task_id="wait", dashscope_task_id="t").deferrable is False  # the fallback
    monkeypatch.setenv("AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE", "True")
    try:
        reloaded = importlib.reload(module)
        assert reloaded.DashScopeTaskSensor(task_id="wait", dashscope_task_id="t").deferrable is True
    finally:
        monkeypatch.delenv("AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE")
        importlib.reload(module)
    assert DashScopeTaskSensor(task_id="w", dashscope_task_id="t", deferrable=True).deferrable is True


def test_sensor_hook_is_built_once_from_the_rendered_connection() -> None:
    sensor = DashScopeTaskSensor(task_id="wait", dashscope_task_id="t", dashscope_conn_id="{{ params.conn }}")
    sensor.render_template_fields({"params": {"conn": "c2"}})  # type: ignore[arg-type]
    assert sensor.hook is sensor.hook and sensor.hook.dashscope_conn_id == "c2"
