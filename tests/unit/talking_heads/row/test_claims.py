"""Overlapping runs on one output root (#16), at the submit step: a row is claimed by one run, and another
run waits for that claim, then follows the task it produced; a claim whose owner is gone is a lost answer,
never re-sent. Against the emulator, on a local disk and on S3 (moto)."""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from dashscope_provider.compat import AirflowFailException
from talking_heads.row import claims
from talking_heads.row.ledger import RowLedger
from talking_heads.row.outcome import outcome_of
from talking_heads.row.payloads import Submission
from talking_heads.row.states import RowRecord

from tests.conftest import S3_BUCKET
from tests.unit.talking_heads.row.helpers import submit, submits


@pytest.fixture(autouse=True)
def _quick_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(claims, "CLAIM_POLL_SECONDS", 0.2)


@pytest.fixture(params=["local", "s3"])
def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> RowLedger:
    if request.param == "s3":
        return RowLedger(f"s3://{S3_BUCKET}/claims-{uuid.uuid4().hex[:8]}", request.getfixturevalue("aws_conn"))
    return RowLedger(str(tmp_path))


def _submit(ledger: RowLedger, emoji_input: dict[str, Any], run_id: str) -> Submission:
    return submit(ledger, "r", emoji_input, run_id=run_id, owner=f"{run_id} generate.submit[0] try 1")


def _claim_by(run_id: str) -> RowRecord:
    return RowRecord(
        "r",
        "submitting",
        model="emoji-v1",
        run_id=run_id,
        owner=f"{run_id} generate.submit[0] try 1",
        intent_at=datetime.now(UTC).isoformat(),
    )


def test_two_runs_submitting_one_row_at_once_make_one_task(
    ledger: RowLedger, dashscope_conn: str, emulator: Any, emoji_input: dict[str, Any]
) -> None:
    start = threading.Barrier(2)
    results: dict[str, Submission | BaseException] = {}

    def run(run_id: str) -> None:
        start.wait()
        try:
            results[run_id] = _submit(ledger, emoji_input, run_id)
        except BaseException as error:  # reported by the asserts below
            results[run_id] = error

    threads = [threading.Thread(target=run, args=(run_id,)) for run_id in ("run-A", "run-B")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert all(isinstance(r, Submission) for r in results.values()), results
    assert len(submits(emulator)) == 1 and len(emulator.tasks()) == 1  # the service saw one submit
    assert {r.task_id for r in results.values()} == {emulator.tasks()[0]["task_id"]}  # type: ignore[union-attr]
    state = ledger.get("r")
    assert state is not None and state.status == "submitted" and state.owner is not None
    follower = "run-B" if state.run_id == "run-A" else "run-A"
    stored = state.advance("generated", billed=True, video_url="u").advance("succeeded", video_uri="v")
    line = outcome_of(stored, follower)
    assert line["status"] == "skipped" and f"overlapping run {state.run_id}" in line["message"]


def test_a_fresh_claim_of_another_run_is_waited_for_then_its_task_followed(
    ledger: RowLedger, dashscope_conn: str, emulator: Any, emoji_input: dict[str, Any]
) -> None:
    claim = ledger.put(_claim_by("run-B"))

    def run_b_gets_its_answer() -> None:
        time.sleep(1.5)
        ledger.put(claim.advance("submitted", task_id="task-of-run-B"))

    threading.Thread(target=run_b_gets_its_answer).start()
    began = time.monotonic()
    followed = _submit(ledger, emoji_input, "run-A")
    assert time.monotonic() - began >= 1.4  # it waited for the claim, not took it for lost
    assert followed.task_id == "task-of-run-B"
    assert submits(emulator) == []
    state = ledger.get("r")
    assert state is not None and state.status == "submitted" and state.run_id == "run-B"


def test_a_claim_whose_owner_is_gone_is_a_lost_answer_and_is_not_sent_again(
    ledger: RowLedger, dashscope_conn: str, emulator: Any, emoji_input: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(claims, "CLAIM_TIMEOUT_SECONDS", 1.0)
    ledger.put(_claim_by("run-B"))  # run B was killed while it held the claim
    began = time.monotonic()
    with pytest.raises(AirflowFailException, match=r"answer of run-B generate\.submit"):
        _submit(ledger, emoji_input, "run-A")
    assert time.monotonic() - began < 30  # bounded: it did not hang on the dead claim
    assert submits(emulator) == []
    state = ledger.get("r")
    assert state is not None and state.status == "uncertain"
    assert "run-B generate.submit[0] try 1 (claimed at" in (state.message or "")
    line = outcome_of(state, "run-A")
    assert line["code"] == "SubmissionUncertain" and "answer of run-B" in line["message"]


def test_a_claim_of_the_same_run_id_in_another_deployment_is_waited_for(
    ledger: RowLedger, dashscope_conn: str, emulator: Any, emoji_input: dict[str, Any]
) -> None:
    # Two deployments on one schedule both have a run "scheduled__...": the other's claim is not an earlier
    # try of this run's step, so it is waited for, not taken for a lost answer.
    claim = ledger.put(replace(_claim_by("run-A"), deployment="another-deployment"))

    def the_other_deployment_gets_its_answer() -> None:
        time.sleep(1.0)
        ledger.put(claim.advance("submitted", task_id="task-of-the-other-deployment"))

    threading.Thread(target=the_other_deployment_gets_its_answer).start()
    assert _submit(ledger, emoji_input, "run-A").task_id == "task-of-the-other-deployment"
    assert submits(emulator) == []


# -- the claim's own rules: its age, whose it is, and why a stale one is a lost answer ------------------


def test_a_claim_is_fresh_until_the_timeout_and_has_no_age_without_an_intent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(claims, "CLAIM_TIMEOUT_SECONDS", 60.0)
    written = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    claim = replace(_claim_by("run-B"), intent_at=written.isoformat())
    assert claims.claim_age(claim, written + timedelta(seconds=5)) == 5.0
    assert claims.claim_age(claim, written + timedelta(seconds=59.5)) == 59.5
    assert claims.claim_age(claim, written + timedelta(seconds=60)) is None  # stale: its owner is gone
    assert claims.claim_age(replace(claim, intent_at=None)) is None
    assert claims.claim_age(_claim_by("run-B")) is not None  # written just now, measured against the clock


def test_a_claim_is_this_runs_own_only_from_this_deployment(monkeypatch: pytest.MonkeyPatch) -> None:
    claim = _claim_by("run-A")
    assert claims.own_run(claim, "run-A")  # written before the deployment was recorded
    assert claims.own_run(replace(claim, deployment=claims.deployment_id()), "run-A")
    assert not claims.own_run(replace(claim, deployment="another-deployment"), "run-A")
    assert not claims.own_run(claim, "run-B")
    # Only another run's fresh claim is waited for.
    assert claims.claimed_elsewhere(claim, "run-B")
    assert not claims.claimed_elsewhere(claim, "run-A")
    assert not claims.claimed_elsewhere(claim.advance("submitted", task_id="t"), "run-B")
    monkeypatch.setattr(claims, "CLAIM_TIMEOUT_SECONDS", 0.0)
    assert not claims.claimed_elsewhere(claim, "run-B")  # stale: a lost answer, not waited for


def test_the_deployment_is_a_digest_of_its_database_never_its_address(monkeypatch: pytest.MonkeyPatch) -> None:
    here = claims.deployment_id()
    assert here == claims.deployment_id() and len(here) == 12 and int(here, 16) >= 0
    address = "postgresql+psycopg2://airflow:s3cret-password@db.example:5432/airflow"
    monkeypatch.setenv("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", address)
    there = claims.deployment_id()
    assert there != here
    assert "s3cret" not in there and "db.example" not in there


def test_a_stale_claim_of_another_run_names_its_owner_and_an_own_one_says_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(claims, "CLAIM_TIMEOUT_SECONDS", 90.0)
    claim = _claim_by("run-B")
    message = claims.stale_claim_message(claim, "run-A")
    assert message is not None
    assert f"run run-B (run-B generate.submit[0] try 1) claimed the row at {claim.intent_at}" in message
    assert "no answer within 90 s" in message
    assert claims.stale_claim_message(claim, "run-B") is None  # an earlier try of this very step
