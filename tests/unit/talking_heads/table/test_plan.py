"""Planning: every row is generated or settled before any spend, using the ledger so no row is paid twice."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from talking_heads.row.ledger import RowLedger
from talking_heads.row.states import RowRecord
from talking_heads.table.plan import InputTableError, assign_connections, plan_run, read_input_table

from tests.unit.talking_heads.helpers import ROW, table_frame


def test_plan_uses_the_ledger_so_no_row_is_paid_twice(tmp_path: Path) -> None:
    ledger = RowLedger(str(tmp_path))
    ledger.put(RowRecord("done", "succeeded", model="emo-v1", task_id="t1", video_uri="file:///v.mp4", run_id="r0"))
    ledger.put(RowRecord("lost", "uncertain", model="emo-v1"))
    ledger.put(RowRecord("flight", "submitted", model="emo-v1", task_id="t3"))
    ledger.put(
        RowRecord(
            "paid-expired", "failed", model="emo-v1", task_id="t4", billed=True, code="ResultExpired", message="gone"
        )
    )
    ledger.put(RowRecord("refused", "failed", model="emo-v1", code="InvalidURL", message="bad", billed=False))
    frame = pd.concat(
        [
            table_frame("done", "lost", "flight", "paid-expired", "refused", "new"),
            pd.DataFrame([{"row_id": "bad", **ROW, "model": "nope"}]),
        ]
    )
    plan = plan_run(frame, ledger)
    by_id = {e.row_id: e for e in plan}
    assert len(plan) == 7
    assert by_id["done"].outcome["status"] == "skipped"
    assert by_id["lost"].outcome["code"] == "SubmissionUncertain"
    assert by_id["paid-expired"].plan == "done"
    assert by_id["bad"].outcome["code"] == "InvalidInput"
    assert {k for k, e in by_id.items() if e.plan == "generate"} == {"flight", "refused", "new"}
    assert by_id["new"].columns == {"note": "carried"}
    assert plan_run(frame, ledger, resubmit_uncertain=True)[1].plan == "generate"


def test_dry_run_submits_nothing(tmp_path: Path) -> None:
    plan = plan_run(table_frame("a", "b"), RowLedger(str(tmp_path)), dry_run=True)
    assert [e.outcome["status"] for e in plan] == ["skipped", "skipped"]


def test_table_errors_name_the_table(tmp_path: Path) -> None:
    with pytest.raises(InputTableError, match="not found"):
        read_input_table(str(tmp_path / "missing.csv"))
    corrupt = tmp_path / "corrupt.parquet"
    corrupt.write_bytes(b"PAR1 not really")
    with pytest.raises(InputTableError, match=r"corrupt\.parquet: cannot be read"):
        read_input_table(str(corrupt))
    (tmp_path / "t.xlsx").write_text("x")
    with pytest.raises(InputTableError, match="unsupported format"):
        read_input_table(str(tmp_path / "t.xlsx"))


def test_rows_are_spread_round_robin_over_the_connections(tmp_path: Path) -> None:
    ledger = RowLedger(str(tmp_path))
    ledger.put(RowRecord("done", "succeeded", model="emo-v1", task_id="t1", video_uri="file:///v.mp4", run_id="r0"))
    plan = plan_run(table_frame("r0", "done", "r1", "r2", "r3", "r4"), ledger)
    spread = assign_connections(plan, ["key_a", "key_b", " key_a ", ""])  # duplicates and blanks dropped
    assert [w.conn_id for w in spread] == ["key_a", "key_b", "key_a", "key_b", "key_a"]
    assert [w.row_id for w in spread] == ["r0", "r1", "r2", "r3", "r4"]  # only rows to generate, in order
    assert all(w.conn_id == "only" for w in assign_connections(plan, ["only"]))
    with pytest.raises(ValueError, match="at least one"):
        assign_connections(plan, [" "])
