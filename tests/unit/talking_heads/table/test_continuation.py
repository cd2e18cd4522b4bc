"""A table larger than one run can map (talking_heads.table.continuation): part 1 keeps the first rows to
generate and defers the rest, each follow-up run takes the next ones from the previous part's plan file, every
row is handed out by exactly one part, and each part's note says "part k of n"."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from talking_heads.row.ledger import RowLedger
from talking_heads.row.payloads import PlanEntry
from talking_heads.row.states import RowRecord
from talking_heads.table.continuation import (
    ROWS_PER_ACCOUNT_ENV,
    Part,
    own_entries,
    part_run_id,
    rows_per_run,
    split_first,
    split_next,
)
from talking_heads.table.plan import plan_run

from tests.unit.talking_heads.helpers import table_frame


def _through_the_plan_file(entries: list[PlanEntry], part: Part) -> dict[str, Any]:
    """The plan file a part writes (``runs/{run}/plan.json``) as the next part reads it back."""
    return json.loads(json.dumps({"rows": [e.to_dict() for e in entries], "continuation": part.to_dict()}))


def test_a_table_over_the_map_limit_continues_in_follow_up_runs_each_row_in_one_part(tmp_path: Path) -> None:
    ledger = RowLedger(str(tmp_path))
    ledger.put(RowRecord("done", "succeeded", model="emo-v1", task_id="t0", video_uri="file:///v.mp4", run_id="r0"))
    entries = plan_run(table_frame("a", "done", "b", "c", "d", "e"), ledger)
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
    entries, part = split_first(plan_run(table_frame("a", "b"), RowLedger(str(tmp_path))), 2, "R1")
    assert (part.parts, part.next_run_id, part.later, part.note()) == (1, None, [], "")
    assert [e.plan for e in entries] == ["generate", "generate"]


def test_a_50_row_table_at_a_limit_of_20_runs_as_parts_of_20_20_and_10(tmp_path: Path) -> None:
    ids = [f"row-{i:02d}" for i in range(50)]
    limit, first = 20, "manual__2026-12-01T00:00:00+00:00"
    entries, part = split_first(plan_run(table_frame(*ids), RowLedger(str(tmp_path))), limit, first)
    parts = [(entries, part)]
    while part.next_run_id is not None:
        entries, part = split_next(_through_the_plan_file(entries, part), limit)
        parts.append((entries, part))

    expected_parts = math.ceil(len(ids) / limit)
    assert [len(own_entries(es, p)) for es, p in parts] == [20, 20, 10]
    assert [p.number for _, p in parts] == list(range(1, expected_parts + 1))
    assert all(p.parts == expected_parts and p.first_run_id == first for _, p in parts)
    # Each part names the run it continues in; the last one continues in none.
    assert [p.next_run_id for _, p in parts] == [f"{first}__part2", f"{first}__part3", None]
    assert [p.next_run_id for _, p in parts[:-1]] == [part_run_id(first, k) for k in (2, 3)]
    assert [p.note() for _, p in parts] == [
        f"part 1 of 3, continues in run {first}__part2 with 30 rows",
        f"part 2 of 3 (from run {first}), continues in run {first}__part3 with 10 rows",
        f"part 3 of 3 (from run {first})",
    ]
    # Every row is generated by exactly one part, in table order, and every part's plan has every row.
    handed = [e.row_id for es, p in parts for e in own_entries(es, p)]
    assert handed == ids
    assert all([e.row_id for e in es] == ids for es, _ in parts)
    # In part 2, part 3's rows wait, skipped for now, naming the run that takes them.
    entries2, part2 = parts[1]
    waiting = {e.row_id: e for e in entries2 if e.row_id in part2.later}
    assert sorted(waiting) == ids[40:]
    assert {e.outcome["message"] for e in waiting.values()} == {f"part 2 of 3: continues in run {first}__part3"}  # type: ignore[index]
    assert all(e.plan == "done" and e.outcome["status"] == "skipped" for e in waiting.values())  # type: ignore[index]


def test_a_part_survives_the_plan_file_and_a_table_with_nothing_to_generate_is_one_part() -> None:
    part = Part(2, 3, "R1", "R1__part3", ["e"], ["c", "d"])
    assert Part.from_dict(json.loads(json.dumps(part.to_dict()))) == part
    assert Part.from_dict({}) == Part() and Part().note() == ""  # a plan file written before parts existed
    settled = [PlanEntry("x", "emo-v1", "done", outcome={"status": "skipped"})]
    entries, one = split_first(settled, 20, "R9")
    assert entries == settled and (one.parts, one.own, one.later) == (1, [], [])


def test_rows_per_run_is_the_map_limit_unless_a_deployment_bounds_it_lower() -> None:
    assert rows_per_run(1024, 3, environ={}) == 1024
    assert rows_per_run(1024, 3, environ={ROWS_PER_ACCOUNT_ENV: "0"}) == 1024
    assert rows_per_run(1024, 3, environ={ROWS_PER_ACCOUNT_ENV: "50"}) == 150
    assert rows_per_run(100, 3, environ={ROWS_PER_ACCOUNT_ENV: "50"}) == 100  # never past max_map_length
    with pytest.raises(ValueError, match=ROWS_PER_ACCOUNT_ENV):
        rows_per_run(1024, 1, environ={ROWS_PER_ACCOUNT_ENV: "-1"})
