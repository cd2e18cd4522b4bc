"""Planning: every row is generated or settled before any spend, using the ledger so no row is paid twice."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from talking_heads.row.ledger import RowLedger
from talking_heads.row.states import RowRecord
from talking_heads.table.plan import InputTableError, assign_connections, plan_run, read_input_table

ROW = {
    "model": "emo-v1",
    "image_url": "http://m/p.png",
    "audio_url": "http://m/v.wav",
    "face_bbox": "[10, 10, 50, 50]",
    "ext_bbox": "[0, 0, 100, 100]",
    "note": "carried",
}


def _frame(*ids: str) -> pd.DataFrame:
    return pd.DataFrame([{"row_id": i, **ROW} for i in ids])


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
            _frame("done", "lost", "flight", "paid-expired", "refused", "new"),
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
    plan = plan_run(_frame("a", "b"), RowLedger(str(tmp_path)), dry_run=True)
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


def test_a_table_over_the_map_limit_continues_in_follow_up_runs_each_row_in_one_part(tmp_path: Path) -> None:
    import json

    from talking_heads.row.payloads import PlanEntry
    from talking_heads.table.continuation import Part, own_entries, split_first, split_next

    ledger = RowLedger(str(tmp_path))
    ledger.put(RowRecord("done", "succeeded", model="emo-v1", task_id="t0", video_uri="file:///v.mp4", run_id="r0"))
    entries = plan_run(_frame("a", "done", "b", "c", "d", "e"), ledger)
    entries, part = split_first(entries, 2, "R1")
    assert part == Part(1, 3, "R1", "R1__part2", ["c", "d", "e"], ["a", "b"])
    assert [e.row_id for e in own_entries(entries, part)] == ["a", "b"]
    deferred = entries[3]
    assert (deferred.plan, deferred.outcome["status"]) == ("done", "skipped")  # type: ignore[index]
    assert deferred.outcome["message"] == "part 1 of 3: continues in run R1__part2"  # type: ignore[index]
    assert part.note() == "part 1 of 3, continues in run R1__part2 with 3 rows"

    # Part 2 reads part 1's plan file (through JSON, as it is stored), not the table.
    document = {"rows": [e.to_dict() for e in entries], "continuation": part.to_dict()}
    entries2, part2 = split_next(json.loads(json.dumps(document)), 2)
    assert part2 == Part(2, 3, "R1", "R1__part3", ["e"], ["c", "d"])
    assert [e.row_id for e in own_entries(entries2, part2)] == ["c", "d"]
    by_id = {e.row_id: e for e in entries2}
    assert by_id["a"].plan == "generate"  # part 1's rows: the outcome step reads them from the ledger
    assert by_id["done"].outcome["status"] == "skipped"  # type: ignore[index]
    assert by_id["e"].outcome["message"] == "part 2 of 3: continues in run R1__part3"  # type: ignore[index]
    assert by_id["e"].request is not None

    document = {"rows": [e.to_dict() for e in entries2], "continuation": part2.to_dict()}
    entries3, part3 = split_next(json.loads(json.dumps(document)), 2)
    assert part3 == Part(3, 3, "R1", None, [], ["e"])
    assert part3.note() == "part 3 of 3 (from run R1)"
    assert [e.row_id for e in own_entries(entries3, part3)] == ["e"]
    # Every row to generate is handed out by exactly one part.
    handed = [e.row_id for p, es in ((part, entries), (part2, entries2), (part3, entries3)) for e in own_entries(es, p)]
    assert sorted(handed) == ["a", "b", "c", "d", "e"]
    assert all(isinstance(e, PlanEntry) for e in entries3) and len(entries3) == 6


def test_a_table_within_the_map_limit_is_one_part(tmp_path: Path) -> None:
    from talking_heads.table.continuation import split_first

    entries, part = split_first(plan_run(_frame("a", "b"), RowLedger(str(tmp_path))), 2, "R1")
    assert (part.parts, part.next_run_id, part.later, part.note()) == (1, None, [], "")
    assert [e.plan for e in entries] == ["generate", "generate"]


def test_the_plan_log_names_connections_of_one_account(monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    from talking_heads.orchestration.task_bodies import log_shared_accounts

    def conn(key: str, account: str | None = None) -> str:
        extra = {"account": account} if account else {}
        return json.dumps({"conn_type": "dashscope", "host": "http://127.0.0.1:1", "password": key, "extra": extra})

    monkeypatch.setenv("AIRFLOW_CONN_DS_A1", conn("sk-one", "acct-1"))
    monkeypatch.setenv("AIRFLOW_CONN_DS_A1_BIS", conn("sk-two", "acct-1"))
    monkeypatch.setenv("AIRFLOW_CONN_DS_SAME_KEY", conn("sk-three"))
    monkeypatch.setenv("AIRFLOW_CONN_DS_SAME_KEY_BIS", conn("sk-three"))  # no account named: the key's
    monkeypatch.setenv("AIRFLOW_CONN_DS_OTHER", conn("sk-four", "acct-2"))
    lines: list[str] = []
    ids = ["ds_a1", "ds_a1_bis", "ds_same_key", "ds_same_key_bis", "ds_other", "ds_missing"]
    shared = log_shared_accounts(ids, lines.append)
    assert shared["acct-1"] == ["ds_a1", "ds_a1_bis"]
    assert [v for k, v in shared.items() if k.startswith("key-")] == [["ds_same_key", "ds_same_key_bis"]]
    assert len(shared) == 2
    assert "Connections ds_a1, ds_a1_bis belong to one Alibaba Cloud account (acct-1)" in lines[0]
    assert "add no parallelism" in lines[0]
    assert "sk-three" not in "\n".join(lines)  # the key is never logged, only its fingerprint
    assert lines[-1] == "Rows are spread over 6 connections of 3 account(s)"

    lines.clear()
    assert log_shared_accounts(["ds_a1", "ds_other"], lines.append) == {}
    assert lines == ["Rows are spread over 2 connections of 2 account(s)"]


def test_rows_are_spread_round_robin_over_the_connections(tmp_path: Path) -> None:
    ledger = RowLedger(str(tmp_path))
    ledger.put(RowRecord("done", "succeeded", model="emo-v1", task_id="t1", video_uri="file:///v.mp4", run_id="r0"))
    plan = plan_run(_frame("r0", "done", "r1", "r2", "r3", "r4"), ledger)
    spread = assign_connections(plan, ["key_a", "key_b", " key_a ", ""])  # duplicates and blanks dropped
    assert [w.conn_id for w in spread] == ["key_a", "key_b", "key_a", "key_b", "key_a"]
    assert [w.row_id for w in spread] == ["r0", "r1", "r2", "r3", "r4"]  # only rows to generate, in order
    assert all(w.conn_id == "only" for w in assign_connections(plan, ["only"]))
    with pytest.raises(ValueError, match="at least one"):
        assign_connections(plan, [" "])
