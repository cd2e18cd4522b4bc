"""The row wait's trigger: polls a row's DashScope task and ends the wait task from the triggerer.

:class:`RowTaskTrigger` is the provider's :class:`~dashscope_provider.triggers.dashscope.DashScopeTaskTrigger`
(waiting through its account's watcher) plus one small write when the task ends: the row's ledger record
(:func:`talking_heads.row.wait.record_task_end`), in a thread so the triggerer's event loop never blocks
on storage. Then, instead of resuming the wait in a task process:

================================  ===============================================================================
the task                          the trigger yields
================================  ===============================================================================
SUCCEEDED, recorded               ``TaskSuccessEvent`` with the :class:`~talking_heads.row.payloads.WaitResult` as the
                                  task's ``return_value`` XCom: the task ends here, no task process runs
FAILED / CANCELED / UNKNOWN       the provider's ``failed`` event, after recording ``failed`` + code: the wait
                                  resumes once to fail *without retries* (``AirflowFailException``). A
                                  ``TaskFailedEvent`` would not do: Airflow routes it to ``up_for_retry`` while
                                  the task has retries left (``airflow/models/trigger.py``, the
                                  ``BaseTaskEndEvent`` handler of ``handle_event_submit``)
the ledger write failed           the provider's event as is: the wait resumes and records it, with its retries
timeout, error                    the provider's event as is (the resume raises as before)
================================  ===============================================================================

The XCom is the same ``WaitResult`` dict the resumed wait returned; the signed video URL stays in the ledger.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from airflow.triggers.base import BaseTrigger, TaskSuccessEvent, TriggerEvent
from dashscope_provider.compat import AirflowFailException
from dashscope_provider.triggers.dashscope import DEFAULT_CONN_ID, DashScopeTaskTrigger, task_from_event

from talking_heads.row import wait
from talking_heads.row.ledger import RowLedger
from talking_heads.row.payloads import Submission, WaitResult

#: The XCom key Airflow's ``.output`` (``XComArg``) reads: what the download step pulls.
RETURN_VALUE = "return_value"


class RowTaskTrigger(DashScopeTaskTrigger):
    """Wait for a row's task in the triggerer, record its end in the row's ledger, end the wait task.

    :param row_id: the row whose ledger record is updated.
    :param output_root: where the ledger lives (``state/{row_id}.json``), as the wait operator got it.
    :param storage_conn_id: Airflow connection of the store under ``output_root`` (None: its defaults).
    The other parameters are :class:`DashScopeTaskTrigger`'s.
    """

    def __init__(
        self,
        dashscope_task_id: str,
        dashscope_conn_id: str = DEFAULT_CONN_ID,
        poll_interval: float = 15.0,
        timeout: float | None = None,
        unknown_confirmations: int = 3,
        watch_account: bool = True,
        *,
        row_id: str,
        output_root: str,
        storage_conn_id: str | None = None,
    ) -> None:
        super().__init__(
            dashscope_task_id, dashscope_conn_id, poll_interval, timeout, unknown_confirmations, watch_account
        )
        self.row_id = row_id
        self.output_root = output_root
        self.storage_conn_id = storage_conn_id or None

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """The provider trigger's arguments plus where the row's ledger record is (no credentials)."""
        classpath, kwargs = super().serialize()
        return classpath, {
            **kwargs,
            "row_id": self.row_id,
            "output_root": self.output_root,
            "storage_conn_id": self.storage_conn_id,
        }

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Wait as the provider's trigger does (through the account's watcher); on its one event, record the
        task's end and end the task."""
        async for event in super().run():
            yield await self._finish(event)
            return

    async def _finish(self, event: TriggerEvent) -> TriggerEvent:
        submission = Submission(self.row_id, self.dashscope_task_id, self.dashscope_conn_id)
        ended = await record_end(event.payload, submission, self.output_root, self.storage_conn_id, self.log)
        if ended is None or ended.result is None:
            return event  # failed (recorded), timeout, error, or not recorded: the wait resumes on a worker
        return TaskSuccessEvent(xcoms={RETURN_VALUE: ended.result.to_dict()})


@dataclass(frozen=True)
class RecordedEnd:
    """A row's task end, recorded in its ledger by the trigger: its result, or None when it failed."""

    result: WaitResult | None


async def record_end(
    payload: dict[str, Any], submission: Submission, output_root: str, storage_conn_id: str | None, log: Any
) -> RecordedEnd | None:
    """Record a provider trigger event's task end in the row's ledger (:func:`talking_heads.row.wait.record_task_end`).

    None when there is nothing to record here (timeout, error) or the write failed: the resumed wait then
    records it on a worker, with its retries.
    """
    if payload.get("status") not in ("success", "failed") or not payload.get("task"):
        return None
    task = task_from_event(payload, submission.task_id)

    def write() -> WaitResult | None:
        try:
            return wait.record_task_end(RowLedger(output_root, storage_conn_id), submission, task)
        except AirflowFailException:  # the task failed: recorded so
            return None

    try:
        # Sync storage I/O (fsspec, maybe a connection lookup) off the event loop: other triggers keep polling.
        result = await asyncio.to_thread(write)
    except Exception as error:  # the store is down, say: the resumed wait records it, with its retries
        log.warning(
            "Row %s: could not record the end of task %s here (%s: %s); the wait resumes on a worker",
            submission.row_id,
            submission.task_id,
            type(error).__name__,
            error,
        )
        return None
    if result is None:
        log.info("Row %s: task %s recorded as failed", submission.row_id, task.task_id)
    else:
        log.info("Row %s: task %s recorded as generated", submission.row_id, task.task_id)
    return RecordedEnd(result)


class RowChunkTrigger(BaseTrigger):
    """Wait for the tasks of a chunk of rows together, record each end as it comes, end the wait task.

    Each row waits as :class:`RowTaskTrigger` does (the provider trigger, through its account's watcher, so a
    chunk costs the account no more queries than its rows would alone), inside one trigger: one trigger
    row, one deferral and no resume per chunk instead of per row. When every row's end is recorded it
    yields a ``TaskSuccessEvent`` whose ``return_value`` is the list of the succeeded rows'
    :class:`~talking_heads.row.payloads.WaitResult` (failed rows are in the ledger, and in the outcome
    table). If any row timed out, errored or could not be recorded, it yields
    ``{"rows": {row_id: the provider event}}`` for those rows, and the wait resumes to record them and retry.

    :param submissions: the rows' :class:`~talking_heads.row.payloads.Submission` dicts still to wait for.
    :param ended: the :class:`~talking_heads.row.payloads.WaitResult` dicts of the chunk's rows that an earlier
        try of the wait saw succeed: the event's list carries them too, so the download stores every row.
    :param poll_interval: the shortest pause between the account watcher's rounds.
    :param output_root: where the ledger lives, as the wait operator got it.
    :param storage_conn_id: Airflow connection of the store under ``output_root`` (None: its defaults).
    :param unknown_confirmations: see :class:`~dashscope_provider.triggers.dashscope.DashScopeTaskTrigger`.
    """

    def __init__(
        self,
        submissions: list[dict[str, Any]],
        poll_interval: float = 15.0,
        *,
        output_root: str,
        storage_conn_id: str | None = None,
        unknown_confirmations: int = 3,
        ended: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__()
        self.submissions = [Submission.from_dict(s).to_dict() for s in submissions]
        self.ended = [WaitResult.from_dict(r).to_dict() for r in ended or []]
        self.poll_interval = float(poll_interval)
        self.output_root = output_root
        self.storage_conn_id = storage_conn_id or None
        self.unknown_confirmations = int(unknown_confirmations)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """The rows' tasks and where their ledger records are (no credentials, no signed URLs)."""
        return f"{type(self).__module__}.{type(self).__qualname__}", {
            "submissions": self.submissions,
            "poll_interval": self.poll_interval,
            "output_root": self.output_root,
            "storage_conn_id": self.storage_conn_id,
            "unknown_confirmations": self.unknown_confirmations,
            "ended": self.ended,
        }

    def _row_trigger(self, submission: Submission) -> DashScopeTaskTrigger:
        return DashScopeTaskTrigger(
            submission.task_id,
            submission.conn_id or DEFAULT_CONN_ID,
            self.poll_interval,
            None,
            self.unknown_confirmations,
        )

    async def _wait_row(self, submission: Submission) -> tuple[Submission, dict[str, Any], RecordedEnd | None]:
        async for event in self._row_trigger(submission).run():
            payload = event.payload
            return (
                submission,
                payload,
                await record_end(payload, submission, self.output_root, self.storage_conn_id, self.log),
            )
        raise RuntimeError(f"the wait for task {submission.task_id} ended without an event")

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Wait for every row's task; yield exactly one event when all of them ended (or could not be waited)."""
        ends = await asyncio.gather(*(self._wait_row(Submission.from_dict(s)) for s in self.submissions))
        left = {submission.row_id: payload for submission, payload, recorded in ends if recorded is None}
        if left:
            yield TriggerEvent({"rows": left})
            return
        results = [recorded.result.to_dict() for _, _, recorded in ends if recorded and recorded.result]
        self.log.info("All %d rows' tasks ended (%d generated); the wait ends here", len(ends), len(results))
        yield TaskSuccessEvent(xcoms={RETURN_VALUE: [*self.ended, *results]})

    async def on_kill(self) -> None:
        """The user killed the waiting task: cancel the chunk's tasks still queued (see the provider trigger)."""
        for submission in map(Submission.from_dict, self.submissions):
            try:
                await self._row_trigger(submission).on_kill()
            except Exception as error:  # one refusal must not keep the others queued
                self.log.warning("Could not cancel task %s: %s", submission.task_id, error)
