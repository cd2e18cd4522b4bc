"""Row-aware steps of ``talking_heads``: the provider's operators plus the per-row ledger.

The generic operators in :mod:`dashscope_provider` know nothing about tables; these subclasses record
each row's progress as soon as it is known so that no retry, rerun, clear or backfill pays twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import Context
from airflow.sdk.exceptions import AirflowFailException
from dashscope_provider.exceptions import (
    DashScopeAPIError,
    DashScopeResultExpired,
    DashScopeSubmissionUncertain,
)
from dashscope_provider.hooks.dashscope import DashScopeHook, DashScopeTask
from dashscope_provider.operators.dashscope import (
    DashScopeVideoDownloadOperator,
    DashScopeVideoSynthesisOperator,
)
from dashscope_provider.sensors.dashscope import DashScopeTaskSensor

from talking_heads.ledger import RowLedger, RowState, request_fingerprint
from talking_heads.storage import plain_url
from talking_heads.validation import RowRequest


class _RowStorage:
    """Where a row-aware step keeps its ledger: ``output_root`` through ``storage_conn_id``."""

    output_root: str
    storage_conn_id: str | None

    def _ledger(self) -> RowLedger:
        return RowLedger(self.output_root, self.storage_conn_id)


#: Outcome code of a row whose video was generated (and billed) but could not be stored.
STORE_FAILED_CODE = "StoreFailed"


def _as_bool(value: Any) -> bool:
    return value if isinstance(value, bool) else str(value).strip().lower() in ("1", "true", "yes")


class SubmitRowOperator(_RowStorage, DashScopeVideoSynthesisOperator):
    """Submit one table row, at most once.

    A row with a task already in flight returns that task id; a row whose earlier submission answer
    was lost is refused unless ``resubmit_uncertain``. The intent is written to the ledger *before*
    the request is sent, so even a worker killed mid-request leaves a trace instead of a double bill.

    :param row: the plan entry of the row (``row_id``, its validated ``request``, and optionally the
        ``conn_id`` the plan chose for it, which then wins over ``dashscope_conn_id``).
    :param output_root: where the ledger lives (``{output_root}/state/{row_id}.json``).
    :param resubmit_uncertain: submit rows whose earlier answer was lost (may pay twice: on purpose).
    :param storage_conn_id: Airflow connection of the object store under ``output_root`` (optional).
    """

    template_fields: Sequence[str] = (
        "row",
        "output_root",
        "dashscope_conn_id",
        "resubmit_uncertain",
        "storage_conn_id",
    )

    def __init__(
        self,
        *,
        row: Any,
        output_root: str,
        resubmit_uncertain: Any = False,
        storage_conn_id: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(model="", input={}, **kwargs)
        self.row = row
        self.output_root = output_root
        self.resubmit_uncertain = resubmit_uncertain
        self.storage_conn_id = storage_conn_id

    def execute(self, context: Context) -> dict[str, Any]:
        request = RowRequest(**self.row["request"])
        ledger = self._ledger()
        run_id = context["run_id"]
        fingerprint = request_fingerprint(request.model, request.api_input(), request.api_parameters())
        state = ledger.get(request.row_id)
        if state is not None and state.state in ("submitted", "generated", "succeeded") and state.task_id:
            self.log.info(
                "Row %s already has task %s (%s); not resubmitting", request.row_id, state.task_id, state.state
            )
            # A task is only known to the key that created it, whatever this run would have chosen.
            conn_id = state.conn_id or self.dashscope_conn_id
            return {"row_id": request.row_id, "task_id": state.task_id, "conn_id": conn_id}
        conn_id = self.row.get("conn_id") or self.dashscope_conn_id
        if state is not None and state.state in ("submitting", "uncertain"):
            if not _as_bool(self.resubmit_uncertain):
                ledger.put(state.advance("uncertain"))
                raise AirflowFailException(
                    f"row {request.row_id}: an earlier submission's answer was lost, so a task may exist "
                    "and be billed; not re-sent (set resubmit_uncertain=true to submit it again)"
                )
            self.log.warning("Row %s: resubmitting after an uncertain submission, as asked", request.row_id)
        if state is None:
            state = RowState(row_id=request.row_id, state="submitting", model=request.model)
        state = ledger.put(
            state.advance(
                "submitting",
                model=request.model,
                fingerprint=fingerprint,
                conn_id=conn_id,
                run_id=run_id,
                task_id=None,
                code=None,
                message=None,
            )
        )
        hook = DashScopeHook(dashscope_conn_id=conn_id)
        try:
            submitted = hook.submit_task(request.model, request.api_input(), request.api_parameters())
        except DashScopeSubmissionUncertain as error:
            ledger.put(state.advance("uncertain", code="SubmissionUncertain", message=str(error)))
            raise AirflowFailException(f"row {request.row_id}: {error}; recorded as uncertain") from None
        except DashScopeAPIError as error:
            # The service answered with an error body: no task was created, nothing billed. Recorded as
            # failed in case this is the last try; a transient refusal (429, 5xx) that outlasted the
            # hook's retries is left to the task's own retries, which may submit again safely.
            ledger.put(state.advance("failed", code=error.code, message=error.message, billed=False))
            if error.retryable:
                raise
            raise AirflowFailException(f"row {request.row_id}: submit refused: {error}") from None
        except Exception as error:
            if not getattr(error, "request_not_sent", False):
                ledger.put(state.advance("uncertain", code="SubmissionUncertain", message=str(error)))
                raise
            ledger.put(state.advance("failed", code=type(error).__name__, message=str(error), billed=False))
            raise
        ledger.put(state.advance("submitted", task_id=submitted.task_id))
        self.log.info("Row %s submitted as task %s (connection %s)", request.row_id, submitted.task_id, conn_id)
        return {"row_id": request.row_id, "task_id": submitted.task_id, "conn_id": conn_id}


class WaitRowSensor(_RowStorage, DashScopeTaskSensor):
    """Wait (deferred, no worker slot held) for a row's task, and record how it ended.

    :param submission: the submit step's result, ``{"row_id", "task_id", "conn_id"}``; its ``conn_id``
        (the key that created the task, the only one that can query it) wins over ``dashscope_conn_id``.
    :param output_root: where the ledger lives.
    """

    template_fields: Sequence[str] = (
        *DashScopeTaskSensor.template_fields,
        "submission",
        "output_root",
        "storage_conn_id",
    )

    def __init__(self, *, submission: Any, output_root: str, storage_conn_id: str | None = None, **kwargs: Any) -> None:
        super().__init__(dashscope_task_id="", fail_on_task_failure=False, **kwargs)
        self.submission = submission
        self.output_root = output_root
        self.storage_conn_id = storage_conn_id

    def _follow_submission(self) -> None:
        self.dashscope_task_id = self.submission["task_id"]
        self.dashscope_conn_id = self.submission.get("conn_id") or self.dashscope_conn_id

    def execute(self, context: Context) -> Any:
        self._follow_submission()
        state = self._ledger().get(self.submission["row_id"])
        if state is not None and state.state in ("generated", "succeeded") and state.task_id == self.dashscope_task_id:
            self.log.info("Task %s already finished (%s); not polling again", state.task_id, state.state)
            return self._result(state)
        return self._record(super().execute(context))

    def execute_complete(self, context: Context, event: dict[str, Any]) -> Any:
        self._follow_submission()
        return self._record(super().execute_complete(context, event))

    @staticmethod
    def _result(state: RowState) -> dict[str, Any]:
        return {
            "row_id": state.row_id,
            "task_id": state.task_id,
            "video_url": state.video_url,
            "video_duration": state.video_duration,
            "video_ratio": state.video_ratio,
        }

    def _record(self, task_dict: dict[str, Any]) -> dict[str, Any]:
        task = DashScopeTask.from_dict(task_dict)
        ledger = self._ledger()
        row_id = self.submission["row_id"]
        state = ledger.get(row_id) or RowState(row_id=row_id, state="submitted", task_id=task.task_id)
        if task.status == "SUCCEEDED":
            state = ledger.put(
                state.advance(
                    "generated",
                    task_id=task.task_id,
                    billed=True,
                    video_url=task.video_url,
                    video_duration=task.video_duration,
                    video_ratio=task.video_ratio,
                )
            )
            return self._result(state)
        code = task.code or task.status
        message = task.message or {
            "UNKNOWN": "the service no longer knows this task (task ids expire 24 h after creation)",
            "CANCELED": "the task was canceled before it ran",
        }.get(task.status, f"task ended {task.status}")
        ledger.put(state.advance("failed", task_id=task.task_id, code=code, message=message, billed=False))
        raise AirflowFailException(f"row {row_id}: task {task.task_id} ended {task.status}: {code}: {message}")

    def on_kill(self) -> None:
        # A PENDING task has cost nothing yet; cancel it so a killed wait does not leave it queued.
        submission = self.submission if isinstance(self.submission, dict) else {}
        task_id = self.dashscope_task_id or submission.get("task_id")
        if task_id:
            conn_id = submission.get("conn_id") or self.dashscope_conn_id
            DashScopeHook(dashscope_conn_id=conn_id).cancel_task(task_id)


class DownloadRowOperator(_RowStorage, DashScopeVideoDownloadOperator):
    """Copy a row's result video to ``{output_root}/videos/{row_id}.mp4`` and record it.

    :param result: the wait step's result (``row_id``, ``task_id``, ``video_url`` and usage).
    :param output_root: where the videos and the ledger live.
    """

    template_fields: Sequence[str] = (
        *DashScopeVideoDownloadOperator.template_fields,
        "result",
        "output_root",
        "storage_conn_id",
    )

    def __init__(self, *, result: Any, output_root: str, storage_conn_id: str | None = None, **kwargs: Any) -> None:
        super().__init__(video_url="", destination="", **kwargs)
        self.result = result
        self.output_root = output_root
        self.storage_conn_id = storage_conn_id

    def execute(self, context: Context) -> dict[str, Any]:
        ledger = self._ledger()
        row_id = self.result["row_id"]
        state = ledger.get(row_id)
        if state is not None and state.state == "succeeded":
            self.log.info("Row %s already stored at %s", row_id, state.video_uri)
            return {"uri": state.video_uri, "size_bytes": state.video_bytes, "sha256": state.video_sha256}
        self.video_url = self.result["video_url"]
        # The plain URL: the store's connection travels in conn_id, not inside the path.
        self.destination = plain_url(ledger.layout.video(row_id))
        self.conn_id = self.storage_conn_id or None
        try:
            stored = super().execute(context)
        except DashScopeResultExpired as error:
            if state is not None:
                ledger.put(state.advance("failed", code="ResultExpired", message=str(error)))
            raise AirflowFailException(f"row {row_id}: {error}") from None
        except Exception as error:
            # Still "generated": the next try (or a rerun) stores it without generating it again. Said
            # in the outcome if no try succeeds; nothing partial is left at the destination (see hook).
            if state is not None:
                ledger.put(
                    state.advance("generated", code=STORE_FAILED_CODE, message=f"{type(error).__name__}: {error}")
                )
            raise
        if state is not None:
            ledger.put(
                state.advance(
                    "succeeded",
                    video_uri=stored["uri"],
                    video_bytes=stored["size_bytes"],
                    video_sha256=stored["sha256"],
                    run_id=context["run_id"],
                    code=None,
                    message=None,
                )
            )
        return stored
