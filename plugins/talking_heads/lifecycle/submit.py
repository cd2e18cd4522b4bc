"""The submit step: a row is submitted at most once (:func:`submit_row`), a lost answer is looked for in
the task list (:func:`reconcile_row`), and a row another run is submitting is waited for, then followed."""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from airflow.configuration import conf
from dashscope_provider.compat import AirflowFailException, AirflowNotFoundException, AirflowSkipException
from dashscope_provider.connection import account_from_connection
from dashscope_provider.exceptions import (
    QUOTA_EXHAUSTED_CODE,
    DashScopeAPIError,
    DashScopeQuotaExhausted,
    DashScopeSubmissionUncertain,
)

from talking_heads import reconcile
from talking_heads.detection import detect_image
from talking_heads.lifecycle.states import LedgerConflict, RowState, now_iso
from talking_heads.lifecycle.states import RowStatus as S
from talking_heads.media import MediaSigner, redact
from talking_heads.payloads import Submission, WorkItem
from talking_heads.reconcile import lost_answer_message

if TYPE_CHECKING:
    import logging

    from dashscope_provider.hooks.dashscope import DashScopeHook

    from talking_heads.ledger import RowLedger
    from talking_heads.validation import RowRequest


#: A submit intent (the row's claim) younger than this is taken for alive, and another run waits for it.
#: Longer than one submit can take: the hook keeps retrying a throttled call for 120 s, and each of its
#: attempts may wait 10 + 60 s for an answer. Older, or written by an earlier try of this very step, the
#: claim's owner is gone and its answer lost.
CLAIM_TIMEOUT_SECONDS = float(os.environ.get("TALKING_HEADS_CLAIM_TIMEOUT_SECONDS", "600"))
#: How often a run that waits for another run's claim reads the row again.
CLAIM_POLL_SECONDS = 2.0
#: How often a submit decides again after another writer moved the row first (each time from what it did).
MAX_RACES = 20


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

    A row with a task already in flight returns that task (and the key that created it, the only one
    that can query it); a row whose earlier answer was lost is refused unless ``resubmit_uncertain``.
    A row another run is submitting right now (a fresh claim) is waited for, then its task is followed.
    A row without boxes is detected first (:func:`detect_image`); one whose detection does not pass
    ends ``failed`` with the service's code and is never submitted. Media are presigned just before
    the call. Only errors that prove no task was made leave the row ``failed`` and unbilled.

    :param owner: who claims the row (``"{run_id} {task}[{map_index}] try {n}"``); by default the run.
    """
    for _ in range(MAX_RACES):
        try:
            return _submit_once(
                ledger,
                item,
                hook_for=hook_for,
                default_conn_id=default_conn_id,
                run_id=run_id,
                owner=owner or run_id,
                resubmit_uncertain=resubmit_uncertain,
                signer=signer,
                log=log,
            )
        except LedgerConflict as conflict:  # nothing was sent: decide again from the newer record
            log.info("Row %s: %s; deciding again", item.request.row_id, conflict)
    raise AirflowFailException(f"row {item.request.row_id}: other writers kept moving the row; nothing was sent")


def _submit_once(
    ledger: RowLedger,
    item: WorkItem,
    *,
    hook_for: Callable[[str], DashScopeHook],
    default_conn_id: str,
    run_id: str,
    owner: str,
    resubmit_uncertain: bool,
    signer: MediaSigner,
    log: logging.Logger,
) -> Submission:
    request = item.request
    state = ledger.get(request.row_id)
    if state is not None and _claimed_elsewhere(state, run_id):  # sent now by another run: wait, then follow
        state = _await_claim(ledger, state, log)
    if state is not None and state.state in (S.SUBMITTED, S.GENERATED, S.SUCCEEDED) and state.task_id:
        by = "" if state.run_id == run_id else f", by the overlapping run {state.run_id}"
        log.info(
            "Row %s already has task %s (%s%s); following it, not resubmitting",
            request.row_id,
            state.task_id,
            state.state,
            by,
        )
        return Submission(request.row_id, state.task_id, state.conn_id or default_conn_id)
    conn_id = item.conn_id or default_conn_id
    resubmitted = state is not None and state.resubmitted
    if state is not None and state.state in (S.SUBMITTING, S.UNCERTAIN):
        if pause := state.state == S.SUBMITTING:  # its owner is gone before the answer came: the loss is seen now
            ledger.put(state.lose(state.message or _stale_claim_message(state, run_id)))
        if adopted := reconcile_row(ledger, request.row_id, hook_for, default_conn_id, log, pause=pause):
            return adopted
        state = ledger.get(request.row_id) or state
        if not resubmit_uncertain:
            raise AirflowFailException(f"row {request.row_id}: {state.message or lost_answer_message()}")
        log.warning("Row %s: resubmitting after an uncertain submission, as asked (may pay twice)", request.row_id)
        resubmitted = True
    hook = hook_for(conn_id)  # one hook for the row: its count of waited-out 429s is recorded with the row
    if (stopped := quota_stop(ledger, run_id, hook)) is not None:
        _record_quota_skip(ledger, state, request, stopped)
        raise AirflowSkipException(f"row {request.row_id}: {stopped}")
    boxes, detection = None, None
    if request.needs_detection:
        try:
            detection = detect_image(ledger, request, hook=hook, signer=signer, run_id=run_id, log=log)
        except DashScopeQuotaExhausted as error:
            stopped = stop_submitting(ledger, run_id, hook, request.row_id, redact(str(error)))
            _record_quota_skip(ledger, state, request, stopped)
            raise AirflowSkipException(f"row {request.row_id}: {stopped}") from None
        summary = {k: detection[k] for k in ("key", "model", "ratio", "passed", "run_id", "row_id")}
        if not detection["passed"]:
            failed = {"code": detection["code"], "message": detection["message"], "billed": False}
            record = dict(model=request.model, fingerprint=request.fingerprint(), detection=summary, **failed)
            _fail_unsent(ledger, state, request.row_id, **record)
            raise AirflowFailException(
                f"row {request.row_id}: face detection did not pass: {detection['code']}: {detection['message']}"
            )
        boxes, detection = (detection["face_bbox"], detection["ext_bbox"]), summary
    if state is None:
        state = RowState(row_id=request.row_id, state=S.SUBMITTING, model=request.model)
    # The claim: written exclusively (LedgerConflict if another writer moved the row since it was read).
    state = ledger.put(
        state.advance(
            S.SUBMITTING,
            model=request.model,
            fingerprint=request.fingerprint(),
            conn_id=conn_id,
            run_id=run_id,
            owner=owner,
            deployment=deployment_id(),
            task_id=None,
            code=None,
            message=None,
            detection=detection,
            intent_at=now_iso(),
            lost_at=None,
            reconciled=False,
            resubmitted=resubmitted,
        )
    )
    row_id = request.row_id
    try:
        # Presigned just before the call: the URLs are credentials, used here and never recorded.
        api_input = request.api_input(boxes=boxes, urls=signer.urls_for(request))
        submitted = hook.submit_task(request.model, api_input, request.api_parameters())
    except DashScopeSubmissionUncertain as error:
        message = redact(str(error))
        lost = _record_if_claimed(ledger, row_id, owner, lambda cur: cur.lose(message))
        if adopted := reconcile_row(ledger, row_id, hook_for, default_conn_id, log, pause=True):
            return adopted
        found = (ledger.get(row_id) or lost or state).message
        raise AirflowFailException(f"row {row_id}: {message}; recorded as uncertain: {found}") from None
    except DashScopeQuotaExhausted as error:
        # A free-only account has spent its free quota: every row of it would get this answer. No task, no bill.
        stopped = stop_submitting(ledger, run_id, hook, row_id, redact(str(error)))
        quota = dict(code=error.code, message=stopped, billed=False)
        _record_if_claimed(ledger, row_id, owner, lambda cur: cur.advance(S.FAILED, **quota))
        raise AirflowSkipException(f"row {row_id}: {stopped}") from None
    except DashScopeAPIError as error:
        # The service answered with an error body: no task was created, nothing billed. Recorded as failed
        # in case this is the last try; a transient refusal (429, 5xx) that outlasted the hook's retries is
        # left to the Airflow task's own retries, which may submit again safely.
        refused = dict(code=error.code, message=redact(error.message or ""), billed=False)
        _record_if_claimed(ledger, row_id, owner, lambda cur: cur.advance(S.FAILED, **refused))
        if error.retryable:
            raise
        raise AirflowFailException(f"row {row_id}: submit refused: {redact(str(error))}") from None
    except Exception as error:
        message = redact(str(error))
        if getattr(error, "request_not_sent", False):
            unsent = dict(code=type(error).__name__, message=message, billed=False)
            _record_if_claimed(ledger, row_id, owner, lambda cur: cur.advance(S.FAILED, **unsent))
        else:  # the next try of this step looks for its task (reconcile_row)
            _record_if_claimed(ledger, row_id, owner, lambda cur: cur.lose(message))
        raise
    # Recorded even if another run took the claim for stale meanwhile (uncertain): this is its task.
    task_id = submitted.task_id
    sent = dict(task_id=task_id, throttled=getattr(hook, "throttled", 0))
    _record_if_claimed(ledger, row_id, owner, lambda cur: cur.advance(S.SUBMITTED, **sent), S.UNCERTAIN)
    log.info("Row %s submitted as task %s (connection %s)", row_id, task_id, conn_id)
    return Submission(row_id, task_id, conn_id)


def quota_stop(ledger: RowLedger, run_id: str, hook: DashScopeHook) -> str | None:
    """Why this run submits nothing more with the hook's account (its free quota ran out), or None."""
    try:
        record = json.loads(ledger.layout.quota_exhausted(run_id, _account(hook)).read_text())
    except (FileNotFoundError, AirflowNotFoundException):  # no connection: the call says so, naming it
        return None
    return f"not submitted: {record['reason']} (answered to row {record['row_id']} earlier in this run)"


def stop_submitting(ledger: RowLedger, run_id: str, hook: DashScopeHook, row_id: str, answer: str) -> str:
    """Record that the hook's account has no free quota left in this run; returns the row's reason."""
    reason = (
        f"the free quota of the DashScope account is used up ({answer}); this run submits nothing more with "
        "it, and nothing was billed. A later run submits these rows (after pay-as-you-go is enabled, or the "
        "quota is restored)"
    )
    path = ledger.layout.quota_exhausted(run_id, _account(hook))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"reason": reason, "row_id": row_id, "at": now_iso()}))
    return f"not submitted: {reason}"


def _account(hook: DashScopeHook) -> str:
    return account_from_connection(hook.dashscope_connection)


def _record_quota_skip(ledger: RowLedger, state: RowState | None, request: RowRequest, reason: str) -> None:
    _fail_unsent(ledger, state, request.row_id, model=request.model, code=QUOTA_EXHAUSTED_CODE, message=reason)


def _fail_unsent(ledger: RowLedger, state: RowState | None, row_id: str, **record: Any) -> None:
    """Record a row ``failed`` before anything was sent for it (a claim conflict raises LedgerConflict)."""
    record.setdefault("billed", False)
    ledger.put(state.advance(S.FAILED, **record) if state is not None else RowState(row_id, S.FAILED, **record))


def deployment_id() -> str:
    """This Airflow deployment, as a short digest of its metadata database's address (never the address: it
    may hold a password). Two deployments writing to one output root have two databases."""
    address = conf.get("database", "sql_alchemy_conn", fallback="") or ""
    return hashlib.sha256(address.encode()).hexdigest()[:12]


def _claimed_elsewhere(state: RowState, run_id: str) -> bool:
    return state.state == S.SUBMITTING and not _own_run(state, run_id) and claim_age(state) is not None


def _own_run(state: RowState, run_id: str) -> bool:
    """Whether the row's claim was made by this very run (an earlier try of this step: its owner is gone)."""
    return state.run_id == run_id and state.deployment in (None, deployment_id())


def claim_age(state: RowState, now: datetime | None = None) -> float | None:
    """Seconds since the row's claim (submit intent) was written, if it is still fresh; else None."""
    if not state.intent_at:
        return None
    age = ((now or datetime.now(UTC)) - datetime.fromisoformat(state.intent_at)).total_seconds()
    return age if age < CLAIM_TIMEOUT_SECONDS else None


def _await_claim(ledger: RowLedger, claim: RowState, log: logging.Logger) -> RowState | None:
    """Wait for another run's fresh claim to end (submitted, refused, or lost) or to go stale."""
    log.info(
        "Row %s is being submitted by the overlapping run %s (%s, since %s): waiting for its task, at most %g s",
        claim.row_id,
        claim.run_id,
        claim.owner,
        claim.intent_at,
        CLAIM_TIMEOUT_SECONDS,
    )
    current: RowState | None = claim
    while current is not None and current.revision == claim.revision and claim_age(current) is not None:
        time.sleep(CLAIM_POLL_SECONDS)
        current = ledger.get(claim.row_id)
    return current


def _stale_claim_message(state: RowState, run_id: str) -> str | None:
    if _own_run(state, run_id):
        return None  # an earlier try of this step: its answer was lost when it ended
    return lost_answer_message(
        f"run {state.run_id} ({state.owner}) claimed the row at {state.intent_at} and recorded no answer within "
        f"{CLAIM_TIMEOUT_SECONDS:g} s"
    )


def _record_if_claimed(
    ledger: RowLedger,
    row_id: str,
    owner: str,
    move: Callable[[RowState], RowState],
    *also: S,
) -> RowState | None:
    """Record what became of this claim, unless another writer has moved the row on (then leave it)."""
    states = (S.SUBMITTING, *also)
    return ledger.update(
        row_id, lambda cur: move(cur) if cur is not None and cur.owner == owner and cur.state in states else None
    )


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
        return _in_flight(state, default_conn_id)
    if verdict.task_id is None:
        claim = f"{state.owner} (claimed at {state.intent_at})" if state.owner else None
        looked = dict(candidates=verdict.candidates, message=reconcile.uncertain_message(verdict.message, claim))
        state = ledger.update(row_id, lambda cur: cur.advance(S.UNCERTAIN, **looked) if _uncertain(cur) else None)
        if state is not None and state.state == S.UNCERTAIN:
            log.warning("Row %s stays uncertain: %s", row_id, verdict.message)
            return None
        return _in_flight(state, default_conn_id)  # another try or run settled it meanwhile
    adopted = dict(task_id=verdict.task_id, candidates=verdict.candidates, reconciled=True, code=None, message=None)
    state = ledger.update(row_id, lambda cur: cur.advance(S.SUBMITTED, **adopted) if _uncertain(cur) else None)
    log.info("Row %s: its lost submission is task %s: %s", row_id, verdict.task_id, verdict.message)
    return _in_flight(state, default_conn_id)


def _uncertain(state: RowState | None) -> bool:
    return state is not None and state.state == S.UNCERTAIN


def _in_flight(state: RowState | None, default_conn_id: str) -> Submission | None:
    if state is not None and state.state in (S.SUBMITTED, S.GENERATED, S.SUCCEEDED) and state.task_id:
        return Submission(state.row_id, state.task_id, state.conn_id or default_conn_id)
    return None
