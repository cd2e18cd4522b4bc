"""What crosses XCom: typed payloads that round-trip through JSON and carry no secret."""

from __future__ import annotations

import json

from talking_heads.row.payloads import PlanEntry, Submission, WaitResult, WorkItem
from talking_heads.row.states import RowRecord
from talking_heads.table.validation import RowRequest

REQUEST = RowRequest(
    row_id="r1", model="emo-v1", image_url="s3://b/p.png", audio_url="/data/v.wav", ratio="3:4", style_level="calm"
)


def _through_json(data: dict) -> dict:
    return json.loads(json.dumps(data))


def test_payloads_round_trip_through_json() -> None:
    item = WorkItem(REQUEST, "dashscope_key2")
    assert WorkItem.from_dict(_through_json(item.to_dict())) == item
    assert WorkItem.from_dict({"request": REQUEST.model_dump()}).conn_id is None  # the plan chose no key
    submission = Submission("r1", "task-1", "dashscope_key2")
    assert Submission.from_dict(_through_json(submission.to_dict())) == submission
    entry = PlanEntry("r1", "emo-v1", "generate", request=REQUEST, estimated_cost_usd=0.1, columns={"note": "x"})
    assert PlanEntry.from_dict(_through_json(entry.to_dict())) == entry
    settled = entry.settle({"status": "skipped", "message": "dry run"})
    assert (settled.plan, settled.request, settled.columns) == ("done", None, {"note": "x"})
    assert PlanEntry.from_dict(_through_json(settled.to_dict())) == settled


def test_the_wait_result_leaves_the_signed_video_url_in_the_ledger() -> None:
    state = RowRecord(
        "r1",
        "generated",
        task_id="t1",
        video_url="https://oss/v.mp4?Signature=s",
        video_duration=4.2,
        video_ratio="1:1",
    )
    result = WaitResult.of(state)
    assert result == WaitResult("r1", "t1", 4.2, "1:1")
    assert "Signature" not in json.dumps(result.to_dict())
    assert WaitResult.from_dict(_through_json(result.to_dict())) == result
