"""The 24 h limits of the service: result URLs and task ids expire.

A run that stops part-way (here: ``dag.test``'s ``mark_success_pattern`` skips the later steps, as a
killed worker or a stopped run would) leaves the row in the ledger; the emulator's clock is then
pushed past 24 h and the table is run again.

(a) The wait finished (``generated``: paid for, URL known) but the video was not stored; 24 h later
    the URL is dead: the row ends ``failed``/``ResultExpired``, billed once, never generated again.
(b) The task was accepted (``submitted``) but never waited on; 24 h later its id answers ``UNKNOWN``:
    the row ends ``failed`` with that reason and nothing is resubmitted.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from tests.harness.reliability import Media, bills_by_row, count_leaks, run_dag, submits, tasks_by_row, write_table

DAY_AND_A_MINUTE = 86_400 + 60
ROWS = {"late-emo": "emo-square", "late-emoji": "emoji"}  # both result shapes (results.video_url, video_url)


def _queries(emulator: Any, since: int) -> list[dict[str, Any]]:
    log = emulator.request_log()[since:]
    return [r for r in log if r["method"] == "GET" and r["path"].startswith("/api/v1/tasks/")]


def _ledger(output_root: Path, row_id: str) -> Any:
    from talking_heads.row.ledger import RowLedger

    return RowLedger(str(output_root)).get(row_id)


def test_result_url_expired_before_download_fails_billed_once_and_is_not_regenerated(
    airflow_db: str, emulator: Any, media: Media, tmp_path: Path
) -> None:
    started = time.monotonic()
    table = write_table(tmp_path / "table.csv", [media.row(r, kind) for r, kind in ROWS.items()])
    output_root = tmp_path / "out"

    # Run 1 stops after the wait: the service has billed the task, the video is not stored yet.
    _, first = run_dag(table, output_root, mark_success=r"generate\.download")
    for row_id in ROWS:
        state = _ledger(output_root, row_id)
        assert state.status == "generated" and state.billed and state.video_url, state
    assert set(first["code"]) == {"Incomplete"}
    assert first["message"].str.contains("download step").all()
    assert bills_by_row(emulator) == dict.fromkeys(ROWS, 1)

    emulator.advance(DAY_AND_A_MINUTE)

    # Run 2: the download finds the URL expired.
    mark = len(emulator.request_log())
    _, second = run_dag(table, output_root)
    log_2 = emulator.request_log()[mark:]
    by_id = second.set_index("row_id")
    assert list(second["row_id"]) == list(ROWS)
    assert (by_id["status"] == "failed").all()
    assert (by_id["code"] == "ResultExpired").all()
    for row_id in ROWS:
        message = by_id.loc[row_id, "message"]
        assert "expire" in message and "HTTP 403" in message, message
        assert "Signature=" not in message  # the pre-signed URL's signature is not copied into outcomes
        assert by_id.loc[row_id, "task_id"] == _ledger(output_root, row_id).task_id
        assert not (output_root / "videos" / f"{row_id}.mp4").exists()
    # It was paid for, so its usage (and, where a price is known, its cost) stays on the outcome line.
    assert float(by_id.loc["late-emo", "cost_usd"]) > 0
    assert submits(emulator, mark) == []
    assert _queries(emulator, mark) == []  # the ledger knew the task had finished: no polling
    downloads = [r for r in log_2 if r["path"].startswith("/results/")]
    assert sorted(r["status"] for r in downloads) == [403, 403]  # one attempt each: 403 is not retried

    # Run 3: the row is settled; it is not generated (paid for) again.
    mark = len(emulator.request_log())
    _, third = run_dag(table, output_root)
    by_id = third.set_index("row_id")
    assert (by_id["code"] == "ResultExpired").all()
    assert by_id["message"].str.contains("already billed; not generated again").all()
    assert emulator.request_log()[mark:] == []  # not a single request to the service
    bills = bills_by_row(emulator)
    assert bills == dict.fromkeys(ROWS, 1)
    leaks = count_leaks(output_root)
    assert leaks == 0
    print(
        f"\nEXPIRY-URL rows={len(ROWS)} runs=3 faults_injected=1 (clock +{DAY_AND_A_MINUTE}s) "
        f"outcomes_recorded={len(first) + len(second) + len(third)} codes={dict(Counter(second['code']))} "
        f"tasks={sum(len(t) for t in tasks_by_row(emulator).values())} bills={sum(bills.values())} "
        f"double_bills={sum(n > 1 for n in bills.values())} leaks={leaks} wall={time.monotonic() - started:.1f}s"
    )


def _run_until_unknown(emulator: Any, media: Media, tmp_path: Path) -> tuple[Path, Path, pd.DataFrame, int]:
    """Run 1 stops after the submit; 24 h pass; run 2 waits on the now UNKNOWN task ids."""
    table = write_table(tmp_path / "table.csv", [media.row(r, kind) for r, kind in ROWS.items()])
    output_root = tmp_path / "out"
    _, first = run_dag(table, output_root, mark_success=r"generate\.(wait|download)")
    for row_id in ROWS:
        state = _ledger(output_root, row_id)
        assert state.status == "submitted" and state.task_id, state
    assert set(first["code"]) == {"Incomplete"}
    assert first["message"].str.contains("wait step").all()

    emulator.advance(DAY_AND_A_MINUTE)
    mark = len(emulator.request_log())
    _, second = run_dag(table, output_root)
    return table, output_root, second, mark


def test_task_id_gone_unknown_fails_with_the_reason_and_is_not_resubmitted(
    airflow_db: str, emulator: Any, media: Media, tmp_path: Path
) -> None:
    started = time.monotonic()
    _, output_root, second, mark = _run_until_unknown(emulator, media, tmp_path)
    by_id = second.set_index("row_id")
    assert list(second["row_id"]) == list(ROWS)
    assert (by_id["status"] == "failed").all()
    assert (by_id["code"] == "UNKNOWN").all()
    assert by_id["message"].str.contains("no longer knows this task").all()
    assert submits(emulator, mark) == []  # waited on the same task ids, never resubmitted
    queries = _queries(emulator, mark)
    for row_id in ROWS:
        task_id = _ledger(output_root, row_id).task_id
        assert by_id.loc[row_id, "task_id"] == task_id
        assert sum(q["task_id"] == task_id for q in queries) >= 2  # UNKNOWN is confirmed before it is believed
    tasks = tasks_by_row(emulator)
    assert {row: len(t) for row, t in tasks.items()} == dict.fromkeys(ROWS, 1)
    leaks = count_leaks(output_root)
    assert leaks == 0
    bills = bills_by_row(emulator)
    print(
        f"\nEXPIRY-UNKNOWN rows={len(ROWS)} runs=2 faults_injected=1 (clock +{DAY_AND_A_MINUTE}s) "
        f"outcomes_recorded={2 * len(ROWS)} codes={dict(Counter(second['code']))} queries={len(queries)} "
        f"resubmits=0 tasks={sum(len(t) for t in tasks.values())} service_bills={sum(bills.values())} "
        f"reported_cost_rows={int(second['cost_usd'].notna().sum())} double_bills=0 leaks={leaks} "
        f"wall={time.monotonic() - started:.1f}s"
    )


def test_rerun_after_unknown_does_not_pay_again_unasked(
    airflow_db: str, emulator: Any, media: Media, tmp_path: Path
) -> None:
    table, output_root, _, _ = _run_until_unknown(emulator, media, tmp_path)
    # The emulator ran (and billed) both tasks before their ids expired: the service knows they were paid.
    assert bills_by_row(emulator) == dict.fromkeys(ROWS, 1)
    mark = len(emulator.request_log())
    _, third = run_dag(table, output_root)
    print(
        f"\nEXPIRY-UNKNOWN-RERUN rows={len(ROWS)} statuses={dict(Counter(third['status']))} "
        f"resubmits={len([r for r in submits(emulator, mark) if r['task_id']])} "
        f"service_bills={dict(bills_by_row(emulator))}"
    )
    assert [r for r in submits(emulator, mark) if r["task_id"]] == []


def test_cost_report_counts_the_seconds_billed_for_an_expired_result(tmp_path: Path) -> None:
    from talking_heads.reporting.outcome_table import build_outcomes
    from talking_heads.reporting.report import build_report
    from talking_heads.row.ledger import RowLedger
    from talking_heads.row.payloads import PlanEntry
    from talking_heads.row.states import RowRecord

    run_id = "manual__2027-01-01T00:00:00+00:00"
    ledger = RowLedger(str(tmp_path))
    common = {"model": "emo-v1", "billed": True, "video_ratio": "1:1", "run_id": run_id}
    stored = {"task_id": "t-1", "video_duration": 5.0, "video_uri": str(tmp_path / "videos" / "stored.mp4")}
    ledger.put(RowRecord("stored", "succeeded", **stored, **common))
    expired = {"task_id": "t-2", "video_duration": 4.0, "code": "ResultExpired"}
    message = "DashScope result URL is no longer valid (HTTP 403)"
    ledger.put(RowRecord("expired", "failed", message=message, **expired, **common))
    plan = [PlanEntry(r, "emo-v1", "generate") for r in ("stored", "expired")]
    outcomes = build_outcomes(plan, ledger, run_id)
    by_id = outcomes.set_index("row_id")
    assert by_id.loc["expired", "cost_usd"] == pytest.approx(4.0 * 0.011469)  # the outcome line has it
    report = build_report(outcomes.assign(outcome_file="manual__2027-01-01T00_00_00_00_00"))
    assert float(report.by_model_ratio["seconds"].sum()) == pytest.approx(9.0)
