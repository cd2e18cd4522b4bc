"""Reconciliation: finding, in the account's task list, the task of a row whose submit answer was lost.

A row is ``uncertain`` when its submit may have created a task whose id never came back. The service's
task list (``detection-and-limits.md``, "Task list and cancel") carries no input, only the model and the
creation time, so nothing else can match a task to a row. A row's *window* runs from when its intent was
written (``intent_at``) to when the loss was seen (``lost_at``), widened by :data:`CLOCK_SKEW` for the
difference between this machine's clock and the service's.

The rule (:func:`decide`), never a guess:

* leave out every task id that any row's ledger record holds or held (its ``task_id`` and its history);
* adopt a task only when it is the one unclaimed task in the row's window, and no other uncertain or
  in-flight (``submitting``) row of the same account and model could own it (its window holds it too);
* where several candidates or several uncertain rows remain (rows left by an older version, or a store
  without exclusive create: the account's submit lease, :mod:`talking_heads.row.lease`, otherwise keeps
  a crash to one lost answer per account), tell them apart by what the finished tasks billed
  (:func:`tell_apart`): a task is adopted when it is the one candidate whose ``video_ratio`` and, for
  emo-v1, ``video_duration`` fit the row, and fits no other uncertain row of the window;
* anything else stays uncertain, and the verdict says why: which tasks are candidates for the row, and
  what each billed.

The service keeps tasks 24 h (:data:`TASK_LIFETIME`): a row whose intent is older is not looked up.
Listings are kept a few minutes (:class:`ListingCache`), so rows of one run whose windows are covered by
one listing share it instead of each spending a call of the account's 20 per second. What a verdict
does to the row is :func:`reconcile_row`'s business.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from talking_heads.row.connections import RunConnections
from talking_heads.row.ledger import RowLedger
from talking_heads.row.media import redact
from talking_heads.row.payloads import Submission
from talking_heads.row.states import OPEN_SUBMISSION, RowRecord, RowStatus

if TYPE_CHECKING:  # the hook's import (HttpHook, aiohttp) is paid where a call is made, not at DAG parse
    from dashscope_provider.hooks.dashscope import DashScopeHook
    from dashscope_provider.models import DashScopeTask, ListedTask

#: How far this machine's clock may be from the service's: each window is widened by it on both sides.
CLOCK_SKEW = timedelta(seconds=60)
#: How long the service keeps a task (ids answer ``UNKNOWN`` after it, and the list no longer shows it).
TASK_LIFETIME = timedelta(hours=24)
#: Seconds to wait after a loss before listing, so the task shows up in the list; then between tries.
SETTLE_SECONDS = float(os.environ.get("TALKING_HEADS_RECONCILE_PAUSE_SECONDS", "2"))
#: Seconds a listing is reused by other rows whose windows it covers.
CACHE_SECONDS = 300.0

_TASK_IN_HISTORY = re.compile(r"\btask=(\S+)")


@dataclass(frozen=True)
class Window:
    """Creation times a row's lost task can have: ``[start, end]``, aware datetimes."""

    start: datetime
    end: datetime

    def holds(self, moment: datetime) -> bool:
        return self.start <= moment <= self.end

    def __str__(self) -> str:
        return f"{self.start.isoformat(timespec='seconds')} .. {self.end.isoformat(timespec='seconds')}"


@dataclass(frozen=True)
class Verdict:
    """What reconciliation found for one row: the task to adopt, or None and why not.

    :param task_id: the adopted task, or None.
    :param candidates: the unclaimed tasks of the row's window (the adopted one, or those a person must
        decide between); empty when none was found or the row could not be looked up.
    :param message: the reason, for the ledger and the outcome.
    :param again: nothing decided yet that waiting a little could change (no candidate yet, or only rows
        still in flight stood in the way): the submit step that saw the loss looks once more.
    """

    task_id: str | None
    candidates: tuple[str, ...]
    message: str
    again: bool = False


def lost_answer_message(detail: str | None = None) -> str:
    """Why a row whose submit answer was lost is not sent again (one wording for plan, submit, outcome)."""
    lead = f"{detail}: " if detail else "an earlier submission's answer was lost, so "
    return (
        f"{lead}a task may exist and be billed; it was not re-sent. Check the DashScope console, then rerun "
        "with resubmit_uncertain=true to submit it again on purpose"
    )


def settle_uncertain(state: RowRecord, now: datetime, code: str) -> dict[str, Any] | None:
    """What the plan does with a lost submission: None (generate: the submit step looks for its task) while
    it can be looked up, else its final outcome (no submit time recorded, or more than 24 h ago)."""
    if intent_time(state) is None:
        message = lost_answer_message()
    elif not too_old(state, now):
        return None
    else:
        message = uncertain_message(EXPIRED)
    candidates = " ".join(state.candidates or ()) or None
    return {"status": "failed", "code": code, "task_id": state.task_id, "message": message, "candidates": candidates}


def uncertain_message(found: str, owner: str | None = None) -> str:
    """What an uncertain row's record and outcome say after a look at the task list (``found``); ``owner``:
    who sent the submit whose answer was lost (the claim's owner, e.g. an overlapping run's task)."""
    sent_by = f" of {owner}" if owner else ""
    return (
        f"the submit answer{sent_by} was lost, so a task may exist and be billed; the account's task list: {found}. "
        "It was not re-sent: a later try or run looks again within 24 h of the submit; or check the DashScope "
        "console, then rerun with resubmit_uncertain=true to submit it again on purpose (a possible double charge)"
    )


def double_charge_note(state: RowRecord) -> str:
    """What the outcome of a row submitted again after a lost answer (``resubmit_uncertain``) says."""
    named = f" (candidates: {', '.join(state.candidates)})" if state.candidates else ""
    return (
        "submitted again on request (resubmit_uncertain=true) after a lost submit answer: a possible double "
        f"charge, the lost submission may have created and billed a task too{named}"
    )


#: Why a row whose intent is older than the service keeps tasks is not looked up.
EXPIRED = (
    f"the submit was more than {TASK_LIFETIME.total_seconds() / 3600:g} h ago and the service keeps tasks "
    f"{TASK_LIFETIME.total_seconds() / 3600:g} h, so its task can no longer be found"
)


def with_notes(state: RowRecord, outcome: dict[str, Any]) -> dict[str, Any]:
    """An outcome with what reconciliation did to the row: the ``candidates`` of a row still uncertain,
    ``reconciled`` (its task was adopted from the task list), the possible double charge of a row submitted
    again after a lost answer."""
    notes = [outcome.get("message")]
    if state.status in OPEN_SUBMISSION:
        outcome["candidates"] = " ".join(state.candidates or ()) or None
    if state.reconciled:
        outcome["reconciled"] = True
        notes.append(f"its submit answer was lost; task {state.task_id} was found in the account's task list")
    if state.resubmitted:
        notes.append(double_charge_note(state))
    outcome["message"] = "; ".join(n for n in notes if n) or None
    return outcome


def _parse(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def intent_time(state: RowRecord) -> datetime | None:
    """When the row's last submit intent was written: ``intent_at``, else its history's last ``->submitting``."""
    if (recorded := _parse(state.intent_at)) is not None:
        return recorded
    for entry in reversed(state.history):
        stamp, _, move = entry.partition(" ")
        if move.split(" ")[0].endswith("->submitting"):
            return _parse(stamp)
    return None


def window_of(state: RowRecord, now: datetime) -> Window | None:
    """The row's window: intent .. loss seen (still open for a row in flight), widened by the skew."""
    start = intent_time(state)
    if start is None:
        return None
    end = _parse(state.lost_at) or (now if state.status == RowStatus.SUBMITTING else _parse(state.updated_at)) or now
    return Window(start - CLOCK_SKEW, max(end, start) + CLOCK_SKEW)


def too_old(state: RowRecord, now: datetime) -> bool:
    """Whether the row's intent is older than the service keeps tasks (then it cannot be looked up)."""
    start = intent_time(state)
    return start is not None and now - start > TASK_LIFETIME - CLOCK_SKEW


def claimed_ids(states: Iterable[RowRecord]) -> set[str]:
    """Every task id the ledger holds or held: each record's ``task_id`` and the ids in its history."""
    claimed: set[str] = set()
    for state in states:
        if state.task_id:
            claimed.add(state.task_id)
        for entry in state.history:
            claimed.update(_TASK_IN_HISTORY.findall(entry))
    return claimed


def all_states(ledger: RowLedger) -> list[RowRecord]:
    """Every row record under ``state/`` (one listing, then one read each)."""
    folder = ledger.layout.root / "state"
    if not folder.exists():
        return []
    ids = [p.name.removesuffix(".json") for p in folder.iterdir() if p.name.endswith(".json")]
    return [state for row_id in ids if (state := ledger.get(row_id)) is not None]


def decide(
    state: RowRecord,
    window: Window,
    tasks: Iterable[ListedTask],
    claimed: set[str],
    rivals: dict[str, tuple[RowStatus, Window | None]],
) -> Verdict:
    """The decision for one uncertain row, from the listing of its account and model.

    :param tasks: the account's tasks of the row's model, created around its window.
    :param claimed: task ids the ledger holds (:func:`claimed_ids`).
    :param rivals: the other rows that could own a task of this account and model: row id -> (its state,
        its window, or None when unknown: it could own any task).
    """
    candidates = [t for t in tasks if window.holds(t.created) and t.task_id not in claimed]
    ids = tuple(t.task_id for t in candidates)
    where = f"created in its window {window}"
    if not candidates:
        return Verdict(None, (), f"no unclaimed task {where} is in the account's task list", again=True)
    if len(candidates) > 1:
        # A row still sending (no task id recorded yet) may own some of them: looking again could tell.
        in_flight = any(
            status == RowStatus.SUBMITTING and (w is None or any(w.holds(t.created) for t in candidates))
            for status, w in rivals.values()
        )
        return Verdict(
            None,
            ids,
            f"{len(ids)} unclaimed tasks {where}: {', '.join(ids)}; any of them may be this row's",
            again=in_flight,
        )
    (task,) = candidates
    others = sorted(row for row, (_, w) in rivals.items() if w is None or w.holds(task.created))
    if others:
        in_flight = all(rivals[row][0] == RowStatus.SUBMITTING for row in others)
        return Verdict(
            None,
            ids,
            f"1 unclaimed task {where}: {task.task_id}, but it also fits uncertain row(s) {', '.join(others)}",
            again=in_flight,
        )
    return Verdict(task.task_id, ids, f"task {task.task_id}, the one unclaimed task {where}, adopted")


#: How far a task's billed seconds may be from a row's voice clip and still fit it (emo-v1 bills the clip's
#: length to 0.01 s; the slack covers a clip measured from a re-encoded copy).
DURATION_TOLERANCE = 0.25


def fits(record: RowRecord, task: DashScopeTask) -> bool | None:
    """Whether a finished task's usage fits the row's expected ratio and (emo-v1) seconds; None: can't tell
    (the task has not succeeded, or nothing is known of what the row should bill)."""
    if not task.succeeded or task.video_duration is None:
        return None
    told = False
    if record.expected_ratio and task.video_ratio:
        if task.video_ratio != record.expected_ratio:
            return False
        told = True
    if record.model == "emo-v1" and record.expected_seconds is not None:
        if abs(task.video_duration - record.expected_seconds) > DURATION_TOLERANCE:
            return False
        told = True
    return True if told else None


def tell_apart(
    state: RowRecord,
    others: list[RowRecord],
    verdict: Verdict,
    tasks: dict[str, DashScopeTask],
    created: dict[str, datetime],
    now: datetime,
) -> Verdict:
    """An ambiguous :class:`Verdict` settled by usage: the one candidate that fits the row while every other
    candidate surely does not (one still running could be the row's), and that fits no other uncertain row
    whose window holds it; else the verdict again, each candidate's usage named."""
    fit = {t: fits(state, tasks[t]) for t in verdict.candidates}
    mine = [t for t, fitted in fit.items() if fitted is True]
    if len(mine) == 1 and all(f is False for t, f in fit.items() if t != mine[0]):
        (task_id,) = mine
        rivals = [other.row_id for other in others if _could_own(other, tasks[task_id], created.get(task_id), now)]
        if not rivals:
            message = (
                f"task {task_id} ({_usage(tasks[task_id])}), the one candidate whose billed usage fits the row, "
                f"adopted (candidates: {', '.join(verdict.candidates)})"
            )
            return Verdict(task_id, verdict.candidates, message)
    named = "; ".join(f"{t} ({_usage(tasks[t])}: {_fit_word(fit[t])})" for t in verdict.candidates)
    return Verdict(None, verdict.candidates, f"{verdict.message}; by usage, for this row: {named}", verdict.again)


def _could_own(other: RowRecord, task: DashScopeTask, created: datetime | None, now: datetime) -> bool:
    window = window_of(other, now)
    in_window = window is None or created is None or window.holds(created)
    return in_window and fits(other, task) is not False


def _usage(task: DashScopeTask) -> str:
    if not task.succeeded or task.video_duration is None:
        return str(task.status)
    return f"{task.video_duration:g} s at {task.video_ratio}"


def _fit_word(fit: bool | None) -> str:
    return {True: "fits", False: "does not fit", None: "cannot tell"}[fit]


@dataclass
class _Listing:
    fetched: float
    start: datetime
    end: datetime
    tasks: list[ListedTask]


class ListingCache:
    """Listings of (base URL, account, model) kept :data:`CACHE_SECONDS`, reused for a window they cover
    when they were made after the row's loss was seen (so its task had time to show up)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._listings: dict[tuple[str, ...], list[_Listing]] = {}

    def tasks(self, hook: DashScopeHook, account: str, model: str, window: Window, seen: datetime) -> list[ListedTask]:
        key = (hook.url_from_endpoint(""), account, model)
        wall = time.time()
        with self._lock:
            kept = [x for x in self._listings.get(key, []) if wall - x.fetched < CACHE_SECONDS]
            self._listings[key] = kept
            for listing in kept:
                if listing.start <= window.start and window.end <= listing.end and listing.fetched >= seen.timestamp():
                    return listing.tasks
        # Listed up to now (or the window's end), so later rows of the run can share it.
        end = min(max(window.end, datetime.now(UTC)), window.start + TASK_LIFETIME)
        fetched = time.time()
        tasks = hook.list_tasks(model, window.start, end)
        with self._lock:
            self._listings.setdefault(key, []).append(_Listing(fetched, window.start, end, tasks))
        return tasks


CACHE = ListingCache()


def reconcile(
    state: RowRecord,
    *,
    ledger: RowLedger,
    connections: RunConnections,
    now: datetime | None = None,
) -> Verdict:
    """Look for the task of one ``uncertain`` row in its account's task list; the :class:`Verdict`."""
    now = now or datetime.now(UTC)
    if too_old(state, now):
        return Verdict(None, tuple(state.candidates or ()), EXPIRED)
    window = window_of(state, now)
    if window is None:
        return Verdict(None, (), "no submit time is recorded for it, so its task cannot be looked up")
    accounts: dict[str, str | None] = {}

    def account_of(conn_id: str | None) -> str | None:
        conn_id = conn_id or connections.default_conn_id
        if conn_id not in accounts:
            try:
                accounts[conn_id] = connections.hook(conn_id).account
            except Exception:
                accounts[conn_id] = None  # unknown: counted as the same account (it could own the task)
        return accounts[conn_id]

    hook = connections.hook(state.conn_id)
    account = hook.account
    states = all_states(ledger)
    rivals = {
        other.row_id: (other.status, window_of(other, now))
        for other in states
        if other.row_id != state.row_id
        and other.status in OPEN_SUBMISSION
        and other.model in (state.model, "")
        and not too_old(other, now)
        and account_of(other.conn_id) in (account, None)
    }
    seen = _parse(state.lost_at) or now
    tasks = CACHE.tasks(hook, account, state.model, window, seen)
    verdict = decide(state, window, tasks, claimed_ids(states), rivals)
    if verdict.task_id is not None or not verdict.candidates:
        return verdict
    others = [other for other in states if other.row_id in rivals and other.status == RowStatus.UNCERTAIN]
    created = {t.task_id: t.created for t in tasks}
    finished = {t: hook.get_task(t) for t in verdict.candidates}  # their usage: one query each, rare
    return tell_apart(state, others, verdict, finished, created, now)


def look(
    ledger: RowLedger,
    row_id: str,
    connections: RunConnections,
    *,
    pause: bool = False,
    tries: int = 1,
) -> tuple[RowRecord | None, Verdict | None]:
    """The row's record and the :class:`Verdict` on it; no verdict when it is (no longer) ``uncertain``.

    ``pause``: first wait :data:`SETTLE_SECONDS` for a fresh task to show up; ``tries``: looks in all, while
    waiting could change the answer (:attr:`Verdict.again`). A list that cannot be read is a verdict too.
    """
    state, verdict = None, None
    for attempt in range(tries):
        if pause or attempt:
            time.sleep(SETTLE_SECONDS)
        state = ledger.get(row_id)
        if state is None or state.status != RowStatus.UNCERTAIN:
            return state, None
        try:
            verdict = reconcile(state, ledger=ledger, connections=connections)
        except Exception as error:  # the row stays uncertain; a later try or run looks again
            verdict = Verdict(None, (), f"not read ({type(error).__name__}: {redact(str(error))})", again=True)
        if verdict.task_id is not None or not verdict.again:
            break
    return state, verdict


def reconcile_row(
    ledger: RowLedger, row_id: str, connections: RunConnections, log: logging.Logger, pause: bool = False
) -> Submission | None:
    """Look for an ``uncertain`` row's task in the task list (:func:`look`): adopted, the row is
    ``submitted`` with it and returned, else it stays ``uncertain`` naming the candidates. ``pause``: the
    loss was just seen: wait for the task to be listed, look up to 3 times."""
    record, verdict = look(ledger, row_id, connections, pause=pause, tries=3 if pause else 1)
    if record is None or verdict is None:  # no record, or no longer uncertain: another try or run found its task?
        return connections.submission(record)
    if verdict.task_id is None:
        return _keep_uncertain(ledger, record, verdict, connections, log)
    adopted = dict(task_id=verdict.task_id, candidates=verdict.candidates, reconciled=True, code=None, message=None)
    record = ledger.update(row_id, lambda cur: cur.advance(RowStatus.SUBMITTED, **adopted) if _uncertain(cur) else None)
    log.info("Row %s: its lost submission is task %s: %s", row_id, verdict.task_id, verdict.message)
    return connections.submission(record)


def _keep_uncertain(
    ledger: RowLedger, record: RowRecord, verdict: Verdict, connections: RunConnections, log: logging.Logger
) -> Submission | None:
    """Record what the look found (the candidates, and why none was adopted); another try or run may have
    settled the row meanwhile: then its task."""
    claim = f"{record.owner} (claimed at {record.intent_at})" if record.owner else None
    looked = dict(candidates=verdict.candidates, message=uncertain_message(verdict.message, claim))
    current = ledger.update(
        record.row_id, lambda cur: cur.advance(RowStatus.UNCERTAIN, **looked) if _uncertain(cur) else None
    )
    if current is not None and current.status == RowStatus.UNCERTAIN:
        log.warning("Row %s stays uncertain: %s", record.row_id, verdict.message)
        return None
    return connections.submission(current)


def _uncertain(record: RowRecord | None) -> bool:
    return record is not None and record.status == RowStatus.UNCERTAIN
