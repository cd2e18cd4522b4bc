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
from typing import Any

from airflow.triggers.base import TaskSuccessEvent, TriggerEvent
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
        payload = event.payload
        if payload.get("status") not in ("success", "failed") or not payload.get("task"):
            return event  # timeout, error: the resumed wait raises, as it always did
        task = task_from_event(payload, self.dashscope_task_id)
        try:
            # Sync storage I/O (fsspec, maybe a connection lookup) off the event loop: other triggers keep polling.
            result = await asyncio.to_thread(self._record, task)
        except Exception as error:  # the store is down, say: the resumed wait records it, with its retries
            self.log.warning(
                "Row %s: could not record the end of task %s here (%s: %s); the wait resumes on a worker",
                self.row_id,
                self.dashscope_task_id,
                type(error).__name__,
                error,
            )
            return event
        if result is None:
            self.log.info("Row %s: task %s recorded as failed; the wait resumes to fail", self.row_id, task.task_id)
            return event
        self.log.info("Row %s: task %s recorded as generated; the wait ends here", self.row_id, task.task_id)
        return TaskSuccessEvent(xcoms={RETURN_VALUE: result.to_dict()})

    def _record(self, task: Any) -> WaitResult | None:
        """The ledger write the resumed wait made: the result, or None when the task failed (recorded so)."""
        ledger = RowLedger(self.output_root, self.storage_conn_id)
        submission = Submission(self.row_id, self.dashscope_task_id, self.dashscope_conn_id)
        try:
            return wait.record_task_end(ledger, submission, task)
        except AirflowFailException:
            return None
