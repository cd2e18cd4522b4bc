"""Reconciliation of lost submit answers against the emulator's task list, over HTTP (nothing mocked).

A row whose submit answer is lost is looked for in the account's task list: adopted when exactly one
unclaimed task fits it and no other row; left ``uncertain`` naming the candidates otherwise (two rows whose
windows overlap, or another program's task in its window); not looked up after 24 h.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from dashscope_provider.compat import AirflowFailException
from dashscope_provider.hooks.dashscope import DashScopeHook
from talking_heads.row import reconcile
from talking_heads.row.decide import plan_row
from talking_heads.row.ledger import RowLedger
from talking_heads.row.outcome import outcome_of
from talking_heads.row.payloads import Submission
from talking_heads.row.states import RowRecord
from talking_heads.row.wait import record_task_end

from tests.unit.conftest import CONN_ID, KEY, SAME_ACCOUNT_KEY, submit_as
from tests.unit.talking_heads.row.helpers import submit as _submit

LOG = logging.getLogger(__name__)
LIST_PATH = "/api/v1/tasks/"

pytestmark = pytest.mark.usefixtures("no_key_in_logs")


@pytest.fixture(autouse=True)
def quick_reconciliation(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reconcile, "SETTLE_SECONDS", 0.2)
    monkeypatch.setitem(DashScopeHook.__init__.__kwdefaults__, "retry_initial", 0.05)
    # Rows submitted in the same instant (the service's own limit still applies: emo-v1 5/s per account).
    monkeypatch.setitem(DashScopeHook.__init__.__kwdefaults__, "submit_qps", {"emo-v1": 1000.0, "emoji-v1": 1000.0})


def _lists(emulator: Any) -> list[dict[str, Any]]:
    return [r for r in emulator.request_log() if r["path"] == LIST_PATH]


def _other_program_submits(emulator: Any, emoji_input: dict[str, Any]) -> str:
    return submit_as(emulator, SAME_ACCOUNT_KEY, {"model": "emoji-v1", "input": emoji_input})


def test_a_lost_answer_is_adopted_then_waited_on_and_billed_once(
    account_emulator: Any, emoji_input: dict[str, Any], tmp_path: Path
) -> None:
    ledger = RowLedger(str(tmp_path))
    account_emulator.force_next("drop_submit")
    submission = _submit(ledger, "lost", emoji_input)  # the loss is seen, and the task found, in this step
    [task] = account_emulator.tasks()
    assert submission == Submission("lost", task["task_id"], CONN_ID)
    state = ledger.get("lost")
    assert state is not None
    assert (state.status, state.task_id, state.reconciled, state.candidates) == (
        "submitted",
        task["task_id"],
        True,
        (task["task_id"],),
    )
    assert state.intent_at and state.lost_at and state.intent_at <= state.lost_at
    assert len(_lists(account_emulator)) == 1
    # Then it is a row like any other: waited on, billed once, its outcome says it was reconciled.
    hook = DashScopeHook(dashscope_conn_id=CONN_ID)
    deadline = time.monotonic() + 30
    while not (done := hook.get_task(task["task_id"])).is_terminal and time.monotonic() < deadline:
        time.sleep(0.05)
    record_task_end(ledger, submission, done)
    outcome = outcome_of(ledger.get("lost"), "run-1")
    assert outcome["reconciled"] is True and task["task_id"] in outcome["message"]
    assert [line["task_id"] for line in account_emulator.billing()] == [task["task_id"]]
    # A later try of the submit step reuses the task: nothing sent, nothing listed.
    assert _submit(ledger, "lost", emoji_input) == submission
    assert len(account_emulator.tasks()) == 1 and len(_lists(account_emulator)) == 1


def _two_lost_submits_at_once(ledger: RowLedger, emo_input: dict[str, Any], emulator: Any) -> dict[str, Any]:
    """Rows a and b submitted at the same moment (emo-v1: two submits of one account within one second;
    emoji-v1's limit is 1/s), both answers dropped; what each submit raised."""
    emulator.force_next("drop_submit")
    emulator.force_next("drop_submit")
    start = threading.Barrier(2)
    errors: dict[str, BaseException] = {}

    def submit(row_id: str) -> None:
        start.wait()
        try:
            _submit(ledger, row_id, emo_input, model="emo-v1")
        except BaseException as error:
            errors[row_id] = error

    threads = [threading.Thread(target=submit, args=(row_id,)) for row_id in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return errors


def test_two_submits_of_one_account_at_once_take_turns_so_both_lost_answers_are_found(
    account_emulator: Any, emo_input: dict[str, Any], tmp_path: Path
) -> None:
    """The account's submit lease: one answer outstanding at a time, so each lost one is the single
    unclaimed task of its window, adopted; nothing was sent twice."""
    ledger = RowLedger(str(tmp_path))
    errors = _two_lost_submits_at_once(ledger, emo_input, account_emulator)
    tasks = sorted(t["task_id"] for t in account_emulator.tasks())
    assert len(tasks) == 2 and errors == {}
    records = [ledger.get(row_id) for row_id in ("a", "b")]
    assert all(r is not None and r.status == "submitted" and r.reconciled for r in records), records
    assert sorted(r.task_id for r in records if r is not None) == tasks


def test_two_uncertain_rows_with_overlapping_windows_and_two_unclaimed_tasks_both_stay_uncertain(
    account_emulator: Any, emo_input: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the lease (rows left by an older version, or a store without exclusive create), two lost
    answers in flight together cannot be told apart: neither row adopts a task, both name the candidates."""
    from talking_heads.row import submit as submit_step

    monkeypatch.setattr(submit_step, "account_lease", lambda context, hook: contextlib.nullcontext())
    ledger = RowLedger(str(tmp_path))
    errors = _two_lost_submits_at_once(ledger, emo_input, account_emulator)
    tasks = sorted(t["task_id"] for t in account_emulator.tasks())
    assert len(tasks) == 2  # both submissions created a task, neither answer came back
    assert set(errors) == {"a", "b"} and all(isinstance(e, AirflowFailException) for e in errors.values())
    for row_id in ("a", "b"):
        state = ledger.get(row_id)
        assert state is not None and state.status == "uncertain" and state.task_id is None
        assert sorted(state.candidates or ()) == tasks
        outcome = outcome_of(state, "run-1")
        assert outcome["code"] == "SubmissionUncertain"
        assert "2 unclaimed tasks" in outcome["message"] and all(t in outcome["message"] for t in tasks)
        assert sorted(outcome["candidates"].split()) == tasks
        assert all(t in str(errors[row_id]) for t in tasks)
    # A later run meets them again (within 24 h): the plan sends them to the submit step, which looks
    # again, and they still stay uncertain; nothing is sent.
    for row_id in ("a", "b"):
        assert plan_row(ledger.get(row_id), resubmit_uncertain=False) is None
        with pytest.raises(AirflowFailException, match="2 unclaimed tasks"):
            _submit(ledger, row_id, emo_input, model="emo-v1")
    assert len(account_emulator.tasks()) == 2


def test_another_programs_task_in_the_window_is_never_adopted(
    account_emulator: Any, emoji_input: dict[str, Any], tmp_path: Path
) -> None:
    ledger = RowLedger(str(tmp_path))
    foreign = _other_program_submits(account_emulator, emoji_input)  # same account, just before the row
    account_emulator.force_next("drop_submit")
    with pytest.raises(AirflowFailException) as info:
        _submit(ledger, "row", emoji_input)
    own = next(t["task_id"] for t in account_emulator.tasks() if t["task_id"] != foreign)
    state = ledger.get("row")
    assert state is not None and state.status == "uncertain"
    assert sorted(state.candidates or ()) == sorted([own, foreign])
    assert foreign in str(info.value) and own in str(info.value)
    message = outcome_of(state, "run-1")["message"]
    assert "2 unclaimed tasks" in message and foreign in message and own in message
    assert KEY not in message and SAME_ACCOUNT_KEY not in message

    # A later try looks again and still adopts neither.
    with pytest.raises(AirflowFailException, match="2 unclaimed tasks"):
        _submit(ledger, "row", emoji_input)
    assert ledger.get("row").task_id is None  # type: ignore[union-attr]

    # resubmit_uncertain stays possible: a new task, and the outcome says it may be paid twice.
    submission = _submit(ledger, "row", emoji_input, resubmit=True)
    assert submission.task_id not in (own, foreign)
    state = ledger.get("row")
    assert state is not None and state.status == "submitted" and state.resubmitted
    message = outcome_of(state, "run-1")["message"]
    assert "possible double charge" in message and own in message and foreign in message
    assert len(account_emulator.tasks()) == 3


def test_rows_of_one_run_share_one_listing(
    account_emulator: Any, emoji_input: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reconcile, "CLOCK_SKEW", timedelta(seconds=1))
    monkeypatch.setattr(reconcile, "CACHE", reconcile.ListingCache())
    ledger = RowLedger(str(tmp_path))
    # Two rows whose answers were lost 3 s apart (their windows don't overlap), their tasks made by then.
    for row_id in ("first", "second"):
        intent = datetime.now(UTC).isoformat()
        _other_program_submits(account_emulator, emoji_input)
        lost = datetime.now(UTC).isoformat()
        record = dict(model="emoji-v1", conn_id=CONN_ID, intent_at=intent, lost_at=lost)
        ledger.put(RowRecord(row_id, "uncertain", code="SubmissionUncertain", **record))
        time.sleep(3)
    tasks = [t["task_id"] for t in account_emulator.tasks()]
    assert [_submit(ledger, r, emoji_input).task_id for r in ("first", "second")] == tasks
    assert len(_lists(account_emulator)) == 1  # the second row used the first row's listing


def test_after_24_hours_a_lost_submission_is_no_longer_looked_up(
    account_emulator: Any, emoji_input: dict[str, Any], tmp_path: Path
) -> None:
    ledger = RowLedger(str(tmp_path))
    long_ago = datetime.now(UTC) - timedelta(hours=25)
    record = dict(model="emoji-v1", conn_id=CONN_ID, intent_at=long_ago.isoformat(), lost_at=long_ago.isoformat())
    state = ledger.put(RowRecord("old", "uncertain", code="SubmissionUncertain", **record))
    settled = plan_row(state, resubmit_uncertain=False)
    assert settled is not None and settled["code"] == "SubmissionUncertain"
    assert "more than 24 h ago" in settled["message"]
    # Had the plan sent it on anyway, the submit step would not list either.
    with pytest.raises(AirflowFailException, match="more than 24 h ago"):
        _submit(ledger, "old", emoji_input)
    assert _lists(account_emulator) == [] and account_emulator.tasks() == []
    # A record without any submit time can't be looked up: settled by the plan as before.
    bare = RowRecord("bare", "uncertain", model="emoji-v1")
    assert plan_row(bare, resubmit_uncertain=False)["code"] == "SubmissionUncertain"  # type: ignore[index]


def test_a_row_whose_task_was_found_meanwhile_is_returned_not_looked_up_again(tmp_path: Path) -> None:
    from talking_heads.row.connections import RunConnections
    from talking_heads.row.reconcile import reconcile_row

    def no_hook(conn_id: str) -> DashScopeHook:
        raise AssertionError("nothing is listed for a row that is no longer uncertain")

    ledger = RowLedger(str(tmp_path))
    # Another try or run adopted (or got the answer for) the row between this step's loss and its look.
    ledger.put(RowRecord("found", "submitted", model="emo-v1", conn_id="other_conn", task_id="t-1", reconciled=True))
    assert reconcile_row(ledger, "found", RunConnections(no_hook, CONN_ID), LOG) == Submission(
        "found", "t-1", "other_conn"
    )
    assert reconcile_row(ledger, "never", RunConnections(no_hook, CONN_ID), LOG) is None


def _two_uncertain_emo_rows(now: datetime) -> tuple[RowRecord, RowRecord]:
    """Rows a (a 4.2 s clip) and b (a 6.5 s clip), both 1:1, both lost in one window."""
    window = dict(model="emo-v1", intent_at=(now - timedelta(seconds=5)).isoformat(), lost_at=now.isoformat())
    a = RowRecord("a", "uncertain", expected_ratio="1:1", expected_seconds=4.2, **window)  # type: ignore[arg-type]
    b = RowRecord("b", "uncertain", expected_ratio="1:1", expected_seconds=6.5, **window)  # type: ignore[arg-type]
    return a, b


def _succeeded(task_id: str, seconds: float, ratio: str = "1:1") -> Any:
    from dashscope_provider.models import DashScopeTask

    return DashScopeTask(task_id, "SUCCEEDED", video_url="u", video_duration=seconds, video_ratio=ratio)


def test_several_uncertain_rows_are_told_apart_by_what_their_tasks_billed() -> None:
    """Two lost answers in one window (no lease): each task goes to the row whose clip it billed."""
    from dashscope_provider.models import DashScopeTask

    now = datetime.now(UTC)
    a, b = _two_uncertain_emo_rows(now)
    ambiguous = reconcile.Verdict(None, ("t-a", "t-b"), "2 unclaimed tasks")
    tasks = {"t-a": _succeeded("t-a", 4.21), "t-b": _succeeded("t-b", 6.5)}
    created = {"t-a": now - timedelta(seconds=3), "t-b": now - timedelta(seconds=2)}
    for row, other, expected in ((a, b, "t-a"), (b, a, "t-b")):
        verdict = reconcile.tell_apart(row, [other], ambiguous, tasks, created, now)
        assert verdict.task_id == expected and "fits the row" in verdict.message
    # The same seconds for both rows: no task fits one row only, both stay uncertain naming what each billed.
    same = {"t-a": _succeeded("t-a", 4.2), "t-b": _succeeded("t-b", 4.2)}
    b_same = RowRecord("b", "uncertain", model="emo-v1", expected_ratio="1:1", expected_seconds=4.2)
    verdict = reconcile.tell_apart(a, [b_same], ambiguous, same, created, now)
    assert verdict.task_id is None and "t-a (4.2 s at 1:1: fits)" in verdict.message
    # One candidate fits, but another is still running: it could be the row's, so nothing is adopted.
    running = {"t-a": _succeeded("t-a", 4.2), "t-b": DashScopeTask("t-b", "RUNNING")}
    verdict = reconcile.tell_apart(a, [], ambiguous, running, created, now)
    assert verdict.task_id is None and "t-b (RUNNING: cannot tell)" in verdict.message
    # The ratio tells them apart too; and a task of the other ratio never fits.
    by_ratio = {"t-a": _succeeded("t-a", 4.2, "3:4"), "t-b": _succeeded("t-b", 4.2)}
    assert reconcile.tell_apart(a, [], ambiguous, by_ratio, created, now).task_id == "t-b"
    # A row that recorded nothing of what it should bill (an older version's) can't be told apart.
    bare = RowRecord("a", "uncertain", model="emo-v1")
    assert reconcile.tell_apart(bare, [], ambiguous, tasks, created, now).task_id is None


def test_a_lost_row_looks_for_its_task_only_once_no_other_submit_of_its_account_is_outstanding(
    account_emulator: Any, emo_input: dict[str, Any], tmp_path: Path
) -> None:
    """The retry of a lost row takes the account's lease before it looks: another row's submit whose task
    exists but whose id is not recorded yet is not taken for a rival candidate; the lost row adopts its own."""
    ledger = RowLedger(str(tmp_path))
    intent = datetime.now(UTC).isoformat()
    own = submit_as(account_emulator, KEY, {"model": "emo-v1", "input": emo_input})  # the lost row's task
    record = dict(model="emo-v1", conn_id=CONN_ID, intent_at=intent, lost_at=datetime.now(UTC).isoformat())
    ledger.put(RowRecord("lost", "uncertain", code="SubmissionUncertain", **record))  # type: ignore[arg-type]
    account_emulator.set_submit_answer_delay(3.0)  # the busy row's task exists 3 s before its id comes back
    busy: dict[str, Any] = {}
    sender = threading.Thread(target=lambda: busy.update(s=_submit(ledger, "busy", emo_input, model="emo-v1")))
    sender.start()
    deadline = time.monotonic() + 30
    while len(account_emulator.tasks()) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(account_emulator.tasks()) == 2  # the busy row's task exists, its answer is on the way
    account_emulator.set_submit_answer_delay(0)
    found = _submit(ledger, "lost", emo_input, model="emo-v1")
    sender.join(30)
    assert found == Submission("lost", own, CONN_ID)
    assert busy["s"].task_id != own and len(account_emulator.tasks()) == 2  # nothing sent twice
    lost = ledger.get("lost")
    assert lost is not None and lost.status == "submitted" and lost.reconciled
