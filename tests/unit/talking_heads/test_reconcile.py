"""Reconciliation of lost submit answers against the emulator's task list, over HTTP (nothing mocked).

A row whose submit answer is lost is looked for in the account's task list: adopted when exactly one
unclaimed task fits it and no other row; left ``uncertain`` naming the candidates otherwise (two rows whose
windows overlap, or another program's task in its window); not looked up after 24 h.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from dashscope_provider.hooks.dashscope import DashScopeHook
from talking_heads import reconcile
from talking_heads.ledger import RowLedger
from talking_heads.lifecycle import RowState, outcome_of, plan_row, record_task_end, submit_row
from talking_heads.media import MediaSigner
from talking_heads.payloads import Submission, WorkItem
from talking_heads.validation import RowRequest

from tests.harness.airflow_compat import AirflowFailException
from tests.unit.conftest import CONN_ID, KEY, SAME_ACCOUNT_KEY, submit_as

LOG = logging.getLogger(__name__)
LIST_PATH = "/api/v1/tasks/"

pytestmark = pytest.mark.usefixtures("no_key_in_logs")


@pytest.fixture(autouse=True)
def quick_reconciliation(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reconcile, "SETTLE_SECONDS", 0.2)
    monkeypatch.setitem(DashScopeHook.__init__.__kwdefaults__, "retry_initial", 0.05)
    # Rows submitted in the same instant (the service's own limit still applies: emo-v1 5/s per account).
    monkeypatch.setitem(DashScopeHook.__init__.__kwdefaults__, "submit_qps", {"emo-v1": 1000.0, "emoji-v1": 1000.0})


def _submit(
    ledger: RowLedger, row_id: str, emoji_input: dict[str, Any], resubmit: bool = False, model: str = "emoji-v1"
) -> Submission:
    request = RowRequest(row_id=row_id, model=model, **emoji_input)
    return submit_row(
        ledger,
        WorkItem(request, CONN_ID),
        hook_for=lambda conn_id: DashScopeHook(dashscope_conn_id=conn_id),
        default_conn_id=CONN_ID,
        run_id="run-1",
        resubmit_uncertain=resubmit,
        signer=MediaSigner(ledger.layout),
        log=LOG,
    )


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
    assert (state.state, state.task_id, state.reconciled, state.candidates) == (
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


def test_two_uncertain_rows_with_overlapping_windows_and_two_unclaimed_tasks_both_stay_uncertain(
    # emo-v1: two submits of one account within one second (emoji-v1's limit is 1/s)
    account_emulator: Any,
    emo_input: dict[str, Any],
    tmp_path: Path,
) -> None:
    ledger = RowLedger(str(tmp_path))
    account_emulator.force_next("drop_submit")
    account_emulator.force_next("drop_submit")
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
    tasks = sorted(t["task_id"] for t in account_emulator.tasks())
    assert len(tasks) == 2  # both submissions created a task, neither answer came back
    assert set(errors) == {"a", "b"} and all(isinstance(e, AirflowFailException) for e in errors.values())
    for row_id in ("a", "b"):
        state = ledger.get(row_id)
        assert state is not None and state.state == "uncertain" and state.task_id is None
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
    assert state is not None and state.state == "uncertain"
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
    assert state is not None and state.state == "submitted" and state.resubmitted
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
        ledger.put(RowState(row_id, "uncertain", code="SubmissionUncertain", **record))
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
    state = ledger.put(RowState("old", "uncertain", code="SubmissionUncertain", **record))
    settled = plan_row(state, resubmit_uncertain=False)
    assert settled is not None and settled["code"] == "SubmissionUncertain"
    assert "more than 24 h ago" in settled["message"]
    # Had the plan sent it on anyway, the submit step would not list either.
    with pytest.raises(AirflowFailException, match="more than 24 h ago"):
        _submit(ledger, "old", emoji_input)
    assert _lists(account_emulator) == [] and account_emulator.tasks() == []
    # A record without any submit time can't be looked up: settled by the plan as before.
    bare = RowState("bare", "uncertain", model="emoji-v1")
    assert plan_row(bare, resubmit_uncertain=False)["code"] == "SubmissionUncertain"  # type: ignore[index]


def test_the_cost_report_counts_reconciled_rows_and_rows_still_uncertain_with_their_candidates(
    tmp_path: Path,
) -> None:
    import pandas as pd
    from talking_heads.report import build_report, write_report

    common = {"model": "emo-v1", "video_ratio": "1:1", "dashscope_conn_id": CONN_ID}
    run_1 = [
        {"row_id": "a", "status": "failed", "code": "SubmissionUncertain", "candidates": "t-a t-x", **common},
        {"row_id": "b", "status": "failed", "code": "SubmissionUncertain", "candidates": "t-b t-y", **common},
        {"row_id": "c", "status": "succeeded", "task_id": "t-c", "video_duration": 2.0, **common},
    ]
    run_2 = [  # a later run found a's task; b is still ambiguous; c is skipped
        {"row_id": "a", "status": "succeeded", "task_id": "t-a", "video_duration": 3.0, "reconciled": True, **common},
        {"row_id": "b", "status": "failed", "code": "SubmissionUncertain", "candidates": "t-b t-y", **common},
        {"row_id": "c", "status": "skipped", "task_id": "t-c", "video_duration": 2.0, **common},
    ]
    for run, lines in (("manual__2026-11-01", run_1), ("manual__2026-11-02", run_2)):
        (tmp_path / "outcomes").mkdir(exist_ok=True)
        pd.DataFrame([{**line, "run_id": run} for line in lines]).to_csv(tmp_path / "outcomes" / f"{run}.csv")
    written = write_report(str(tmp_path))
    assert (written["reconciled"], written["uncertain"]) == (1, 1)
    uncertain = pd.read_csv(tmp_path / "reports" / "uncertain.csv")
    assert uncertain[["row_id", "candidates"]].to_dict("records") == [{"row_id": "b", "candidates": "t-b t-y"}]
    page = (tmp_path / "reports" / "cost_report.html").read_text()
    assert "Lost submit answers" in page and "t-b t-y" in page
    assert build_report(pd.DataFrame()).uncertain.empty


def test_a_row_whose_task_was_found_meanwhile_is_returned_not_looked_up_again(tmp_path: Path) -> None:
    from talking_heads.lifecycle import reconcile_row

    def no_hook(conn_id: str) -> DashScopeHook:
        raise AssertionError("nothing is listed for a row that is no longer uncertain")

    ledger = RowLedger(str(tmp_path))
    # Another try or run adopted (or got the answer for) the row between this step's loss and its look.
    ledger.put(RowState("found", "submitted", model="emo-v1", conn_id="other_conn", task_id="t-1", reconciled=True))
    assert reconcile_row(ledger, "found", no_hook, CONN_ID, LOG) == Submission("found", "t-1", "other_conn")
    assert reconcile_row(ledger, "never", no_hook, CONN_ID, LOG) is None
