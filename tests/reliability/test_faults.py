"""``talking_heads`` under injected faults: 5xx on submits and queries, submit answers lost in transit.

One N-row run through ``dag.test()`` against a faulty emulator, then two reruns of the same table
(faults off): without ``resubmit_uncertain`` and with it. Checked against the emulator's own records:
every row gets exactly one outcome line, no row is billed twice, and a row whose submit answer was
dropped was sent once and then found again in the account's task list: its own task adopted
(``reconciled``), waited on and stored, so the run ends with no row ``SubmissionUncertain`` and every row
billed exactly once; the reruns send nothing, ``resubmit_uncertain`` included (nothing is uncertain).
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from talking_heads.row import reconcile

from tests.conftest import tier_size
from tests.harness.reliability import Media, bills_by_row, count_leaks, run_dag, submits, tasks_by_row, write_table

#: 200 rows in the full tier; every day 30, which the seeded faults still hit with dropped answers.
ROWS = tier_size(200, 30)
KINDS = ("emo-square", "emo-halfbody", "emoji")
FAULTS = {"submit_5xx": 0.1, "query_5xx": 0.1, "drop_submit": 0.1, "drop_query": 0.02, "seed": 7}


def _one_line_per_row(outcomes: Any, row_ids: list[str]) -> None:
    assert len(outcomes) == len(row_ids)
    assert sorted(outcomes["row_id"]) == sorted(row_ids)
    assert outcomes["row_id"].is_unique


LIST_PATH = "/api/v1/tasks/"


def _lists(log: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in log if r["method"] == "GET" and r["path"] == LIST_PATH]


@pytest.mark.timeout(600)  # ~2 min on 2 cores; room for a loaded CI machine
def test_faults_never_double_bill_and_lost_answers_are_reconciled(
    airflow_db: str, emulator: Any, media: Media, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The emulator lists a task as soon as it exists: a short pause after each loss is enough.
    monkeypatch.setattr(reconcile, "SETTLE_SECONDS", 0.2)
    monkeypatch.setenv("TALKING_HEADS_RECONCILE_PAUSE_SECONDS", "0.2")
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

    # Each dropped row: never sent again after the drop, and its own task (the one the dropped request
    # created) adopted from the task list, waited on and stored: succeeded, marked reconciled.
    for row_id in dropped:
        attempts = [r for r in sent_1 if r["row"] == row_id]
        assert attempts[-1]["fault"] == "drop_submit", attempts  # the drop was the last request for it
        # Anything before it was refused with an error body (5xx/429): no task, retried by the hook.
        assert all(r["status"] in (429, 500, 503) and r["task_id"] is None for r in attempts[:-1]), attempts
        assert len([r for r in attempts if r["task_id"]]) == 1
        assert by_id.loc[row_id, "status"] == "succeeded", (row_id, by_id.loc[row_id, "message"])
        assert by_id.loc[row_id, "task_id"] == attempts[-1]["task_id"], row_id  # its own task, no other
        assert by_id.loc[row_id, "reconciled"] == "True", row_id
        assert "found in the account's task list" in by_id.loc[row_id, "message"], row_id
    uncertain = first[first["code"] == "SubmissionUncertain"]
    assert uncertain.empty, uncertain[["row_id", "message"]]
    reconciled = sorted(first.loc[first["reconciled"] == "True", "row_id"])
    assert reconciled == dropped  # and no row that got its answer was "reconciled"
    lists_1 = _lists(log_1)
    assert len(lists_1) >= len(dropped) and all(r["status"] == 200 for r in lists_1)

    # Every row succeeded despite the 5xx: those are retried; the dropped queries are retried too.
    not_succeeded = {
        r: (by_id.loc[r, "code"], by_id.loc[r, "message"]) for r in row_ids if by_id.loc[r, "status"] != "succeeded"
    }
    assert not_succeeded == {}
    tasks = tasks_by_row(emulator)
    assert sorted(tasks) == sorted(row_ids)
    assert max(len(t) for t in tasks.values()) == 1  # one task per row: nothing was sent twice
    bills = bills_by_row(emulator)
    double_bills = sum(1 for n in bills.values() if n > 1)
    assert double_bills == 0
    assert bills == dict.fromkeys(row_ids, 1)  # every row billed exactly once (the emulator's billing log)
    for row_id in row_ids:  # the outcome's task and usage are the ones the service billed
        (task,) = tasks[row_id]
        assert by_id.loc[row_id, "task_id"] == task["task_id"]
        assert float(by_id.loc[row_id, "video_duration"]) == pytest.approx(float(task["video_duration"]))
    assert injected["drop_submit"] == len(dropped)

    # -- run 2: same table, no resubmit_uncertain -------------------------------------------------------
    mark = len(emulator.request_log())
    _, second = run_dag(table, output_root)
    _one_line_per_row(second, row_ids)
    by_id = second.set_index("row_id")
    assert submits(emulator, mark) == []  # nothing sent at all: every row is stored and skipped
    assert (by_id["status"] == "skipped").all()
    assert _lists(emulator.request_log()[mark:]) == []  # nothing uncertain left to look up
    assert bills_by_row(emulator) == bills

    # -- run 3: resubmit_uncertain=true ------------------------------------------------------------
    mark = len(emulator.request_log())
    _, third = run_dag(table, output_root, resubmit_uncertain=True)
    _one_line_per_row(third, row_ids)
    by_id = third.set_index("row_id")
    sent_3 = submits(emulator, mark)
    # Nothing is uncertain, so resubmit_uncertain has nothing to send: no row is paid twice.
    assert sent_3 == []
    assert (by_id["status"] == "skipped").all()
    paid_twice = sorted(r for r, n in bills_by_row(emulator).items() if n > 1)
    assert paid_twice == []

    leaks = count_leaks(output_root)
    assert leaks == 0
    outcomes = len(first) + len(second) + len(third)
    throttled = sum(r["status"] == 429 for r in sent_1)
    print(
        f"\nFAULTS rows={ROWS} runs=3 faults_injected={sum(injected.values())} {dict(injected)} "
        f"submits_run1={len(sent_1)} throttled_429={throttled} tasks={sum(len(t) for t in tasks.values())} "
        f"lost_answers={len(dropped)} reconciled={len(reconciled)} left_uncertain={len(uncertain)} "
        f"list_calls={len(lists_1)} succeeded={ROWS} billed={len(emulator.billing())} "
        f"outcomes_recorded={outcomes} double_bills={double_bills} resent_on_request={len(sent_3)} "
        f"paid_twice={len(paid_twice)} leaks={leaks} wall={time.monotonic() - started:.1f}s"
    )
