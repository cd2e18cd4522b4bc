"""The submit step: a row is submitted at most once, and every answer, or its loss, is recorded.

The protocol is one named function per step, run in order by :func:`submit_row`; they share one frozen
:class:`SubmitContext`:

1. :func:`follow_or_settle`: a row with a task follows it; another run's fresh claim is waited for, then
   followed; a lost answer is looked for in the task list (:func:`talking_heads.row.reconcile.reconcile_row`)
   and never re-sent unless ``resubmit_uncertain``.
2. :func:`check_quota`: an account whose free quota ran out in this run sends nothing more.
3. :func:`detect`: a row without boxes is detected first (paid once per image and ratio); a face the
   service refuses ends the row ``failed``, never submitted.
4. :func:`claim`: the write-ahead intent (``submitting``, naming its owner), written exclusively, under
   the account's submit lease (:func:`account_lease`), held until step 5's answer is recorded.
5. :func:`send`: the media presigned just before the POST; the task id recorded by :func:`record_sent`,
   or each kind of failure by its own function: :func:`on_lost_answer` (a task may exist),
   :func:`on_quota_exhausted`, :func:`on_refused` (an error body: no task), :func:`on_not_answered`.

A step that finds the row moved by another writer raises :class:`~talking_heads.row.ledger.LedgerConflict`
before anything is sent; :func:`submit_row` then decides again from the newer record.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn

from dashscope_provider.compat import AirflowFailException, AirflowSkipException
from dashscope_provider.exceptions import (
    QUOTA_EXHAUSTED_CODE,
    DashScopeAPIError,
    DashScopeQuotaExhausted,
    DashScopeSubmissionUncertain,
)

from talking_heads.row.claims import (
    await_claim,
    claimed_elsewhere,
    deployment_id,
    record_if_claimed,
    stale_claim_message,
)
from talking_heads.row.connections import RunConnections
from talking_heads.row.detection import detect_image
from talking_heads.row.lease import AccountLease
from talking_heads.row.ledger import LedgerConflict, RowLedger
from talking_heads.row.media import MediaSigner, redact
from talking_heads.row.payloads import Submission, WorkItem
from talking_heads.row.quota import quota_stop, stop_submitting
from talking_heads.row.reconcile import lost_answer_message, reconcile_row
from talking_heads.row.states import OPEN_SUBMISSION, RowRecord, RowStatus, now_iso
from talking_heads.table.validation import RowRequest

if TYPE_CHECKING:  # the hook's import (HttpHook, aiohttp) is paid where a call is made, not at DAG parse
    from dashscope_provider.hooks.dashscope import DashScopeHook

#: How often a submit decides again after another writer moved the row first (each time from what it did).
MAX_RACES = 20
#: ``TALKING_HEADS_SUBMIT_LEASE=off`` turns the account's submit lease off: a benchmark and diagnosis switch
#: only (how much throughput the lease costs, how many rows a crash leaves uncertain without it). Off,
#: several submits of one account may be in flight together, and one crash may lose all their answers,
#: which reconciliation then cannot tell apart. Read at each submit; on unless exactly ``off``.
SUBMIT_LEASE_ENV = "TALKING_HEADS_SUBMIT_LEASE"
#: The face boxes a submit sends: ``(face_bbox, ext_bbox)``.
Boxes = tuple[list[int], list[int]]


@dataclass(frozen=True)
class SubmitContext:
    """What every step of one row's submit shares: the row, its ledger, who submits and with which keys.

    :param owner: who claims the row (``"{run_id} {task}[{map_index}] try {n}"``).
    :param resubmit_uncertain: send a row whose earlier answer was lost again (may pay twice: on purpose).
    """

    ledger: RowLedger
    item: WorkItem
    connections: RunConnections
    run_id: str
    owner: str
    resubmit_uncertain: bool
    signer: MediaSigner
    log: logging.Logger

    @property
    def request(self) -> RowRequest:
        return self.item.request

    @property
    def row_id(self) -> str:
        return self.item.request.row_id

    @property
    def conn_id(self) -> str:
        return self.item.conn_id or self.connections.default_conn_id


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
    owner: str | None = None,
) -> Submission:
    """Submit one row at most once, claiming it in the ledger *before* the request is sent.

    Returns the row's task and the key that created it (the only one that can query it). Only errors that
    prove no task was made leave the row ``failed`` and unbilled; a lost answer leaves it ``uncertain``.

    :param owner: who claims the row (``"{run_id} {task}[{map_index}] try {n}"``); by default the run.
    """
    context = SubmitContext(
        ledger=ledger,
        item=item,
        connections=RunConnections(hook_for, default_conn_id),
        run_id=run_id,
        owner=owner or run_id,
        resubmit_uncertain=resubmit_uncertain,
        signer=signer,
        log=log,
    )
    for _ in range(MAX_RACES):
        try:
            return _submit_once(context)
        except LedgerConflict as conflict:  # nothing was sent: decide again from the newer record
            log.info("Row %s: %s; deciding again", context.row_id, conflict)
    raise AirflowFailException(f"row {context.row_id}: other writers kept moving the row; nothing was sent")


def _submit_once(context: SubmitContext) -> Submission:
    followed, record, resubmitted = follow_or_settle(context, context.ledger.get(context.row_id))
    if followed is not None:
        return followed
    hook = context.connections.hook(context.conn_id)  # one hook per row: its waited-out 429s are recorded
    check_quota(context, record, hook)
    boxes, detection = detect(context, record, hook)
    with account_lease(context, hook):  # one answer outstanding per account: a crash loses at most one
        claimed = claim(context, record, detection, resubmitted=resubmitted)
        return send(context, claimed, hook, boxes)


def account_lease(context: SubmitContext, hook: DashScopeHook) -> contextlib.AbstractContextManager[Any]:
    """Step 4's guard: the account's submit lease (:mod:`talking_heads.row.lease`), held from just before
    the claim until the answer, or its loss, is recorded. Rows waiting for it have sent nothing.

    None (no lease) when ``TALKING_HEADS_SUBMIT_LEASE=off`` (:data:`SUBMIT_LEASE_ENV`: benchmarks, diagnosis)."""
    if os.environ.get(SUBMIT_LEASE_ENV, "on").strip().lower() == "off":
        context.log.warning("Row %s: the account's submit lease is off (%s=off)", context.row_id, SUBMIT_LEASE_ENV)
        return contextlib.nullcontext()
    try:
        account = hook.account
    except Exception:  # no usable connection: nothing can be sent, and the POST says so, recorded as failed
        return contextlib.nullcontext()
    return AccountLease(context.ledger, account, context.log).hold(context.owner, context.row_id)


def follow_or_settle(
    context: SubmitContext, record: RowRecord | None
) -> tuple[Submission | None, RowRecord | None, bool]:
    """Step 1, from the row's record: ``(task to follow, record, resubmitted)``; no task: go on and send.

    Waits for another run's fresh claim first. A lost answer is looked for in the task list; if it is not
    found, the row is refused (:class:`AirflowFailException`) unless ``resubmit_uncertain``.
    """
    if record is not None and claimed_elsewhere(record, context.run_id):  # sent now by another run
        record = await_claim(context.ledger, record, context.log)
    if record is not None and (followed := context.connections.submission(record)) is not None:
        by = "" if record.run_id == context.run_id else f", by the overlapping run {record.run_id}"
        context.log.info(
            "Row %s already has task %s (%s%s); following it, not resubmitting",
            context.row_id,
            record.task_id,
            record.status,
            by,
        )
        return followed, record, False
    if record is None or record.status not in OPEN_SUBMISSION:
        return None, record, record is not None and record.resubmitted
    return settle_lost(context, record)


def settle_lost(context: SubmitContext, record: RowRecord) -> tuple[Submission | None, RowRecord, bool]:
    """A claim whose owner is gone, or a row recorded ``uncertain``: adopt its task from the task list,
    else refuse to send it again unless asked (then it is sent again, marked ``resubmitted``)."""
    # Under the account's lease: no other submit of the account has its answer outstanding while this row
    # looks, so every other task of its window already has its id recorded (or is another program's).
    with account_lease(context, context.connections.hook(record.conn_id or context.conn_id)):
        if pause := record.status == RowStatus.SUBMITTING:  # its owner died before the answer: seen now
            context.ledger.put(record.lose(record.message or stale_claim_message(record, context.run_id)))
        adopted = reconcile_row(context.ledger, context.row_id, context.connections, context.log, pause=pause)
    if adopted:
        return adopted, record, False
    record = context.ledger.get(context.row_id) or record
    if not context.resubmit_uncertain:
        raise AirflowFailException(f"row {context.row_id}: {record.message or lost_answer_message()}")
    context.log.warning("Row %s: resubmitting after an uncertain submission, as asked (may pay twice)", context.row_id)
    return None, record, True


def check_quota(context: SubmitContext, record: RowRecord | None, hook: DashScopeHook) -> None:
    """Step 2: skip the row, unsent, when its account's free quota ran out earlier in this run."""
    if (stopped := quota_stop(context.ledger, context.run_id, hook)) is not None:
        fail_unsent(context, record, code=QUOTA_EXHAUSTED_CODE, message=stopped)
        raise AirflowSkipException(f"row {context.row_id}: {stopped}")


def detect(
    context: SubmitContext, record: RowRecord | None, hook: DashScopeHook
) -> tuple[Boxes | None, dict[str, Any] | None]:
    """Step 3: the boxes of a row that has none, from its (recorded or new) face detection, and the
    detection's summary for the row's record. A detection that does not pass ends the row, unsent."""
    if not context.request.needs_detection:
        return None, None
    request = context.request
    try:
        found = detect_image(
            context.ledger, request, hook=hook, signer=context.signer, run_id=context.run_id, log=context.log
        )
    except DashScopeQuotaExhausted as error:
        stopped = stop_submitting(context.ledger, context.run_id, hook, context.row_id, redact(str(error)))
        fail_unsent(context, record, code=QUOTA_EXHAUSTED_CODE, message=stopped)
        raise AirflowSkipException(f"row {context.row_id}: {stopped}") from None
    if not found.passed:
        refused = dict(code=found.code, message=found.message)
        fail_unsent(context, record, fingerprint=request.fingerprint(), detection=found.summary(), **refused)
        raise AirflowFailException(f"row {context.row_id}: face detection did not pass: {found.code}: {found.message}")
    return (found.face_bbox or [], found.ext_bbox or []), found.summary()


def claim(
    context: SubmitContext, record: RowRecord | None, detection: dict[str, Any] | None, *, resubmitted: bool
) -> RowRecord:
    """Step 4: the row's claim, the write-ahead intent ``submitting`` naming its owner and deployment,
    written exclusively (:class:`LedgerConflict` if another writer moved the row since it was read)."""
    request = context.request
    base = record or RowRecord(row_id=context.row_id, status=RowStatus.SUBMITTING, model=request.model)
    return context.ledger.put(
        base.advance(
            RowStatus.SUBMITTING,
            model=request.model,
            fingerprint=request.fingerprint(),
            conn_id=context.conn_id,
            run_id=context.run_id,
            owner=context.owner,
            deployment=deployment_id(),
            task_id=None,
            code=None,
            message=None,
            detection=detection,
            intent_at=now_iso(),
            lost_at=None,
            reconciled=False,
            resubmitted=resubmitted,
            expected_ratio=request.expected_ratio,
            expected_seconds=context.item.audio_seconds,
        )
    )


def send(context: SubmitContext, claimed: RowRecord, hook: DashScopeHook, boxes: Boxes | None) -> Submission:
    """Step 5: presign the media just before the call (the URLs are credentials, never recorded) and POST."""
    request = context.request
    try:
        api_input = request.api_input(boxes=boxes, urls=context.signer.urls_for(request))
        submitted = hook.submit_task(request.model, api_input, request.api_parameters())
    except DashScopeSubmissionUncertain as error:
        return on_lost_answer(context, claimed, error)
    except DashScopeQuotaExhausted as error:
        on_quota_exhausted(context, hook, error)
    except DashScopeAPIError as error:
        on_refused(context, error)
    except Exception as error:
        on_not_answered(context, error)
    return record_sent(context, hook, submitted.task_id)


def record_sent(context: SubmitContext, hook: DashScopeHook, task_id: str) -> Submission:
    """The answer came: the row is ``submitted`` with its task. Recorded even if another run took the claim
    for stale meanwhile (``uncertain``): this is its task."""
    sent = dict(task_id=task_id, throttled=getattr(hook, "throttled", 0))
    advance = _advance(RowStatus.SUBMITTED, **sent)
    record_if_claimed(context.ledger, context.row_id, context.owner, advance, RowStatus.UNCERTAIN)
    context.log.info("Row %s submitted as task %s (connection %s)", context.row_id, task_id, context.conn_id)
    return Submission(context.row_id, task_id, context.conn_id)


def on_lost_answer(context: SubmitContext, claimed: RowRecord, error: DashScopeSubmissionUncertain) -> Submission:
    """The request may have been received, its answer was lost: ``uncertain``, looked for in the task list
    at once; the row's task if found, else the step fails and the row is never re-sent unasked."""
    message = redact(str(error))
    lost = record_if_claimed(context.ledger, context.row_id, context.owner, lambda current: current.lose(message))
    if adopted := reconcile_row(context.ledger, context.row_id, context.connections, context.log, pause=True):
        return adopted
    found = (context.ledger.get(context.row_id) or lost or claimed).message
    raise AirflowFailException(f"row {context.row_id}: {message}; recorded as uncertain: {found}") from None


def on_quota_exhausted(context: SubmitContext, hook: DashScopeHook, error: DashScopeQuotaExhausted) -> NoReturn:
    """A free-only account has spent its free quota: every row of it would get this answer. No task, no
    bill: the run stops submitting with the account and the row is skipped."""
    stopped = stop_submitting(context.ledger, context.run_id, hook, context.row_id, redact(str(error)))
    quota = dict(code=error.code, message=stopped, billed=False)
    record_if_claimed(context.ledger, context.row_id, context.owner, _advance(RowStatus.FAILED, **quota))
    raise AirflowSkipException(f"row {context.row_id}: {stopped}") from None


def on_refused(context: SubmitContext, error: DashScopeAPIError) -> NoReturn:
    """The service answered with an error body: no task was created, nothing billed. Recorded as failed
    in case this is the last try; a transient refusal (429, 5xx) that outlasted the hook's retries is left
    to the Airflow task's own retries, which may submit again safely."""
    refused = dict(code=error.code, message=redact(error.message or ""), billed=False)
    record_if_claimed(context.ledger, context.row_id, context.owner, _advance(RowStatus.FAILED, **refused))
    if error.retryable:
        raise error
    raise AirflowFailException(f"row {context.row_id}: submit refused: {redact(str(error))}") from None


def on_not_answered(context: SubmitContext, error: Exception) -> NoReturn:
    """Any other error: ``failed`` and unbilled when it proves the request never left (``request_not_sent``),
    else a lost answer (``uncertain``) that the next try of this step looks for in the task list."""
    message = redact(str(error))
    if getattr(error, "request_not_sent", False):
        unsent = dict(code=type(error).__name__, message=message, billed=False)
        record_if_claimed(context.ledger, context.row_id, context.owner, _advance(RowStatus.FAILED, **unsent))
    else:
        record_if_claimed(context.ledger, context.row_id, context.owner, lambda current: current.lose(message))
    raise error


def fail_unsent(context: SubmitContext, record: RowRecord | None, **fields: Any) -> None:
    """Record the row ``failed`` before anything was sent for it (a claim conflict raises LedgerConflict)."""
    fields = {"model": context.request.model, "billed": False, **fields}
    failed = record.advance(RowStatus.FAILED, **fields) if record is not None else None
    context.ledger.put(failed or RowRecord(context.row_id, RowStatus.FAILED, **fields))


def _advance(status: RowStatus, **changes: Any) -> Callable[[RowRecord], RowRecord]:
    return lambda current: current.advance(status, **changes)
