"""Overlapping runs on one output root (#16), at the submit step: a row is claimed by one run, and another
run waits for that claim, then follows the task it produced; a claim whose owner is gone is a lost answer,
never re-sent. Against the emulator, on a local disk and on S3 (moto)."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from dashscope_provider.hooks.dashscope import DashScopeHook
from talking_heads.ledger import RowLedger
from talking_heads.lifecycle import RowState, outcome_of, submit_row
from talking_heads.lifecycle import submit as submit_step
from talking_heads.media import MediaSigner
from talking_heads.payloads import Submission, WorkItem
from talking_heads.validation import RowRequest

from tests.conftest import S3_BUCKET
from tests.harness.airflow_compat import AirflowFailException
from tests.unit.conftest import CONN_ID, is_submit

LOG = logging.getLogger(__name__)


@pytest.fixture(autouse=True)
def _quick_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(submit_step, "CLAIM_POLL_SECONDS", 0.2)


@pytest.fixture(params=["local", "s3"])
def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> RowLedger:
    if request.param == "s3":
        return RowLedger(f"s3://{S3_BUCKET}/claims-{uuid.uuid4().hex[:8]}", request.getfixturevalue("aws_conn"))
    return RowLedger(str(tmp_path))


def _submit(ledger: RowLedger, emoji_input: dict[str, Any], run_id: str) -> Submission:
    return submit_row(
        ledger,
        WorkItem(RowRequest(row_id="r", model="emoji-v1", **emoji_input), CONN_ID),
        hook_for=lambda conn_id: DashScopeHook(dashscope_conn_id=conn_id),
        default_conn_id=CONN_ID,
        run_id=run_id,
        owner=f"{run_id} generate.submit[0] try 1",
        resubmit_uncertain=False,
        signer=MediaSigner(ledger.layout),
        log=LOG,
    )


def _submits(emulator: Any) -> list[dict[str, Any]]:
    return [r for r in emulator.request_log() if is_submit(r)]


def _claim_by(run_id: str) -> RowState:
    return RowState(
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
    assert len(_submits(emulator)) == 1 and len(emulator.tasks()) == 1  # the service saw one submit
    assert {r.task_id for r in results.values()} == {emulator.tasks()[0]["task_id"]}  # type: ignore[union-attr]
    state = ledger.get("r")
    assert state is not None and state.state == "submitted" and state.owner is not None
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
    assert _submits(emulator) == []
    state = ledger.get("r")
    assert state is not None and state.state == "submitted" and state.run_id == "run-B"


def test_a_claim_whose_owner_is_gone_is_a_lost_answer_and_is_not_sent_again(
    ledger: RowLedger, dashscope_conn: str, emulator: Any, emoji_input: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(submit_step, "CLAIM_TIMEOUT_SECONDS", 1.0)
    ledger.put(_claim_by("run-B"))  # run B was killed while it held the claim
    began = time.monotonic()
    with pytest.raises(AirflowFailException, match=r"answer of run-B generate\.submit"):
        _submit(ledger, emoji_input, "run-A")
    assert time.monotonic() - began < 30  # bounded: it did not hang on the dead claim
    assert _submits(emulator) == []
    state = ledger.get("r")
    assert state is not None and state.state == "uncertain"
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
    assert _submits(emulator) == []
