"""The row steps of ``talking_heads`` as Airflow operators: thin glue around :mod:`talking_heads.row`.

Each operator reads its typed payload from XCom, builds the provider's hook or transfer, and calls the
life-cycle function of its step, which records the row's progress in its ledger as soon as it is known.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.configuration import conf
from airflow.sdk import BaseOperator, Context, ObjectStoragePath
from dashscope_provider.compat import AirflowFailException
from dashscope_provider.exceptions import DashScopeError
from dashscope_provider.links import DashScopeTaskLink
from dashscope_provider.triggers.dashscope import DEFAULT_CONN_ID, task_from_event

from talking_heads.orchestration.links import CostReportLink, OutcomeTableLink, StoredVideoLink
from talking_heads.orchestration.triggers import RowTaskTrigger
from talking_heads.row import store, submit, wait
from talking_heads.row.ledger import RowLedger
from talking_heads.row.media import DEFAULT_MEDIA_URL_TTL_SECONDS, MediaSigner
from talking_heads.row.payloads import Submission, WaitResult, WorkItem

if TYPE_CHECKING:
    from dashscope_provider.hooks.dashscope import DashScopeHook


def as_bool(value: Any) -> bool:
    return value if isinstance(value, bool) else str(value).strip().lower() in ("1", "true", "yes")


def claimant(context: Context) -> str:
    """Who claims a row, as its ledger record and an overlapping run's log name it: run, task and try."""
    ti = context.get("ti")
    return f"{context['run_id']} {ti.task_id}[{ti.map_index}] try {ti.try_number}" if ti else context["run_id"]


class RowStep(BaseOperator):
    """What every row step shares: the ledger under ``output_root``, read through ``storage_conn_id``.

    :param output_root: where the ledger (``state/{row_id}.json``) and the videos live (templated).
    :param dashscope_conn_id: the connection to use when the row's payload names none (templated).
    :param storage_conn_id: Airflow connection of the object store under ``output_root`` (templated).
    """

    template_fields: Sequence[str] = ("output_root", "dashscope_conn_id", "storage_conn_id")

    def __init__(
        self,
        *,
        output_root: str,
        dashscope_conn_id: str = DEFAULT_CONN_ID,
        storage_conn_id: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.output_root = output_root
        self.dashscope_conn_id = dashscope_conn_id
        self.storage_conn_id = storage_conn_id

    def ledger(self) -> RowLedger:
        return RowLedger(self.output_root, self.storage_conn_id or None)

    @staticmethod
    def hook_for(conn_id: str) -> DashScopeHook:
        # Imported here: the hook (HttpHook, aiohttp) costs every task process ~0.3 s at DAG parse, and the
        # download, plan and outcome tasks never call DashScope.
        from dashscope_provider.hooks.dashscope import DashScopeHook

        return DashScopeHook(dashscope_conn_id=conn_id)

    def _transfer(self, video_url: str, destination: ObjectStoragePath) -> dict[str, Any]:
        # A pre-signed URL: no DashScope credential is read for a download. Imported here, as the hook is.
        from dashscope_provider.transfers.dashscope_to_object_storage import download_video

        return download_video(video_url, destination, logger=self.log).to_dict()


class SubmitStep(RowStep):
    """What the submit steps (per row, per chunk) share: the submit's options and one row's submit.

    :param resubmit_uncertain: submit rows whose earlier answer was lost (may pay twice: on purpose).
    :param media_url_ttl: seconds the presigned URLs of store and local media stay valid (templated): long
        enough for the service to fetch them when the task leaves the account's queue.
    """

    template_fields: Sequence[str] = (*RowStep.template_fields, "resubmit_uncertain", "media_url_ttl")

    def __init__(
        self,
        *,
        resubmit_uncertain: Any = False,
        media_url_ttl: int | str = DEFAULT_MEDIA_URL_TTL_SECONDS,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.resubmit_uncertain = resubmit_uncertain
        self.media_url_ttl = media_url_ttl

    def signer(self, ledger: RowLedger) -> MediaSigner:
        return MediaSigner(ledger.layout, self.storage_conn_id or None, int(float(self.media_url_ttl)))

    def submit(self, context: Context, ledger: RowLedger, item: WorkItem, signer: MediaSigner) -> Submission:
        """One row through :func:`talking_heads.row.submit.submit_row`, at most once."""
        return submit.submit_row(
            ledger,
            item,
            signer=signer,
            hook_for=self.hook_for,
            default_conn_id=self.dashscope_conn_id,
            run_id=context["run_id"],
            owner=claimant(context),
            resubmit_uncertain=as_bool(self.resubmit_uncertain),
            log=self.log,
        )


class SubmitRowOperator(SubmitStep):
    """Submit one table row, at most once (see :func:`talking_heads.row.submit.submit_row`).

    :param row: the row's :class:`~talking_heads.row.payloads.WorkItem` as a dict (its validated request and
        the ``conn_id`` the plan chose for it, which wins over ``dashscope_conn_id``).
    The other parameters are :class:`SubmitStep`'s.
    """

    template_fields: Sequence[str] = (*SubmitStep.template_fields, "row")

    def __init__(self, *, row: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.row = row

    def execute(self, context: Context) -> dict[str, Any]:
        ledger = self.ledger()
        return self.submit(context, ledger, WorkItem.from_dict(self.row), self.signer(ledger)).to_dict()


class WaitRowOperator(RowStep):
    """Wait for a row's task and record how it ended (see :func:`talking_heads.row.wait.record_task_end`).

    Deferred by default: unless the ledger already has the task's end, the wait moves at once to the
    triggerer (:class:`~talking_heads.orchestration.triggers.RowTaskTrigger`) and holds no worker slot. When the task
    succeeds the trigger records it and ends the wait itself, with the same XCom: no task process resumes
    it. A failed task, a timeout or an error resume the wait in :meth:`execute_complete`, which raises as
    before.

    :param submission: the submit step's :class:`~talking_heads.row.payloads.Submission` as a dict; its
        ``conn_id`` (the key that created the task, the only one that can query it) is used to poll.
    :param poll_interval: seconds between status queries (templated; a rendered string is accepted).
    :param deferrable: wait in the triggerer instead of polling from the worker; by default Airflow's
        ``[operators] default_deferrable``, as providers do (the ``talking_heads`` DAG always defers).
    :param timeout: seconds the wait may last in all.
    """

    template_fields: Sequence[str] = (*RowStep.template_fields, "submission", "poll_interval")
    operator_extra_links = (DashScopeTaskLink(),)

    def __init__(
        self,
        *,
        submission: Any,
        poll_interval: float | str = 15.0,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        timeout: float = timedelta(hours=23).total_seconds(),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.submission = submission
        self.poll_interval = poll_interval
        self.deferrable = deferrable
        self.timeout = timeout

    def _submission(self) -> Submission:
        return Submission.from_dict(self.submission)

    def _conn_id(self, submission: Submission) -> str:
        return submission.conn_id or self.dashscope_conn_id

    def execute(self, context: Context) -> dict[str, Any] | None:
        submission = self._submission()
        DashScopeTaskLink.persist(context, submission.task_id, self._conn_id(submission))
        ledger = self.ledger()
        if (done := wait.finished_result(ledger, submission)) is not None:
            self.log.info("Task %s already finished; not polling again", submission.task_id)
            return done.to_dict()
        interval = float(self.poll_interval)
        if not self.deferrable:
            hook = self.hook_for(self._conn_id(submission))
            task = wait.poll_until_done(hook, submission.task_id, interval=interval, timeout=self.timeout)
            return wait.record_task_end(ledger, submission, task).to_dict()
        # No status query here: the trigger's first poll is that query, and a task already finished ends in
        # the triggerer just the same. Querying here would cost this task process the hook's import, a
        # connection lookup and a call, for a wait that (with real tasks of minutes) defers anyway.
        self.log.info("Waiting for DashScope task %s in the triggerer (poll every %g s)", submission.task_id, interval)
        self.defer(
            trigger=RowTaskTrigger(
                dashscope_task_id=submission.task_id,
                dashscope_conn_id=self._conn_id(submission),
                poll_interval=interval,
                row_id=submission.row_id,
                output_root=self.output_root,
                storage_conn_id=self.storage_conn_id or None,
            ),
            method_name="execute_complete",
            # Airflow turns the expiry of this deferral into AirflowSensorTimeout-like task failure.
            timeout=timedelta(seconds=self.timeout),
        )
        return None

    def execute_complete(self, context: Context, event: dict[str, Any] | str) -> dict[str, Any]:
        """Resume after the trigger fired without ending the task: a failed task (recorded already; this
        records it again, idempotently, and fails without retries), a timeout, an error, or a success the
        trigger could not record.

        :param event: the provider trigger's event; or the state a task-ending event carries (``"success"``),
            which only ``dag.test()`` resumes with (it runs triggers inline and resumes after every event).
        """
        submission = self._submission()
        if not isinstance(event, dict):
            # The trigger ended the task and recorded its end: the ledger has the result it pushed.
            if (done := wait.finished_result(self.ledger(), submission)) is None:
                raise DashScopeError(f"row {submission.row_id}: the wait ended ({event}) but nothing is recorded")
            return done.to_dict()
        task = task_from_event(event, submission.task_id)
        return wait.record_task_end(self.ledger(), submission, task).to_dict()

    def on_kill(self) -> None:
        # A PENDING task has cost nothing yet; cancel it so a killed wait does not leave it queued.
        if isinstance(self.submission, dict) and self.submission.get("task_id"):
            submission = self._submission()
            self.hook_for(self._conn_id(submission)).cancel_task(submission.task_id)


class DownloadRowOperator(RowStep):
    """Copy a row's result video to ``{output_root}/videos/{row_id}.mp4`` and record it
    (see :func:`talking_heads.row.store.store_row`).

    :param result: the wait step's :class:`~talking_heads.row.payloads.WaitResult` as a dict.
    """

    template_fields: Sequence[str] = (*RowStep.template_fields, "result")
    operator_extra_links = (StoredVideoLink(),)

    def __init__(self, *, result: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.result = result

    def execute(self, context: Context) -> dict[str, Any]:
        if isinstance(self.result, str):
            # The XCom of a wait its trigger ended: Airflow 3.3.2 stores a TaskSuccessEvent's xcoms JSON-encoded
            # once more (XComModel.set(serialize=True) in handle_event_submit) and the Task SDK reads that
            # string back as is. Parsed here, before the map index ({{ task.result.row_id }}) is rendered again.
            self.result = json.loads(self.result)
        return store.store_row(
            self.ledger(),
            WaitResult.from_dict(self.result),
            run_id=context["run_id"],
            transfer=self._transfer,
            log=self.log,
        )


class RecordOutcomesOperator(BaseOperator):
    """The outcome step: one outcome line per input row, the run's note and summary (see
    :func:`talking_heads.orchestration.task_bodies.record_outcomes`); links to the outcome table and the cost report.

    :param output_root: where the run's plan, the ledger and the outcome table are (templated).
    :param storage_conn_id: Airflow connection of the store under ``output_root``, to presign the links.
    :param notify_email: comma-separated addresses the run's summary is mailed to (templated); empty: none.
    :param fail_run_on_row_failures: fail this step, and so the run, when any row ended ``failed`` (after
        the outcome table, the note and the mail are written; no retry: the same rows would fail again).
        Templated (``"True"``/``"False"``); off by default.
    """

    template_fields: Sequence[str] = ("output_root", "storage_conn_id", "notify_email", "fail_run_on_row_failures")
    operator_extra_links = (OutcomeTableLink(), CostReportLink())

    def __init__(
        self,
        *,
        output_root: str,
        storage_conn_id: str | None = None,
        notify_email: str | None = None,
        fail_run_on_row_failures: bool | str = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.output_root = output_root
        self.storage_conn_id = storage_conn_id
        self.notify_email = notify_email
        self.fail_run_on_row_failures = fail_run_on_row_failures

    def execute(self, context: Context) -> dict[str, Any]:
        from talking_heads.orchestration.task_bodies import record_outcomes  # pandas: not at parse time

        summary = record_outcomes(
            context,
            output_root=self.output_root,
            storage_conn_id=self.storage_conn_id or None,
            notify_email=(self.notify_email or "").strip() or None,
            assets=self.outlets,
        )
        if str(self.fail_run_on_row_failures).strip().lower() in ("true", "1", "yes") and summary["failed"]:
            raise AirflowFailException(
                f"{summary['failed']} of {summary['rows']} rows failed (fail_run_on_row_failures is on); their "
                f"codes and messages are in {summary['outcomes']}"
            )
        return summary


class ContinueRunOperator(BaseOperator):
    """Trigger the follow-up run of a table larger than one run maps (see :mod:`talking_heads.table.continuation`).

    Reads the part's bookkeeping from the run's plan file; does nothing when the run took the whole table.
    The follow-up run is this DAG with the same params plus the continuation key; ``max_active_runs=1``
    keeps it queued until this run ends. Its run id is fixed by the plan (``{first run}__part{k}``), so a
    retry of this task does not trigger it twice.

    It raises the Task SDK's ``DagRunTriggerException`` itself, as ``TriggerDagRunOperator`` does in
    Airflow 3: importing that operator costs every task process ~0.45 s at DAG parse (it pulls in
    SQLAlchemy and ``airflow.models``), for one task per run.

    :param output_root: where the run's plan is (templated).
    :param storage_conn_id: Airflow connection of the store under ``output_root`` (templated).
    The follow-up run gets this run's params whole, as its ``conf`` (whatever they are named), plus the
    continuation key.
    """

    template_fields: Sequence[str] = ("output_root", "storage_conn_id")

    def __init__(
        self,
        *,
        output_root: str,
        storage_conn_id: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.output_root = output_root
        self.storage_conn_id = storage_conn_id

    def execute(self, context: Context) -> None:
        from dashscope_provider.compat import DagRunTriggerException

        from talking_heads.table.continuation import CONF_KEY, Part

        run_id = context["run_id"]
        plan = RowLedger(self.output_root, self.storage_conn_id or None).layout.plan(run_id)
        part = Part.from_dict(json.loads(plan.read_text()).get("continuation") or {})
        if not part.next_run_id:
            # Succeeds rather than skips: a skipped task reads as "not run" in the grid and in the tests'
            # accounting of which task instances ran on a worker.
            self.log.info("This run took every row of its table: nothing to continue")
            return
        self.log.info("Rows left: %d; continuing in run %s", len(part.later), part.next_run_id)
        raise DagRunTriggerException(
            trigger_dag_id=self.dag_id,
            dag_run_id=part.next_run_id,
            conf={**_params_whole(context), CONF_KEY: {"run_id": run_id}},
            logical_date=None,
            reset_dag_run=False,
            skip_when_already_exists=True,
            wait_for_completion=False,
            allowed_states=["success"],
            failed_states=["failed"],
            poke_interval=60,
            deferrable=False,
            note=f"part {part.number + 1} of {part.parts}: continues run {part.first_run_id}",
        )


def _params_whole(context: Context) -> dict[str, Any]:
    """The run's params as one dict, forwarded as they are: no param is read by name here."""
    from talking_heads.table.continuation import CONF_KEY

    return {key: value for key, value in dict(context["params"]).items() if key != CONF_KEY}
