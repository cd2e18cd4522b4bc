"""RowTaskTrigger against the emulator: the wait ends in the triggerer, with the ledger written first."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from airflow.triggers.base import TaskSuccessEvent, TriggerEvent

pytestmark = pytest.mark.usefixtures("no_key_in_logs", "quick_retries")

CLASSPATH = "talking_heads.orchestration.triggers.RowTaskTrigger"


@pytest.fixture
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Triggers build their hook with production back-offs (seconds); shorten them for the tests."""
    from dashscope_provider.triggers.dashscope import DashScopeTaskTrigger

    from tests.unit.dashscope_provider.conftest import fast_hook

    monkeypatch.setattr(DashScopeTaskTrigger, "_hook", lambda self: fast_hook(self.dashscope_conn_id))


def run_trigger(trigger: Any, limit: float = 30.0) -> list[TriggerEvent]:
    """Run the trigger's async generator to its end in a fresh event loop; return every event."""

    async def collect() -> list[TriggerEvent]:
        return [event async for event in trigger.run()]

    return asyncio.run(asyncio.wait_for(collect(), limit))


def _submitted(output_root: Path, row_id: str, task_id: str, conn_id: str) -> None:
    """The ledger as the submit step leaves it."""
    from talking_heads.row.ledger import RowLedger
    from talking_heads.row.states import RowRecord

    RowLedger(str(output_root)).put(RowRecord(row_id=row_id, status="submitted", task_id=task_id, conn_id=conn_id))


def _trigger(task_id: str, conn_id: str, output_root: Path | str, row_id: str = "r-1") -> Any:
    from talking_heads.orchestration.triggers import RowTaskTrigger

    return RowTaskTrigger(task_id, conn_id, poll_interval=0.05, row_id=row_id, output_root=str(output_root))


def test_serialize_round_trip_names_an_importable_class() -> None:
    from airflow.sdk.module_loading import import_string

    classpath, kwargs = _trigger("t-1", "dashscope_x", "s3://bucket/out").serialize()
    assert classpath == CLASSPATH
    assert kwargs["row_id"] == "r-1" and kwargs["output_root"] == "s3://bucket/out"
    assert kwargs["storage_conn_id"] is None and kwargs["dashscope_task_id"] == "t-1"
    json.dumps(kwargs)
    assert import_string(classpath)(**kwargs).serialize() == (classpath, kwargs)


def test_a_succeeded_task_is_recorded_and_ends_the_wait_with_its_result(
    dashscope_conn: str, make_hook: Any, emo_input: dict[str, Any], tmp_path: Path
) -> None:
    from talking_heads.row.ledger import RowLedger

    task_id = make_hook().submit_task("emo-v1", emo_input).task_id
    _submitted(tmp_path, "r-1", task_id, dashscope_conn)
    [event] = run_trigger(_trigger(task_id, dashscope_conn, tmp_path))

    assert isinstance(event, TaskSuccessEvent)
    result = event.xcoms["return_value"]  # type: ignore[index]
    state = RowLedger(str(tmp_path)).get("r-1")
    assert state is not None and (state.status, state.billed, state.task_id) == ("generated", True, task_id)
    assert state.video_url  # the signed URL is in the ledger ...
    assert result == {
        "row_id": "r-1",
        "task_id": task_id,
        "video_duration": state.video_duration,
        "video_ratio": state.video_ratio,
    }
    assert "http" not in json.dumps(event.xcoms)  # ... and never in XCom
    # What the triggerer stores and the API server's handler reads back: the event survives serialization.
    assert TaskSuccessEvent.model_validate(json.loads(event.model_dump_json())).xcoms == event.xcoms


def test_a_failed_task_is_recorded_failed_and_resumes_the_wait_to_fail_without_retries(
    dashscope_conn: str, make_hook: Any, emo_input: dict[str, Any], tmp_path: Path
) -> None:
    from dashscope_provider.compat import AirflowFailException
    from talking_heads.orchestration.operators import WaitRowOperator
    from talking_heads.row.ledger import RowLedger

    bad = {**emo_input, "image_url": emo_input["image_url"] + "?emulator_error=InvalidFile.Content"}
    task_id = make_hook().submit_task("emo-v1", bad).task_id
    _submitted(tmp_path, "r-1", task_id, dashscope_conn)
    [event] = run_trigger(_trigger(task_id, dashscope_conn, tmp_path))

    assert not isinstance(event, TaskSuccessEvent)  # a TaskFailedEvent would be retried while retries are left
    assert event.payload["status"] == "failed"
    state = RowLedger(str(tmp_path)).get("r-1")
    assert state is not None and (state.status, state.code, state.billed) == ("failed", "InvalidFile.Content", False)
    assert state.message

    wait = WaitRowOperator(
        task_id="wait",
        submission={"row_id": "r-1", "task_id": task_id, "conn_id": dashscope_conn},
        output_root=str(tmp_path),
    )
    with pytest.raises(AirflowFailException, match=r"InvalidFile\.Content"):
        wait.execute_complete({}, event.payload)  # type: ignore[arg-type]
    assert RowLedger(str(tmp_path)).get("r-1").status == "failed"  # type: ignore[union-attr]


def test_a_ledger_it_cannot_write_leaves_the_recording_to_the_resumed_wait(
    dashscope_conn: str, make_hook: Any, emo_input: dict[str, Any], tmp_path: Path
) -> None:
    task_id = make_hook().submit_task("emo-v1", emo_input).task_id
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    [event] = run_trigger(_trigger(task_id, dashscope_conn, blocked))
    assert not isinstance(event, TaskSuccessEvent)
    assert event.payload["status"] == "success" and event.payload["task"]["task_id"] == task_id


def test_the_wait_defers_to_the_row_trigger(
    dashscope_conn: str, make_hook: Any, emo_input: dict[str, Any], tmp_path: Path
) -> None:
    from talking_heads.orchestration.operators import WaitRowOperator
    from talking_heads.orchestration.triggers import RowTaskTrigger

    from tests.harness.airflow_compat import TaskDeferred

    task_id = make_hook().submit_task("emo-v1", emo_input).task_id
    wait = WaitRowOperator(
        task_id="wait",
        submission={"row_id": "r-1", "task_id": task_id, "conn_id": dashscope_conn},
        output_root=str(tmp_path),
        storage_conn_id="",
        deferrable=True,
    )
    with pytest.raises(TaskDeferred) as deferred:
        wait.execute({})  # type: ignore[arg-type]
    trigger = deferred.value.trigger
    assert isinstance(trigger, RowTaskTrigger)
    assert (trigger.row_id, trigger.output_root, trigger.storage_conn_id) == ("r-1", str(tmp_path), None)
