"""Chunk mode: one submit, one wait and one download task instance per chunk of rows, not per row.

A row in flight costs Airflow mostly per task instance: a task process (~0.4 CPU-s of Airflow's own
start-up), the scheduler's and API server's work on each state change, the dag-processor's callback when
a trigger ends a wait. With ``TALKING_HEADS_ROWS_PER_TASK=k`` (:data:`ROWS_PER_TASK_ENV`) the DAG maps
its generate group over chunks of up to ``k`` rows of one connection, so a row costs a ``k``-th of that.
``k = 1`` (the default) is the per-row shape, with its operators in
:mod:`talking_heads.orchestration.operators`.

Money stays per row: each chunk step runs every row through the same per-row function as the row
operators (:func:`~talking_heads.row.submit.submit_row`, :func:`~talking_heads.row.wait.record_task_end`,
:func:`~talking_heads.row.store.store_row`), so the lease, the claim and the ledger record of each row are
exactly those of the per-row steps. A try of a chunk step that is repeated (retry, clear, rerun) follows
what its rows' records say, row by row: a submitted row is followed, never sent again.

What a chunk step does with one row's failure:

=====================  ==================================================================================
a row ...              the chunk step
=====================  ==================================================================================
is settled (failed     recorded in the row's ledger by the per-row function; the step goes on with the
or skipped)            other rows and succeeds. The outcome table says why.
hits a transient       the step goes on with the other rows, then raises the first such error (Airflow's
error                  retries try again; rows done are followed) -- unless, at submit, some rows of the
                       chunk were already sent: the chunk then goes on to wait for them (their videos
                       must be fetched within 24 h), and the row stays recorded as its error left it
                       (``failed`` unbilled, or ``uncertain`` for reconciliation by the next run).
=====================  ==================================================================================

A retry of a whole submit chunk (only when none of its rows was sent) sends a row refused in the earlier
try again, as a clear or a rerun of a per-row submit does: a refused request created no task and costs
nothing. Rows with a task, or an uncertain answer, are never sent again.

The grid names each chunk by its rows' ids (``map_index_template``). The ``dashscope`` pool counts
chunks: size it in chunks in flight (``k`` tasks each).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from airflow.sdk import Context
from dashscope_provider.compat import AirflowFailException, AirflowSkipException
from dashscope_provider.triggers.dashscope import task_from_event

from talking_heads.orchestration.operators import RowStep, SubmitStep
from talking_heads.orchestration.triggers import RowChunkTrigger
from talking_heads.row import store, wait
from talking_heads.row.ledger import RowLedger
from talking_heads.row.payloads import Submission, WaitResult, WorkItem
from talking_heads.row.states import RowStatus

#: Rows per submit/wait/download task instance; read when the DAG file is parsed. 1: one task instance per row.
ROWS_PER_TASK_ENV = "TALKING_HEADS_ROWS_PER_TASK"
#: A row's end that its wait need not wait for again.
ENDED = (RowStatus.GENERATED, RowStatus.SUCCEEDED, RowStatus.FAILED)


def rows_per_task() -> int:
    """The deployment's rows per task instance (:data:`ROWS_PER_TASK_ENV`, at least 1)."""
    raw = os.environ.get(ROWS_PER_TASK_ENV, "1").strip() or "1"
    try:
        return max(1, int(raw))
    except ValueError:
        raise ValueError(f"{ROWS_PER_TASK_ENV} must be a whole number of rows, not {raw!r}") from None


def chunk_label(field: str, empty: str) -> str:
    """The grid's name of a chunk step (``map_index_template``): the ids of the rows in its ``field``, or
    ``empty`` when an earlier step left it none (Airflow keeps 250 characters)."""
    return f"{{{{ (task.{field} | map(attribute='row_id') | join(' ') | truncate(240)) or {json.dumps(empty)} }}}}"


def chunk_rows(items: list[dict[str, Any]], size: int) -> list[list[dict[str, Any]]]:
    """The plan's work items in chunks of up to ``size`` rows, each of one connection, in table order.

    One connection per chunk: a chunk's wait watches one account, and a key's rows stay together.
    """
    size = max(1, size)
    by_conn: dict[str | None, list[dict[str, Any]]] = {}
    for item in items:
        by_conn.setdefault(item.get("conn_id"), []).append(item)
    chunks = [rows[i : i + size] for rows in by_conn.values() for i in range(0, len(rows), size)]
    first_row = {id(item): position for position, item in enumerate(items)}
    return sorted(chunks, key=lambda chunk: first_row[id(chunk[0])])


class SubmitChunkOperator(SubmitStep):
    """Submit each row of a chunk at most once (:func:`talking_heads.row.submit.submit_row`, row by row).

    Returns the :class:`~talking_heads.row.payloads.Submission` dicts of the rows that have a task.

    :param rows: the chunk's :class:`~talking_heads.row.payloads.WorkItem` dicts.
    The other parameters are :class:`~talking_heads.orchestration.operators.SubmitStep`'s.
    """

    template_fields: Sequence[str] = (*SubmitStep.template_fields, "rows")

    def __init__(self, *, rows: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.rows = rows

    def execute(self, context: Context) -> list[dict[str, Any]]:
        ledger = self.ledger()
        signer = self.signer(ledger)
        submissions: list[Submission] = []
        transient: list[Exception] = []
        for item in map(WorkItem.from_dict, self.rows):
            try:
                submissions.append(self.submit(context, ledger, item, signer))
            except (AirflowFailException, AirflowSkipException) as settled:  # recorded in the row's ledger
                self.log.warning("Row %s settled without a task: %s", item.row_id, settled)
            except Exception as error:
                self.log.warning("Row %s: %s: %s", item.row_id, type(error).__name__, error)
                transient.append(error)
        if transient and not submissions:
            raise transient[0]  # nothing sent in this chunk: Airflow's retries try it whole again
        if transient:
            self.log.warning(
                "%d row(s) of this chunk hit a transient error and stay as recorded (failed unbilled, or "
                "uncertain for the next run's reconciliation); waiting for the %d sent",
                len(transient),
                len(submissions),
            )
        return [s.to_dict() for s in submissions]


class WaitChunkOperator(RowStep):
    """Wait for a chunk's tasks in the triggerer (:class:`~talking_heads.orchestration.triggers.RowChunkTrigger`).

    Rows whose end is recorded already are not waited for again. When the trigger ended every row it ends
    the task itself; otherwise :meth:`execute_complete` records what the event carries and raises for the
    rest (a retry waits for them alone). Returns the succeeded rows'
    :class:`~talking_heads.row.payloads.WaitResult` dicts.

    :param submissions: the submit step's list of :class:`~talking_heads.row.payloads.Submission` dicts.
    :param poll_interval: seconds between the account watcher's rounds (templated).
    :param timeout: seconds the wait may last in all.
    """

    template_fields: Sequence[str] = (*RowStep.template_fields, "submissions", "poll_interval")

    def __init__(
        self,
        *,
        submissions: Any,
        poll_interval: float | str = 15.0,
        timeout: float = timedelta(hours=23).total_seconds(),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.submissions = submissions
        self.poll_interval = poll_interval
        self.timeout = timeout

    def _submissions(self) -> list[Submission]:
        if isinstance(self.submissions, str):  # see DownloadRowOperator.execute
            self.submissions = json.loads(self.submissions)
        return [Submission.from_dict(s) for s in self.submissions or []]

    def _results(self, ledger: RowLedger) -> list[dict[str, Any]]:
        found = (wait.finished_result(ledger, s) for s in self._submissions())
        return [result.to_dict() for result in found if result is not None]

    def execute(self, context: Context) -> list[dict[str, Any]] | None:
        ledger = self.ledger()
        pending = [s for s in self._submissions() if not _ended(ledger, s)]
        if not pending:
            return self._results(ledger)
        self.log.info("Waiting for %d DashScope task(s) in the triggerer", len(pending))
        self.defer(
            trigger=RowChunkTrigger(
                [s.to_dict() for s in pending],
                float(self.poll_interval),
                output_root=self.output_root,
                storage_conn_id=self.storage_conn_id or None,
                ended=self._results(ledger),  # seen by an earlier try: the trigger's result lists them too
            ),
            method_name="execute_complete",
            timeout=timedelta(seconds=self.timeout),
        )
        return None

    def execute_complete(self, context: Context, event: dict[str, Any] | str) -> list[dict[str, Any]]:
        """Resume when the trigger could not end every row (or under ``dag.test()``, after its success)."""
        ledger = self.ledger()
        by_row = {s.row_id: s for s in self._submissions()}
        unended: list[Exception] = []
        for row_id, payload in (event.get("rows") or {}).items() if isinstance(event, dict) else ():
            submission = by_row[row_id]
            try:
                task = task_from_event(payload, submission.task_id)
            except Exception as error:  # a timeout, or an error: the row's task has no known end
                self.log.warning("Row %s: %s", row_id, error)
                unended.append(error)
                continue
            try:
                wait.record_task_end(ledger, submission, task)
            except AirflowFailException as failed:  # the task failed: recorded so
                self.log.warning("Row %s: %s", row_id, failed)
        if unended:
            raise unended[0]  # a retry waits again, for the rows without a recorded end only
        return self._results(ledger)


class DownloadChunkOperator(RowStep):
    """Store each generated row of a chunk (:func:`talking_heads.row.store.store_row`, row by row).

    :param results: the wait step's list of :class:`~talking_heads.row.payloads.WaitResult` dicts.
    """

    template_fields: Sequence[str] = (*RowStep.template_fields, "results")

    def __init__(self, *, results: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.results = results

    def execute(self, context: Context) -> list[dict[str, Any]]:
        if isinstance(self.results, str):  # see DownloadRowOperator.execute: parsed before the label renders
            self.results = json.loads(self.results)
        ledger = self.ledger()
        stored: list[dict[str, Any]] = []
        transient: list[Exception] = []
        for result in map(WaitResult.from_dict, self.results or []):
            try:
                video = store.store_row(ledger, result, run_id=context["run_id"], transfer=self._transfer, log=self.log)
                stored.append({"row_id": result.row_id, **video})
            except AirflowFailException as settled:  # the URL expired: recorded failed
                self.log.warning("Row %s: %s", result.row_id, settled)
            except Exception as error:  # still generated: a retry stores it (rows stored are not copied again)
                self.log.warning("Row %s not stored: %s: %s", result.row_id, type(error).__name__, error)
                transient.append(error)
        if transient:
            raise transient[0]
        return stored


def _ended(ledger: RowLedger, submission: Submission) -> bool:
    state = ledger.get(submission.row_id)
    return state is not None and state.task_id == submission.task_id and state.status in ENDED
