"""The wait step (talking_heads.row.wait) on the emulator's real task answers: a task's end is recorded once
(``generated`` and billed, or ``failed`` with the service's code), an earlier try's recorded end is reused
without polling, and the worker's poll gives up after its timeout."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from dashscope_provider.compat import AirflowFailException
from dashscope_provider.models import TaskStatus
from talking_heads.row.ledger import RowLedger
from talking_heads.row.payloads import Submission, WaitResult
from talking_heads.row.states import RowRecord
from talking_heads.row.wait import finished_result, poll_until_done, record_task_end

pytestmark = pytest.mark.usefixtures("no_key_in_logs")


def _submitted(ledger: RowLedger, hook: Any, media: dict[str, Any], conn_id: str) -> Submission:
    """A task sent to the service, and the row recorded as the submit step leaves it."""
    task_id = hook.submit_task("emo-v1", media).task_id
    ledger.put(RowRecord("r", "submitted", model="emo-v1", task_id=task_id, conn_id=conn_id))
    return Submission("r", task_id, conn_id)


def test_a_succeeded_task_is_recorded_generated_once_and_reused_by_a_later_try(
    dashscope_conn: str, make_hook: Callable[..., Any], wait_terminal: Any, emo_input: dict[str, Any], tmp_path: Path
) -> None:
    ledger, hook = RowLedger(str(tmp_path)), make_hook()
    submission = _submitted(ledger, hook, emo_input, dashscope_conn)
    assert finished_result(ledger, submission) is None  # not ended yet: the step polls
    task = wait_terminal(hook, submission.task_id)
    assert task.status == TaskStatus.SUCCEEDED

    result = record_task_end(ledger, submission, task)
    assert result == WaitResult("r", task.task_id, task.video_duration, task.video_ratio)
    record = ledger.get("r")
    assert record is not None and (record.status, record.billed, record.video_url) == (
        "generated",
        True,
        task.video_url,
    )
    revision = record.revision
    # An overlapping run following the same task records nothing again.
    assert record_task_end(ledger, submission, task) == result
    assert ledger.get("r").revision == revision  # type: ignore[union-attr]
    # A retry of the wait step reads the recorded end instead of polling; another task of the row does not.
    assert finished_result(ledger, submission) == result
    assert finished_result(ledger, Submission("r", "t-other", dashscope_conn)) is None


def test_a_failed_task_is_recorded_failed_unbilled_with_the_services_code(
    dashscope_conn: str, make_hook: Callable[..., Any], wait_terminal: Any, emo_input: dict[str, Any], tmp_path: Path
) -> None:
    ledger, hook = RowLedger(str(tmp_path)), make_hook()
    refused = {**emo_input, "image_url": emo_input["image_url"] + "?emulator_error=InvalidFile.Content"}
    submission = _submitted(ledger, hook, refused, dashscope_conn)
    task = wait_terminal(hook, submission.task_id)
    with pytest.raises(AirflowFailException, match=rf"row r: task {task.task_id} ended FAILED: InvalidFile\.Content"):
        record_task_end(ledger, submission, task)
    record = ledger.get("r")
    assert record is not None and (record.status, record.code, record.billed) == (
        "failed",
        "InvalidFile.Content",
        False,
    )
    assert record.message == task.message
    assert finished_result(ledger, submission) is None


def test_a_task_the_service_no_longer_knows_ends_the_row_unknown(
    dashscope_conn: str, emulator: Any, make_hook: Callable[..., Any], emo_input: dict[str, Any], tmp_path: Path
) -> None:
    ledger, hook = RowLedger(str(tmp_path)), make_hook()
    submission = _submitted(ledger, hook, emo_input, dashscope_conn)
    emulator.advance(25 * 3600)  # task ids expire 24 h after submission
    task = hook.get_task(submission.task_id)
    assert task.status == TaskStatus.UNKNOWN
    with pytest.raises(AirflowFailException, match="ended UNKNOWN"):
        record_task_end(ledger, submission, task)
    record = ledger.get("r")
    assert record is not None and (record.status, record.code, record.billed) == ("failed", "UNKNOWN", False)
    assert "24 h" in (record.message or "")


def test_the_workers_poll_returns_the_terminal_task_or_gives_up_after_its_timeout(
    slow_emulator: Any, monkeypatch: pytest.MonkeyPatch, make_hook: Callable[..., Any], emo_input: dict[str, Any]
) -> None:
    from tests.unit.conftest import CONN_ID, conn_json

    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", conn_json(slow_emulator.base_url))
    hook = make_hook()
    task_id = hook.submit_task("emo-v1", emo_input).task_id
    with pytest.raises(AirflowFailException, match=rf"DashScope task {task_id} still (PENDING|RUNNING) after 0.5 s"):
        poll_until_done(hook, task_id, interval=0.1, timeout=0.5)


def test_the_workers_poll_ends_with_the_task(
    dashscope_conn: str, make_hook: Callable[..., Any], emo_input: dict[str, Any]
) -> None:
    hook = make_hook()
    task_id = hook.submit_task("emo-v1", emo_input).task_id
    task = poll_until_done(hook, task_id, interval=0.05, timeout=30)
    assert task.task_id == task_id and task.is_terminal and task.status == TaskStatus.SUCCEEDED
