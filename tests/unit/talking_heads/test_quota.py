"""A free-only account whose free quota runs out (429 ``Throttling.AllocationQuota``, "Free allocated quota
exceeded") stops the run's submits for that account (#15): the refused row and every later row of the
account end ``skipped`` with the reason, nothing is retried or billed, and a later run submits them. And the
other refusal that waiting does not cure, content moderation (``DataInspectionFailed``), is never retried."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dashscope_provider.hooks.dashscope import DashScopeHook
from talking_heads.ledger import RowLedger
from talking_heads.lifecycle import outcome_of, plan_row, submit_row
from talking_heads.media import MediaSigner
from talking_heads.outcomes import build_outcomes, summarize
from talking_heads.payloads import PlanEntry, WorkItem
from talking_heads.run_summary import summary_line
from talking_heads.validation import RowRequest

from tests.harness.airflow_compat import AirflowSkipException
from tests.unit.conftest import CONN_ID, KEY, conn_json, is_submit

LOG = logging.getLogger(__name__)


@pytest.fixture
def free_emulator(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """An emulator whose one account (``KEY``) may submit once more for free, then is refused."""
    from dashscope_emulator import EmulatorServer

    with EmulatorServer(accounts={"free": [KEY]}, free_quota={"free": 1}, port=0, speed=1000) as server:
        monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", conn_json(server.base_url))
        yield server


def _submit(ledger: RowLedger, row_id: str, emo_input: dict[str, Any], run_id: str) -> Any:
    return submit_row(
        ledger,
        WorkItem(RowRequest(row_id=row_id, model="emo-v1", **emo_input), CONN_ID),
        hook_for=lambda conn_id: DashScopeHook(dashscope_conn_id=conn_id),
        default_conn_id=CONN_ID,
        run_id=run_id,
        resubmit_uncertain=False,
        signer=MediaSigner(ledger.layout),
        log=LOG,
    )


def test_a_used_up_free_quota_stops_the_runs_submits_and_a_later_run_takes_the_rows(
    free_emulator: Any, emo_input: dict[str, Any], tmp_path: Path
) -> None:
    ledger = RowLedger(str(tmp_path))
    assert _submit(ledger, "r1", emo_input, "run-1").task_id
    with pytest.raises(AirflowSkipException, match="free quota of the DashScope account is used up"):
        _submit(ledger, "r2", emo_input, "run-1")  # refused by the service: no task
    with pytest.raises(AirflowSkipException, match="answered to row r2 earlier in this run"):
        _submit(ledger, "r3", emo_input, "run-1")  # not even sent
    submits = [r for r in free_emulator.request_log() if is_submit(r)]
    assert len(submits) == 2 and len(free_emulator.tasks()) == 1  # r2 sent once (never retried), r3 never
    for row_id in ("r2", "r3"):
        line = outcome_of(ledger.get(row_id), "run-1")
        assert line["status"] == "skipped" and line["code"] == "Throttling.AllocationQuota"
        assert "nothing was billed" in line["message"] and "A later run submits" in line["message"]
    plan = [PlanEntry(row_id=r, model="emo-v1", plan="generate") for r in ("r1", "r2", "r3")]
    frame = build_outcomes(plan, ledger, "run-1")
    assert frame["status"].tolist() == ["failed", "skipped", "skipped"]  # r1: submitted, its wait never ran
    # A later run, once the account can pay again: the rows are generated, the quota stop was this run's.
    assert plan_row(ledger.get("r3"), resubmit_uncertain=False) is None
    free_emulator.set_free_quota("free", None)
    assert _submit(ledger, "r3", emo_input, "run-2").task_id


def test_the_summary_counts_the_429s_the_submits_waited_out(tmp_path: Path) -> None:
    from talking_heads.lifecycle import RowState

    ledger = RowLedger(str(tmp_path))
    ledger.put(RowState("a", "submitted", task_id="t1", throttled=3))
    ledger.put(RowState("b", "submitted", task_id="t2", throttled=2))
    plan = [PlanEntry(row_id=r, model="emo-v1", plan="generate") for r in ("a", "b")]
    frame = build_outcomes(plan, ledger, "run-1")
    summary = summarize(frame, ledger.layout, "file:///o.csv")
    assert summary["throttled"] == 5
    assert "5 throttled (429) answers waited out" in summary_line({**summary, "report": "x"})


def test_content_moderation_fails_the_row_once_and_is_never_retried(
    emulator: Any, dashscope_conn: str, emo_input: dict[str, Any], tmp_path: Path
) -> None:
    from tests.harness.airflow_compat import AirflowFailException

    ledger = RowLedger(str(tmp_path))
    emulator.force_next("submit_inspection")
    with pytest.raises(AirflowFailException, match="DataInspectionFailed"):  # fails the task: no Airflow retry
        _submit(ledger, "flagged", emo_input, "run-1")
    assert len([r for r in emulator.request_log() if is_submit(r)]) == 1  # the hook did not send it again
    line = outcome_of(ledger.get("flagged"), "run-1")
    assert (line["status"], line["code"]) == ("failed", "DataInspectionFailed")
