"""The outcome table: every row ends with exactly one outcome, with its usage and cost."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from talking_heads.reporting.outcome_table import OUTCOME_COLUMNS, build_outcomes, write_outcomes
from talking_heads.row.ledger import RowLedger
from talking_heads.row.states import RowRecord
from talking_heads.table.plan import plan_run

from tests.unit.talking_heads.test_plan import _frame


def test_outcomes_one_line_per_row_with_costs(tmp_path: Path) -> None:
    ledger = RowLedger(str(tmp_path))
    plan = plan_run(_frame("ok", "api-failed", "never-ran", "lost"), ledger)
    ledger.put(
        RowRecord(
            "ok",
            "succeeded",
            model="emo-v1",
            task_id="t1",
            video_uri="u",
            video_duration=10.0,
            video_ratio="3:4",
            run_id="run1",
            billed=True,
        )
    )
    ledger.put(
        RowRecord(
            "api-failed",
            "failed",
            model="emo-v1",
            task_id="t2",
            code="InvalidFile.Resolution",
            message="The image resolution is invalid",
        )
    )
    ledger.put(RowRecord("lost", "uncertain", model="emo-v1"))
    frame = build_outcomes(plan, ledger, "run1")
    assert list(frame.columns[: len(OUTCOME_COLUMNS)]) == OUTCOME_COLUMNS
    assert frame["row_id"].tolist() == ["ok", "api-failed", "never-ran", "lost"]
    assert frame["status"].tolist() == ["succeeded", "failed", "failed", "failed"]
    assert frame.loc[0, "cost_usd"] == pytest.approx(0.22937)
    assert frame.loc[0, "cost_cny"] == pytest.approx(1.6)
    assert frame.loc[1, "code"] == "InvalidFile.Resolution"
    assert frame.loc[2, "code"] == "Incomplete"
    assert frame.loc[3, "code"] == "SubmissionUncertain"
    assert (frame["note"] == "carried").all()
    written = write_outcomes(frame, ledger.layout, "manual__2026-11-23T10:00:00+00:00")
    assert written["csv"].endswith("outcomes/manual__2026-11-23T10_00_00_00_00.csv")
    again = pd.read_parquet(written["parquet"].removeprefix("file://"))
    assert again["status"].tolist() == frame["status"].tolist()
