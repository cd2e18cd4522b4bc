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
from airflow.sdk.exceptions import AirflowSkipException
from talking_heads.reporting.outcome_table import build_outcomes
from talking_heads.row.decide import plan_row
from talking_heads.row.ledger import RowLedger
from talking_heads.row.outcome import outcome_of
from talking_heads.row.payloads import PlanEntry

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
