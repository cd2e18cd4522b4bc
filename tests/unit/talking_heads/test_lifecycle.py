"""The row life cycle: allowed moves, what the plan does per state, and the outcome each state becomes."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from dashscope_provider.exceptions import DashScopeResultExpired
from talking_heads.ledger import RowLedger
from talking_heads.lifecycle import (
    TRANSITIONS,
    OutcomeCode,
    RowState,
    RowStatus,
    RowTransitionError,
    outcome_of,
    plan_row,
    store_row,
)
from talking_heads.payloads import WaitResult

from tests.harness.airflow_compat import AirflowFailException

LOG = logging.getLogger(__name__)


def test_every_state_has_its_moves_and_a_succeeded_row_never_moves() -> None:
    assert set(TRANSITIONS) == set(RowStatus)
    assert TRANSITIONS[RowStatus.SUCCEEDED] == frozenset()
    done = RowState("r", RowStatus.SUCCEEDED, task_id="t")
    with pytest.raises(RowTransitionError, match="succeeded -> submitting"):
        done.advance(RowStatus.SUBMITTING)
    # A submitted task is never sent again from "submitted" without first recording the intent.
    with pytest.raises(RowTransitionError):
        RowState("r", RowStatus.SUBMITTED, task_id="t").advance(RowStatus.UNCERTAIN)


def test_advance_keeps_history_and_round_trips_through_json() -> None:
    state = RowState("r", "submitting").advance(RowStatus.SUBMITTED, task_id="t1")
    state = state.advance(RowStatus.GENERATED, billed=True, video_duration=3.5)
    assert [h.split(" ", 1)[1] for h in state.history] == ["submitting->submitted", "submitted->generated task=t1"]
    again = RowState.from_dict(state.to_dict() | {"unknown_field": 1})
    assert again == state and isinstance(again.state, RowStatus)


@pytest.mark.parametrize(
    ("state", "resubmit", "expected"),
    [
        (None, False, None),
        (RowState("r", "succeeded", task_id="t", run_id="run0"), True, ("skipped", None)),
        (RowState("r", "submitting"), False, ("failed", OutcomeCode.SUBMISSION_UNCERTAIN)),
        (RowState("r", "uncertain"), False, ("failed", OutcomeCode.SUBMISSION_UNCERTAIN)),
        (RowState("r", "uncertain"), True, None),
        (RowState("r", "failed", code="UNKNOWN", message="expired"), False, ("failed", OutcomeCode.UNKNOWN)),
        (RowState("r", "failed", code="UNKNOWN", message="expired"), True, None),
        (RowState("r", "failed", code="InvalidFile.FacePose", billed=True), True, ("failed", "InvalidFile.FacePose")),
        (RowState("r", "failed", code="InvalidParameter", billed=False), False, None),
        (RowState("r", "submitted", task_id="t"), False, None),  # generate: the submit step reuses the task
        (RowState("r", "generated", task_id="t"), False, None),
    ],
)
def test_plan_per_state(state: RowState | None, resubmit: bool, expected: tuple[str, Any] | None) -> None:
    outcome = plan_row(state, resubmit_uncertain=resubmit)
    if expected is None:
        assert outcome is None
    else:
        assert (outcome["status"], outcome.get("code")) == expected  # type: ignore[index]


@pytest.mark.parametrize(
    ("state", "status", "code", "in_message"),
    [
        (None, "failed", "Incomplete", "never submitted"),
        (RowState("r", "succeeded", run_id="run1", video_uri="u"), "succeeded", None, None),
        (RowState("r", "succeeded", run_id="run0", video_uri="u"), "skipped", None, "the overlapping run run0"),
        (RowState("r", "failed", code="InvalidFile.Content", message="no person"), "failed", "InvalidFile.Content", ""),
        (RowState("r", "uncertain"), "failed", "SubmissionUncertain", "resubmit_uncertain=true"),
        (RowState("r", "submitted", task_id="t"), "failed", "Incomplete", "stopped in the wait step"),
        (RowState("r", "generated", task_id="t"), "failed", "Incomplete", "stopped in the download step"),
        (
            RowState("r", "generated", task_id="t", code="StoreFailed", message="disk full"),
            "failed",
            "StoreFailed",
            "generated (and billed) but not stored: disk full",
        ),
    ],
)
def test_outcome_per_state(state: RowState | None, status: str, code: str | None, in_message: str | None) -> None:
    outcome = outcome_of(state, "run1")
    assert outcome["status"] == status
    assert outcome.get("code") == code
    if in_message is None:
        assert outcome.get("message") is None
    else:
        assert in_message in outcome["message"]


def _generated(tmp_path: Path) -> tuple[RowLedger, WaitResult]:
    ledger = RowLedger(str(tmp_path))
    state = RowState("r", "generated", task_id="t1", billed=True, video_url="https://x/v.mp4?Signature=s")
    ledger.put(state)
    return ledger, WaitResult("r", "t1", 3.0, "1:1")


def test_store_reads_the_signed_url_from_the_ledger_and_records_success(tmp_path: Path) -> None:
    ledger, result = _generated(tmp_path)
    seen: list[str] = []

    def transfer(url: str, destination: Any) -> dict[str, Any]:
        seen.append(url)
        return {"uri": str(destination), "size_bytes": 3, "sha256": "abc"}

    stored = store_row(ledger, result, run_id="run1", transfer=transfer, log=LOG)
    assert seen == ["https://x/v.mp4?Signature=s"]
    state = ledger.get("r")
    assert state is not None and (state.state, state.run_id, state.video_bytes) == ("succeeded", "run1", 3)
    # A clear of the download step: already stored, nothing fetched again.
    assert store_row(ledger, result, run_id="run2", transfer=transfer, log=LOG) == stored
    assert len(seen) == 1


def test_store_failures_keep_the_row_generated_or_end_it_expired(tmp_path: Path) -> None:
    ledger, result = _generated(tmp_path)

    def broken(url: str, destination: Any) -> dict[str, Any]:
        raise OSError("disk full")

    with pytest.raises(OSError):
        store_row(ledger, result, run_id="run1", transfer=broken, log=LOG)
    state = ledger.get("r")
    assert state is not None and (state.state, state.code) == ("generated", "StoreFailed")

    def expired(url: str, destination: Any) -> dict[str, Any]:
        raise DashScopeResultExpired(403, url.split("?")[0])  # as the hook raises it: no signature

    with pytest.raises(AirflowFailException):
        store_row(ledger, result, run_id="run1", transfer=expired, log=LOG)
    state = ledger.get("r")
    assert state is not None and (state.state, state.code) == ("failed", "ResultExpired")
    assert "no longer valid" in (state.message or "")


def test_store_refuses_a_row_with_no_generated_video_of_that_task(tmp_path: Path) -> None:
    ledger, _ = _generated(tmp_path)
    with pytest.raises(AirflowFailException, match="no generated video of task t-other"):
        store_row(ledger, WaitResult("r", "t-other"), run_id="run1", transfer=lambda u, d: {}, log=LOG)
