"""The wait step: how a row's task ended is recorded (:func:`record_task_end`), once."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from dashscope_provider.compat import AirflowFailException
from dashscope_provider.models import DashScopeTask, TaskStatus

from talking_heads.row.payloads import Submission, WaitResult
from talking_heads.row.states import RowRecord, RowStatus

if TYPE_CHECKING:
    from dashscope_provider.hooks.dashscope import DashScopeHook

    from talking_heads.row.ledger import RowLedger


def finished_result(ledger: RowLedger, submission: Submission) -> WaitResult | None:
    """The recorded end of the submission's task, if an earlier try already saw it (then nothing is polled)."""
    state = ledger.get(submission.row_id)
    if (
        state is not None
        and state.status in (RowStatus.GENERATED, RowStatus.SUCCEEDED)
        and state.task_id == submission.task_id
    ):
        return WaitResult.of(state)
    return None


def record_task_end(ledger: RowLedger, submission: Submission, task: DashScopeTask) -> WaitResult:
    """Record how the row's task ended: ``generated`` (billed), or ``failed`` (raises).

    Recorded once: an overlapping run that follows the same task finds its end already recorded.
    """
    row_id = submission.row_id

    def recorded(state: RowRecord | None, *ends: RowStatus) -> bool:
        return state is not None and state.task_id == task.task_id and state.status in ends

    def current(state: RowRecord | None) -> RowRecord:
        return state or RowRecord(row_id=row_id, status=RowStatus.SUBMITTED, task_id=task.task_id)

    if task.status == TaskStatus.SUCCEEDED:
        usage = dict(
            task_id=task.task_id,
            billed=True,
            video_url=task.video_url,
            video_duration=task.video_duration,
            video_ratio=task.video_ratio,
        )
        state = ledger.update(
            row_id,
            lambda cur: (
                None
                if recorded(cur, RowStatus.GENERATED, RowStatus.SUCCEEDED)
                else current(cur).advance(RowStatus.GENERATED, **usage)
            ),
        )
        return WaitResult.of(current(state))
    code = task.code or task.status
    message = task.message or {
        TaskStatus.UNKNOWN: "the service no longer knows this task (task ids expire 24 h after creation)",
        TaskStatus.CANCELED: "the task was canceled before it ran",
    }.get(task.status, f"task ended {task.status}")
    failed = dict(task_id=task.task_id, code=code, message=message, billed=False)
    ledger.update(
        row_id,
        lambda cur: None if recorded(cur, RowStatus.FAILED) else current(cur).advance(RowStatus.FAILED, **failed),
    )
    raise AirflowFailException(f"row {row_id}: task {task.task_id} ended {task.status}: {code}: {message}")


def poll_until_done(hook: DashScopeHook, task_id: str, *, interval: float, timeout: float) -> DashScopeTask:
    """Poll from the worker (the non-deferrable wait) until the task is terminal."""
    deadline = time.monotonic() + timeout
    while True:
        task = hook.get_task(task_id)
        if task.is_terminal:
            return task
        if time.monotonic() + interval > deadline:
            raise AirflowFailException(f"DashScope task {task_id} still {task.status} after {timeout:g} s")
        time.sleep(interval)
