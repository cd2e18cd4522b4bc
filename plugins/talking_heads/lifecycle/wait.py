"""The wait step: how a row's task ended is recorded (:func:`record_task_end`), once."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from dashscope_provider.compat import AirflowFailException
from dashscope_provider.models import DashScopeTask, TaskStatus

from talking_heads.lifecycle.states import RowState
from talking_heads.lifecycle.states import RowStatus as S
from talking_heads.payloads import Submission, WaitResult

if TYPE_CHECKING:
    from dashscope_provider.hooks.dashscope import DashScopeHook

    from talking_heads.ledger import RowLedger


def finished_result(ledger: RowLedger, submission: Submission) -> WaitResult | None:
    """The recorded end of the submission's task, if an earlier try already saw it (then nothing is polled)."""
    state = ledger.get(submission.row_id)
    if state is not None and state.state in (S.GENERATED, S.SUCCEEDED) and state.task_id == submission.task_id:
        return WaitResult.of(state)
    return None


def record_task_end(ledger: RowLedger, submission: Submission, task: DashScopeTask) -> WaitResult:
    """Record how the row's task ended: ``generated`` (billed), or ``failed`` (raises).

    Recorded once: an overlapping run that follows the same task finds its end already recorded.
    """
    row_id = submission.row_id

    def recorded(state: RowState | None, *ends: S) -> bool:
        return state is not None and state.task_id == task.task_id and state.state in ends

    def current(state: RowState | None) -> RowState:
        return state or RowState(row_id=row_id, state=S.SUBMITTED, task_id=task.task_id)

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
            lambda cur: None if recorded(cur, S.GENERATED, S.SUCCEEDED) else current(cur).advance(S.GENERATED, **usage),
        )
        return WaitResult.of(current(state))
    code = task.code or task.status
    message = task.message or {
        TaskStatus.UNKNOWN: "the service no longer knows this task (task ids expire 24 h after creation)",
        TaskStatus.CANCELED: "the task was canceled before it ran",
    }.get(task.status, f"task ended {task.status}")
    failed = dict(task_id=task.task_id, code=code, message=message, billed=False)
    ledger.update(row_id, lambda cur: None if recorded(cur, S.FAILED) else current(cur).advance(S.FAILED, **failed))
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
