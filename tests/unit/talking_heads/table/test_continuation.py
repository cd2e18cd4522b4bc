"""A table larger than one run can map (talking_heads.table.continuation): part 1 keeps the first rows to
generate and defers the rest, each follow-up run takes the next ones from the previous part's plan file, and
every row is handed out by exactly one part."""

from __future__ import annotations

import json
from pathlib import Path

from talking_heads.row.ledger import RowLedger
from talking_heads.row.payloads import PlanEntry
from talking_heads.row.states import RowRecord
from talking_heads.table.continuation import Part, own_entries, split_first, split_next
from talking_heads.table.plan import plan_run

from tests.unit.talking_heads.helpers import table_frame


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
