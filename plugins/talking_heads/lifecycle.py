"""The life of one input row: its states, the moves between them, and what each step does in each state.

This is the one place to read "what happens to a row in state X". Every step records what it learnt as
soon as it knows it (write-ahead for submissions) in the row's ledger record, keyed by ``row_id``, so a
task retry, a rerun, a cleared task or a backfill finds the row's real state instead of guessing, and
no money is spent twice:

==============  ==============================================  ===================================================
state           meaning                                         plan / submit / wait / store do
==============  ==============================================  ===================================================
(none)          never submitted                                 plan: generate; submit: write ``submitting``, send
``submitting``  a submit is being sent (written *before*)       plan + submit: as ``uncertain`` (loss seen now)
``uncertain``   the submit answer was lost: a task may exist    submit: adopt it from the task list, else refuse
``submitted``   the service accepted it: ``task_id`` known      submit: return the task; wait: poll that task
``generated``   the task SUCCEEDED; video not stored yet        submit, wait: reuse; store: copy the video
``succeeded``   the video is stored under ``videos/``           plan: skip (``already generated``); all: reuse
``failed``      refused or failed; ``billed`` says if paid      plan: final if billed or ``UNKNOWN``, else retry
==============  ==============================================  ===================================================

A lost submission is looked for in the task list (:func:`reconcile_row`, by :mod:`talking_heads.reconcile`'s
rule) in the submit step that saw the loss and any later try or run within 24 h. The outcome each state
becomes is :func:`outcome_of`; every outcome code is an :class:`OutcomeCode`. :mod:`talking_heads.ledger`
only stores and loads the records.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from airflow.sdk.exceptions import AirflowFailException
from dashscope_provider.exceptions import DashScopeAPIError, DashScopeResultExpired, DashScopeSubmissionUncertain
from dashscope_provider.models import DashScopeTask, TaskStatus

from talking_heads import reconcile
from talking_heads.detection import detect_image, detection_usage
from talking_heads.media import MediaSigner, redact
from talking_heads.payloads import Submission, WaitResult, WorkItem
from talking_heads.reconcile import lost_answer_message

if TYPE_CHECKING:
    import logging

    from dashscope_provider.hooks.dashscope import DashScopeHook

    from talking_heads.ledger import RowLedger


class RowStatus(StrEnum):
    """The recorded state of a row (see the module's table)."""

    SUBMITTING = "submitting"
    UNCERTAIN = "uncertain"
    SUBMITTED = "submitted"
    GENERATED = "generated"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


S = RowStatus
#: Every move a row may make. A submit starts from nothing, a refused or unbilled failure, or (on
#: purpose) an uncertain one; the wait may see the end of a task whatever an overlapping writer left;
#: a succeeded row never moves again.
TRANSITIONS: dict[RowStatus, frozenset[RowStatus]] = {
    S.SUBMITTING: frozenset({S.SUBMITTING, S.UNCERTAIN, S.SUBMITTED, S.FAILED}),
    S.UNCERTAIN: frozenset({S.UNCERTAIN, S.SUBMITTING, S.SUBMITTED, S.GENERATED, S.FAILED}),
    S.SUBMITTED: frozenset({S.SUBMITTING, S.GENERATED, S.FAILED}),
    S.GENERATED: frozenset({S.GENERATED, S.SUCCEEDED, S.FAILED}),
    S.SUCCEEDED: frozenset(),
    S.FAILED: frozenset({S.SUBMITTING, S.GENERATED, S.FAILED}),
}


class OutcomeCode(StrEnum):
    """Every ``code`` the pipeline itself writes into an outcome (the service's codes pass through as-is)."""

    #: the row failed validation (the message names the row and the field)
    INVALID_INPUT = "InvalidInput"
    #: the row's media failed the pre-flight checks (format, size, duration) before any spend
    PREFLIGHT = "PreflightCheck"
    #: the submit answer was lost: a task may exist and be billed
    SUBMISSION_UNCERTAIN = "SubmissionUncertain"
    #: the run ended with the row still in flight
    INCOMPLETE = "Incomplete"
    #: the video was generated (billed) but could not be stored
    STORE_FAILED = "StoreFailed"
    #: the result URL died (24 h) before the video was stored
    RESULT_EXPIRED = "ResultExpired"
    #: the service no longer knows the task (task ids live 24 h); it may have run and been billed
    UNKNOWN = "UNKNOWN"


class RowTransitionError(ValueError):
    """A step tried to move a row in a way :data:`TRANSITIONS` does not allow."""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class RowState:
    """The recorded progress of one row (the ledger's record; JSON-serialisable)."""

    row_id: str
    state: RowStatus
    model: str = ""
    fingerprint: str = ""
    #: The connection (API key) the task was submitted with: only that key can query it.
    conn_id: str | None = None
    task_id: str | None = None
    code: str | None = None
    message: str | None = None
    billed: bool = False
    video_url: str | None = None
    video_uri: str | None = None
    video_bytes: int | None = None
    video_sha256: str | None = None
    video_duration: float | None = None
    video_ratio: str | None = None
    run_id: str | None = None
    #: The face detection that gave this row its boxes: ``key``, ``model``, ``ratio``, ``passed`` and who
    #: paid for it (``run_id``, ``row_id``); a detection is billed once per image and ratio, not per row.
    detection: dict[str, Any] | None = None
    #: When the last submit intent was written and its answer seen lost (ISO, UTC); the unclaimed tasks of
    #: that window (None: never looked), whether one was adopted, whether it was sent again (may pay twice).
    #: See :mod:`talking_heads.reconcile`.
    intent_at: str | None = None
    lost_at: str | None = None
    candidates: tuple[str, ...] | None = None
    reconciled: bool = False
    resubmitted: bool = False
    updated_at: str = field(default_factory=_now)
    history: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "state", RowStatus(self.state))

    def advance(self, state: RowStatus, **changes: Any) -> RowState:
        """A copy in a new state; the history keeps every state the row went through, with when."""
        if state not in TRANSITIONS[self.state]:
            raise RowTransitionError(f"row {self.row_id}: {self.state} -> {state} is not an allowed move")
        entry = f"{_now()} {self.state}->{state}" + (f" task={self.task_id}" if self.task_id else "")
        return replace(self, state=state, updated_at=_now(), history=(*self.history, entry), **changes)

    def lose(self, message: str | None) -> RowState:
        """A copy ``uncertain``: the submit answer was lost, seen now (a task may exist)."""
        return self.advance(S.UNCERTAIN, code=OutcomeCode.SUBMISSION_UNCERTAIN, message=message, lost_at=_now())

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["state"] = str(self.state)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RowState:
        data = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        data["history"] = tuple(data.get("history", ()))
        if data.get("candidates") is not None:
            data["candidates"] = tuple(data["candidates"])
        return cls(**data)


# -- plan -------------------------------------------------------------------------------------------------


def plan_row(state: RowState | None, *, resubmit_uncertain: bool, now: datetime | None = None) -> dict[str, Any] | None:
    """What this run does with a valid row, given its record: ``None`` to generate it, else its final outcome
    (a lost submission is generated while it can be looked up: the submit step reconciles it first)."""
    if state is None:
        return None
    if state.state == S.SUCCEEDED:
        return {
            "status": "skipped",
            "task_id": state.task_id,
            "video_uri": state.video_uri,
            "video_duration": state.video_duration,
            "video_ratio": state.video_ratio,
            "message": f"already generated by run {state.run_id}; not paid for again",
        }
    if state.state in (S.SUBMITTING, S.UNCERTAIN) and not resubmit_uncertain:
        return reconcile.settle_uncertain(state, now or datetime.now(UTC), OutcomeCode.SUBMISSION_UNCERTAIN)
    if state.state == S.FAILED and state.code == OutcomeCode.UNKNOWN and not resubmit_uncertain:
        # The task id expired: it may have run and been billed. Generating again may pay twice.
        return {
            "status": "failed",
            "code": OutcomeCode.UNKNOWN,
            "task_id": state.task_id,
            "message": f"{state.message}; it may have run and been billed, so it is not generated again unless "
            "resubmit_uncertain=true",
        }
    if state.state == S.FAILED and state.detection and not state.detection.get("passed"):
        return {
            "status": "failed",
            "code": state.code,
            "message": f"{state.message} (face detection did not pass; it was billed once and is not repeated: "
            "change the image or its ratio to try again)",
            "detection_model": state.detection.get("model"),
        }
    if state.state == S.FAILED and state.billed:
        return {
            "status": "failed",
            "code": state.code,
            "task_id": state.task_id,
            "message": f"{state.message} (already billed; not generated again)",
        }
    return None


# -- submit -----------------------------------------------------------------------------------------------


def submit_row(
    ledger: RowLedger,
    item: WorkItem,
    *,
    hook_for: Callable[[str], DashScopeHook],
    default_conn_id: str,
    run_id: str,
    resubmit_uncertain: bool,
    signer: MediaSigner,
    log: logging.Logger,
) -> Submission:
    """Submit one row at most once, writing the intent to the ledger *before* the request is sent.

    A row with a task already in flight returns that task (and the key that created it, the only one
    that can query it); a row whose earlier answer was lost is refused unless ``resubmit_uncertain``.
    A row without boxes is detected first (:func:`detect_image`); one whose detection does not pass
    ends ``failed`` with the service's code and is never submitted. Media are presigned just before
    the call. Only errors that prove no task was made leave the row ``failed`` and unbilled.
    """
    request = item.request
    state = ledger.get(request.row_id)
    if state is not None and state.state in (S.SUBMITTED, S.GENERATED, S.SUCCEEDED) and state.task_id:
        log.info("Row %s already has task %s (%s); not resubmitting", request.row_id, state.task_id, state.state)
        return Submission(request.row_id, state.task_id, state.conn_id or default_conn_id)
    conn_id = item.conn_id or default_conn_id
    resubmitted = state is not None and state.resubmitted
    if state is not None and state.state in (S.SUBMITTING, S.UNCERTAIN):
        if pause := state.state == S.SUBMITTING:  # cut off before its answer came: the loss is seen now
            ledger.put(state.lose(state.message))
        if adopted := reconcile_row(ledger, request.row_id, hook_for, default_conn_id, log, pause=pause):
            return adopted
        state = ledger.get(request.row_id) or state
        if not resubmit_uncertain:
            raise AirflowFailException(f"row {request.row_id}: {state.message or lost_answer_message()}")
        log.warning("Row %s: resubmitting after an uncertain submission, as asked (may pay twice)", request.row_id)
        resubmitted = True
    boxes, detection = None, None
    if request.needs_detection:
        detection = detect_image(ledger, request, hook=hook_for(conn_id), signer=signer, run_id=run_id, log=log)
        summary = {k: detection[k] for k in ("key", "model", "ratio", "passed", "run_id", "row_id")}
        if not detection["passed"]:
            failed = {"code": detection["code"], "message": detection["message"], "billed": False}
            record = dict(model=request.model, fingerprint=request.fingerprint(), detection=summary, **failed)
            ledger.put(
                state.advance(S.FAILED, **record)
                if state is not None
                else RowState(row_id=request.row_id, state=S.FAILED, **record)
            )
            raise AirflowFailException(
                f"row {request.row_id}: face detection did not pass: {detection['code']}: {detection['message']}"
            )
        boxes, detection = (detection["face_bbox"], detection["ext_bbox"]), summary
    if state is None:
        state = RowState(row_id=request.row_id, state=S.SUBMITTING, model=request.model)
    state = ledger.put(
        state.advance(
            S.SUBMITTING,
            model=request.model,
            fingerprint=request.fingerprint(),
            conn_id=conn_id,
            run_id=run_id,
            task_id=None,
            code=None,
            message=None,
            detection=detection,
            intent_at=_now(),
            lost_at=None,
            reconciled=False,
            resubmitted=resubmitted,
        )
    )
    try:
        # Presigned just before the call: the URLs are credentials, used here and never recorded.
        api_input = request.api_input(boxes=boxes, urls=signer.urls_for(request))
        submitted = hook_for(conn_id).submit_task(request.model, api_input, request.api_parameters())
    except DashScopeSubmissionUncertain as error:
        message = redact(str(error))
        lost = ledger.put(state.lose(message))
        if adopted := reconcile_row(ledger, request.row_id, hook_for, default_conn_id, log, pause=True):
            return adopted
        found = (ledger.get(request.row_id) or lost).message
        raise AirflowFailException(f"row {request.row_id}: {message}; recorded as uncertain: {found}") from None
    except DashScopeAPIError as error:
        # The service answered with an error body: no task was created, nothing billed. Recorded as failed
        # in case this is the last try; a transient refusal (429, 5xx) that outlasted the hook's retries is
        # left to the Airflow task's own retries, which may submit again safely.
        ledger.put(state.advance(S.FAILED, code=error.code, message=redact(error.message or ""), billed=False))
        if error.retryable:
            raise
        raise AirflowFailException(f"row {request.row_id}: submit refused: {redact(str(error))}") from None
    except Exception as error:
        message = redact(str(error))
        if getattr(error, "request_not_sent", False):
            ledger.put(state.advance(S.FAILED, code=type(error).__name__, message=message, billed=False))
        else:  # the next try of this step looks for its task (reconcile_row)
            ledger.put(state.lose(message))
        raise
    ledger.put(state.advance(S.SUBMITTED, task_id=submitted.task_id))
    log.info("Row %s submitted as task %s (connection %s)", request.row_id, submitted.task_id, conn_id)
    return Submission(request.row_id, submitted.task_id, conn_id)


def reconcile_row(
    ledger: RowLedger,
    row_id: str,
    hook_for: Callable[[str], DashScopeHook],
    default_conn_id: str,
    log: logging.Logger,
    pause: bool = False,
) -> Submission | None:
    """Look for an ``uncertain`` row's task in the task list (:func:`talking_heads.reconcile.look`): adopted, the
    row is ``submitted`` with it and returned, else it stays ``uncertain`` naming the candidates. ``pause``: the
    loss was just seen: wait for the task to be listed, look up to 3 times."""
    state, verdict = reconcile.look(ledger, row_id, hook_for, default_conn_id, pause=pause, tries=3 if pause else 1)
    if state is None or verdict is None:  # no record, or no longer uncertain: another try or run found its task?
        done = state is not None and state.state in (S.SUBMITTED, S.GENERATED, S.SUCCEEDED) and state.task_id
        return Submission(row_id, state.task_id, state.conn_id or default_conn_id) if done else None
    if verdict.task_id is None:
        looked = dict(candidates=verdict.candidates, message=reconcile.uncertain_message(verdict.message))
        ledger.put(state.advance(S.UNCERTAIN, **looked))
        log.warning("Row %s stays uncertain: %s", row_id, verdict.message)
        return None
    adopted = dict(task_id=verdict.task_id, candidates=verdict.candidates, reconciled=True, code=None, message=None)
    ledger.put(state.advance(S.SUBMITTED, **adopted))
    log.info("Row %s: its lost submission is task %s: %s", row_id, verdict.task_id, verdict.message)
    return Submission(row_id, verdict.task_id, state.conn_id or default_conn_id)


# -- wait -------------------------------------------------------------------------------------------------


def finished_result(ledger: RowLedger, submission: Submission) -> WaitResult | None:
    """The recorded end of the submission's task, if an earlier try already saw it (then nothing is polled)."""
    state = ledger.get(submission.row_id)
    if state is not None and state.state in (S.GENERATED, S.SUCCEEDED) and state.task_id == submission.task_id:
        return WaitResult.of(state)
    return None


def record_task_end(ledger: RowLedger, submission: Submission, task: DashScopeTask) -> WaitResult:
    """Record how the row's task ended: ``generated`` (billed), or ``failed`` (raises)."""
    row_id = submission.row_id
    state = ledger.get(row_id) or RowState(row_id=row_id, state=S.SUBMITTED, task_id=task.task_id)
    if task.status == TaskStatus.SUCCEEDED:
        state = ledger.put(
            state.advance(
                S.GENERATED,
                task_id=task.task_id,
                billed=True,
                video_url=task.video_url,
                video_duration=task.video_duration,
                video_ratio=task.video_ratio,
            )
        )
        return WaitResult.of(state)
    code = task.code or task.status
    message = task.message or {
        TaskStatus.UNKNOWN: "the service no longer knows this task (task ids expire 24 h after creation)",
        TaskStatus.CANCELED: "the task was canceled before it ran",
    }.get(task.status, f"task ended {task.status}")
    ledger.put(state.advance(S.FAILED, task_id=task.task_id, code=code, message=message, billed=False))
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


# -- store ------------------------------------------------------------------------------------------------


def store_row(
    ledger: RowLedger,
    result: WaitResult,
    *,
    run_id: str,
    transfer: Callable[[str, Any], dict[str, Any]],
    log: logging.Logger,
) -> dict[str, Any]:
    """Copy a generated row's video to ``videos/{row_id}.mp4`` (``transfer(video_url, destination)``).

    The video URL is read from the ledger, never from XCom: it is a signed URL. A failed copy leaves the
    row ``generated`` (a later try or rerun stores it without generating it again); an expired URL ends
    it ``failed`` with :attr:`OutcomeCode.RESULT_EXPIRED`.
    """
    row_id = result.row_id
    state = ledger.get(row_id)
    if state is not None and state.state == S.SUCCEEDED:
        log.info("Row %s already stored at %s", row_id, state.video_uri)
        return {"uri": state.video_uri, "size_bytes": state.video_bytes, "sha256": state.video_sha256}
    if state is None or state.state != S.GENERATED or not state.video_url or state.task_id != result.task_id:
        found = "no record" if state is None else f"{state.state}, task {state.task_id}"
        raise AirflowFailException(
            f"row {row_id}: no generated video of task {result.task_id} is recorded to store ({found})"
        )
    try:
        stored = transfer(state.video_url, ledger.layout.video(row_id))
    except DashScopeResultExpired as error:
        ledger.put(state.advance(S.FAILED, code=OutcomeCode.RESULT_EXPIRED, message=str(error)))
        raise AirflowFailException(f"row {row_id}: {error}") from None
    except Exception as error:
        # Still "generated": said in the outcome if no try succeeds; nothing partial is left behind.
        message = f"{type(error).__name__}: {error}"
        ledger.put(state.advance(S.GENERATED, code=OutcomeCode.STORE_FAILED, message=message))
        raise
    ledger.put(
        state.advance(
            S.SUCCEEDED,
            video_uri=stored["uri"],
            video_bytes=stored["size_bytes"],
            video_sha256=stored["sha256"],
            run_id=run_id,
            code=None,
            message=None,
        )
    )
    return stored


# -- outcome ----------------------------------------------------------------------------------------------


def outcome_of(state: RowState | None, run_id: str) -> dict[str, Any]:
    """The outcome of a row that was handed to the generate steps in this run, from its final record."""
    if state is None:
        return {
            "status": "failed",
            "code": OutcomeCode.INCOMPLETE,
            "message": "the row was never submitted: the submit step did not run (see the run's task states); "
            "rerun to continue",
        }
    return reconcile.with_notes(state, _outcome(state, run_id))


def _outcome(state: RowState, run_id: str) -> dict[str, Any]:
    # The connection says whose key (whose console, whose bill) the task belongs to.
    base: dict[str, Any] = {
        "task_id": state.task_id,
        "video_duration": state.video_duration,
        "video_ratio": state.video_ratio,
        "dashscope_conn_id": state.conn_id,
        **detection_usage(state, run_id),
    }
    if state.state == S.SUCCEEDED:
        fresh = state.run_id == run_id
        return {
            **base,
            "status": "succeeded" if fresh else "skipped",
            "video_uri": state.video_uri,
            "video_bytes": state.video_bytes,
            "video_sha256": state.video_sha256,
            "message": None if fresh else f"already generated by run {state.run_id}",
        }
    if state.state == S.FAILED:
        return {**base, "status": "failed", "code": state.code, "message": state.message}
    if state.state in (S.SUBMITTING, S.UNCERTAIN):
        message = state.message or lost_answer_message("the submit answer was lost")
        return {**base, "status": "failed", "code": OutcomeCode.SUBMISSION_UNCERTAIN, "message": message}
    if state.state == S.GENERATED and state.code:
        return {
            **base,
            "status": "failed",
            "code": state.code,
            "message": f"the video of task {state.task_id} was generated (and billed) but not stored: "
            f"{state.message}. Rerun to store it: the task is not generated again (its URL lives 24 h after "
            "it succeeded)",
        }
    step = "wait" if state.state == S.SUBMITTED else "download"
    return {
        **base,
        "status": "failed",
        "code": OutcomeCode.INCOMPLETE,
        "message": f"stopped in the {step} step with task {state.task_id} in flight ({state.state}); "
        "rerun to continue: the task is waited on, not resubmitted",
    }
