"""``talking_heads`` under injected faults: 5xx on submits and queries, submit answers lost in transit.

One N-row run through ``dag.test()`` against a faulty emulator, then two reruns of the same table
(faults off): without ``resubmit_uncertain`` and with it. Checked against the emulator's own records:
every row gets exactly one outcome line, no row is billed twice, a row whose submit answer was dropped
is ``failed``/``SubmissionUncertain`` and was sent once, and only an explicit ``resubmit_uncertain``
sends it again (once).
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.harness.reliability import (
    Media,
    bills_by_row,
    count_leaks,
    run_dag,
    submits,
    tasks_by_row,
    write_table,
)

ROWS = 200
KINDS = ("emo-square", "emo-halfbody", "emoji")
FAULTS = {"submit_5xx": 0.1, "query_5xx": 0.1, "drop_submit": 0.1, "drop_query": 0.02, "seed": 7}


def _one_line_per_row(outcomes: Any, row_ids: list[str]) -> None:
    assert len(outcomes) == len(row_ids)
    assert sorted(outcomes["row_id"]) == sorted(row_ids)
    assert outcomes["row_id"].is_unique


@pytest.mark.timeout(600)  # ~2 min on 2 cores; room for a loaded CI machine
def test_faults_never_double_bill_and_uncertain_rows_are_sent_once(
    airflow_db: str, emulator: Any, media: Media, tmp_path: Path
) -> None:
    started = time.monotonic()
    row_ids = [f"row-{i:03d}" for i in range(ROWS)]
    table = write_table(tmp_path / "table.csv", [media.row(r, KINDS[i % 3]) for i, r in enumerate(row_ids)])
    output_root = tmp_path / "out"

    # -- run 1: faults on ---------------------------------------------------------------------------
    emulator.set_faults(**FAULTS)
    _, first = run_dag(table, output_root)
    emulator.set_faults()  # off for the reruns: what they send is then exactly what they decided to send
    log_1 = emulator.request_log()
    sent_1 = submits(emulator)
    injected = Counter(r["fault"] for r in log_1 if r["fault"])

    _one_line_per_row(first, row_ids)
    by_id = first.set_index("row_id")
    dropped = sorted({r["row"] for r in sent_1 if r["fault"] == "drop_submit"})
    assert dropped, "the seeded faults should drop some submit answers"
    assert None not in dropped

    # Each dropped row: failed SubmissionUncertain, and never sent again after the drop.
    for row_id in dropped:
        assert by_id.loc[row_id, "status"] == "failed", row_id
        assert by_id.loc[row_id, "code"] == "SubmissionUncertain", row_id
        attempts = [r for r in sent_1 if r["row"] == row_id]
        assert attempts[-1]["fault"] == "drop_submit", attempts  # the drop was the last request for it
        # Anything before it was refused with an error body (5xx/429): no task, retried by the hook.
        assert all(r["status"] in (429, 500, 503) and r["task_id"] is None for r in attempts[:-1]), attempts
        assert len([r for r in attempts if r["task_id"]]) == 1

    # Every other row succeeded despite the 5xx: those are retried; the dropped queries are retried too.
    others = [r for r in row_ids if r not in dropped]
    not_succeeded = {
        r: (by_id.loc[r, "code"], by_id.loc[r, "message"]) for r in others if by_id.loc[r, "status"] != "succeeded"
    }
    assert not_succeeded == {}
    tasks = tasks_by_row(emulator)
    assert max(len(t) for t in tasks.values()) == 1  # at most one task per row: nothing was sent twice
    bills = bills_by_row(emulator)
    double_bills = sum(1 for n in bills.values() if n > 1)
    assert double_bills == 0
    for row_id in others:  # the outcome's task and usage are the ones the service billed
        (task,) = tasks[row_id]
        assert by_id.loc[row_id, "task_id"] == task["task_id"]
        assert float(by_id.loc[row_id, "video_duration"]) == pytest.approx(float(task["video_duration"]))
    assert injected["drop_submit"] == len(dropped)

    # -- run 2: same table, no resubmit_uncertain -------------------------------------------------------
    mark = len(emulator.request_log())
    _, second = run_dag(table, output_root)
    _one_line_per_row(second, row_ids)
    by_id = second.set_index("row_id")
    assert submits(emulator, mark) == []  # nothing sent at all: succeeded rows skipped, uncertain refused
    assert (by_id.loc[others, "status"] == "skipped").all()
    assert (by_id.loc[dropped, "status"] == "failed").all()
    assert (by_id.loc[dropped, "code"] == "SubmissionUncertain").all()
    assert by_id.loc[dropped, "message"].str.contains("resubmit_uncertain").all()
    assert bills_by_row(emulator) == bills

    # -- run 3: resubmit_uncertain=true ------------------------------------------------------------
    mark = len(emulator.request_log())
    _, third = run_dag(table, output_root, resubmit_uncertain=True)
    _one_line_per_row(third, row_ids)
    by_id = third.set_index("row_id")
    sent_3 = submits(emulator, mark)
    # Throttled attempts (429) are refused before the service looks at them; the rest created tasks.
    assert {r["status"] for r in sent_3} <= {200, 429}
    resent = Counter(r["row"] for r in sent_3 if r["task_id"])
    assert resent == dict.fromkeys(dropped, 1)  # each uncertain row sent exactly once more, nothing else
    assert {r["row"] for r in sent_3} == set(dropped)
    assert (by_id.loc[dropped, "status"] == "succeeded").all()
    assert (by_id.loc[others, "status"] == "skipped").all()
    # Asked for on purpose: the dropped submissions had created tasks, so these rows are now paid twice.
    paid_twice = sorted(r for r, n in bills_by_row(emulator).items() if n > 1)
    assert paid_twice == dropped

    leaks = count_leaks(output_root)
    assert leaks == 0
    outcomes = len(first) + len(second) + len(third)
    throttled = sum(r["status"] == 429 for r in sent_1)
    print(
        f"\nFAULTS rows={ROWS} runs=3 faults_injected={sum(injected.values())} {dict(injected)} "
        f"submits_run1={len(sent_1)} throttled_429={throttled} tasks={sum(len(t) for t in tasks.values())} "
        f"succeeded={len(others)} uncertain={len(dropped)} outcomes_recorded={outcomes} "
        f"double_bills={double_bills} resent_on_request={sum(resent.values())} "
        f"paid_twice_on_request={len(paid_twice)} leaks={leaks} wall={time.monotonic() - started:.1f}s"
    )
