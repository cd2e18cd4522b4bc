"""A free-only account whose free quota runs out (429 ``Throttling.AllocationQuota``, "Free allocated quota
exceeded") stops the run's submits for that account (#15): the refused row and every later row of the
account end ``skipped`` with the reason, nothing is retried or billed, and a later run submits them
(talking_heads.row.quota: the stop recorded per run and account). Content moderation, the other refusal that
waiting does not cure, is in ``test_submit.py``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dashscope_provider.compat import AirflowSkipException
from dashscope_provider.hooks.dashscope import DashScopeHook
from talking_heads.reporting.outcome_table import build_outcomes
from talking_heads.row.decide import plan_row
from talking_heads.row.ledger import RowLedger
from talking_heads.row.outcome import outcome_of
from talking_heads.row.payloads import PlanEntry
from talking_heads.row.quota import quota_stop, stop_submitting

from tests.unit.conftest import CONN_ID, KEY, conn_json, is_submit
from tests.unit.talking_heads.row.helpers import submit


@pytest.fixture
def free_emulator(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """An emulator whose one account (``KEY``) may submit once more for free, then is refused."""
    from dashscope_emulator import EmulatorServer

    with EmulatorServer(accounts={"free": [KEY]}, free_quota={"free": 1}, port=0, speed=1000) as server:
        monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", conn_json(server.base_url))
        yield server


def test_a_used_up_free_quota_stops_the_runs_submits_and_a_later_run_takes_the_rows(
    free_emulator: Any, emo_input: dict[str, Any], tmp_path: Path
) -> None:
    ledger = RowLedger(str(tmp_path))
    assert submit(ledger, "r1", emo_input, model="emo-v1", run_id="run-1").task_id
    with pytest.raises(AirflowSkipException, match="free quota of the DashScope account is used up"):
        submit(ledger, "r2", emo_input, model="emo-v1", run_id="run-1")  # refused by the service: no task
    with pytest.raises(AirflowSkipException, match="answered to row r2 earlier in this run"):
        submit(ledger, "r3", emo_input, model="emo-v1", run_id="run-1")  # not even sent
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
    assert submit(ledger, "r3", emo_input, model="emo-v1", run_id="run-2").task_id


def test_the_stop_is_recorded_per_run_and_account(
    dashscope_conn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger = RowLedger(str(tmp_path))
    hook = DashScopeHook(dashscope_conn_id=dashscope_conn)
    assert quota_stop(ledger, "run-1", hook) is None
    reason = stop_submitting(ledger, "run-1", hook, "r7", "Throttling.AllocationQuota: Free allocated quota exceeded.")
    assert reason.startswith("not submitted: the free quota of the DashScope account is used up")
    assert "Free allocated quota exceeded" in reason and "nothing was billed" in reason
    # Every later submit of the run with that account reads it, naming the row the service answered.
    stopped = quota_stop(ledger, "run-1", hook)
    assert stopped is not None and stopped.endswith("(answered to row r7 earlier in this run)")
    assert reason.removeprefix("not submitted: ") in stopped
    assert [p.parent.name for p in (tmp_path / "runs").rglob("*.json")] == ["quota_exhausted"]
    # Another run, or another account in the same run, still submits.
    assert quota_stop(ledger, "run-2", hook) is None
    monkeypatch.setenv("AIRFLOW_CONN_DASHSCOPE_OTHER", conn_json("http://127.0.0.1:1", password="sk-other-account"))
    assert quota_stop(ledger, "run-1", DashScopeHook(dashscope_conn_id="dashscope_other")) is None
    # A missing connection stops nothing here: the submit itself says it is missing.
    assert quota_stop(ledger, "run-1", DashScopeHook(dashscope_conn_id="no_such_connection")) is None
