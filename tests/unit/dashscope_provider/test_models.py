"""Parsing DashScope's answers, and the task status enum."""

from __future__ import annotations

import json

import pytest
from dashscope_provider.models import (
    DETECT_MODELS,
    DETECT_RATIOS,
    EMOJI_DRIVEN_IDS,
    MODEL_DETECT_RATIOS,
    MODELS,
    STYLE_LEVELS,
    TASK_STATUSES,
    TERMINAL_STATUSES,
    DashScopeTask,
    FaceDetection,
    SubmittedTask,
    TaskStatus,
    api_error,
    parse_detection,
    parse_submission,
    parse_task,
)


def test_parse_task_reference_examples() -> None:
    emo = parse_task(
        {
            "request_id": "r",
            "output": {"task_id": "t", "task_status": "SUCCEEDED", "results": {"video_url": "http://x/a.mp4"}},
            "usage": {"video_duration": 13.93, "video_ratio": "1:1"},
        }
    )
    emoji = parse_task(
        {
            "request_id": "r",
            "output": {"task_id": "t", "task_status": "SUCCEEDED", "video_url": "http://x/b.mp4"},
            "usage": {"video_duration": 2, "video_ratio": "standard"},
        }
    )
    failed = parse_task({"output": {"task_id": "t", "task_status": "FAILED", "code": "InvalidURL", "message": "m"}})
    assert (emo.video_url, emo.video_duration, emo.video_ratio) == ("http://x/a.mp4", 13.93, "1:1")
    assert (emoji.video_url, emoji.video_duration, emoji.video_ratio) == ("http://x/b.mp4", 2.0, "standard")
    assert (failed.status, failed.code, failed.message, failed.is_terminal) == ("FAILED", "InvalidURL", "m", True)
    with pytest.raises(ValueError):
        parse_task({"code": "InvalidApiKey"})


def test_task_status_is_a_str_enum_with_terminal_statuses() -> None:
    assert TaskStatus.SUCCEEDED == "SUCCEEDED" and isinstance(TaskStatus.SUCCEEDED, str)
    assert json.dumps({"s": TaskStatus.RUNNING}) == '{"s": "RUNNING"}'
    assert TASK_STATUSES == ("PENDING", "RUNNING", "SUCCEEDED", "FAILED", "CANCELED", "UNKNOWN")
    assert (
        {s for s in TaskStatus if s.is_terminal} == TERMINAL_STATUSES == {"SUCCEEDED", "FAILED", "CANCELED", "UNKNOWN"}
    )


def test_task_status_is_parsed_into_the_enum_and_dumped_as_plain_strings() -> None:
    task = parse_task({"output": {"task_id": "t", "task_status": "running"}})
    assert task.status is TaskStatus.RUNNING and not task.is_terminal
    dumped = task.to_dict()
    assert type(dumped["status"]) is str and dumped["status"] == "RUNNING"
    assert DashScopeTask.from_dict(dumped) == task
    assert DashScopeTask.from_dict({**dumped, "status": "SUCCEEDED", "extra": 1}).succeeded
    # A status this code does not know is kept, not a parse failure; it is not terminal.
    odd = parse_task({"output": {"task_id": "t", "task_status": "SUSPENDED"}})
    assert (odd.status, odd.is_terminal) == ("SUSPENDED", False)


def test_parse_submission() -> None:
    submitted = parse_submission({"request_id": "r", "output": {"task_id": "t", "task_status": "PENDING"}})
    assert submitted == SubmittedTask(task_id="t", task_status="PENDING", request_id="r")
    assert parse_submission({"output": {"task_id": "t"}}).task_status == "PENDING"
    for bad in ({"output": {}}, {"code": "x"}, None, []):
        with pytest.raises(ValueError):
            parse_submission(bad)


def test_api_error_with_and_without_a_dashscope_body() -> None:
    body = json.dumps({"request_id": "r-1", "code": "Throttling.RateQuota", "message": "slow"})
    error = api_error(429, body, "application/json", "submit")
    assert (error.status_code, error.code, error.message, error.request_id, error.operation) == (
        429,
        "Throttling.RateQuota",
        "slow",
        "r-1",
        "submit",
    )
    assert error.has_error_body
    gateway = api_error(502, "<html>Bad Gateway</html>", "text/html; charset=utf-8", "query")
    assert (gateway.code, gateway.has_error_body) == (None, False)
    assert "text/html" in str(gateway) and "Bad Gateway" not in str(gateway)


def test_parse_detection_reference_examples() -> None:
    emo = parse_detection(
        {
            "output": {"check_pass": True, "face_bbox": [302, 286, 610, 593], "ext_bbox": [71, 9, 840, 778]},
            "usage": {"image_count": 1},
            "request_id": "r1",
        },
        "emo-detect-v1",
        "1:1",
    )
    assert (emo.passed, emo.face_bbox, emo.ext_bbox, emo.request_id, emo.image_count) == (
        True,
        (302, 286, 610, 593),
        (71, 9, 840, 778),
        "r1",
        1,
    )
    emo_no = parse_detection(
        {"output": {"check_pass": False, "code": "InvalidFile.FullBody", "message": "m"}, "usage": {"image_count": 1}},
        "emo-detect-v1",
        "3:4",
    )
    assert (emo_no.passed, emo_no.code, emo_no.message, emo_no.face_bbox, emo_no.ratio) == (
        False,
        "InvalidFile.FullBody",
        "m",
        None,
        "3:4",
    )
    emoji = parse_detection(
        {
            "output": {"bbox_face": [212, 194, 460, 441], "ext_bbox_face": [63, 30, 609, 575]},
            "usage": {"image_count": 1},
        },
        "emoji-detect-v1",
        "1:1",
    )
    assert (emoji.passed, emoji.face_bbox, emoji.ext_bbox) == (True, (212, 194, 460, 441), (63, 30, 609, 575))
    emoji_no = parse_detection(
        {"output": {"code": "InvalidFile.FacePose", "message": "m"}, "usage": {"image_count": 1}},
        "emoji-detect-v1",
        "1:1",
    )
    assert (emoji_no.passed, emoji_no.code, emoji_no.ext_bbox) == (False, "InvalidFile.FacePose", None)


@pytest.mark.parametrize(
    "payload",
    [
        {"code": "InvalidApiKey"},  # no output
        {"output": {"check_pass": True}},  # passed without boxes
        {"output": {"check_pass": True, "face_bbox": [1, 2, 3], "ext_bbox": [0, 0, 9, 9]}},
        {"output": {"bbox_face": [5, 5, 1, 1], "ext_bbox_face": [0, 0, 9, 9]}},  # x2 < x1
        {"output": {"bbox_face": [1, 1, 5, 5]}},  # one box only
        {"output": {}},  # neither boxes nor a code
    ],
)
def test_parse_detection_rejects_unreadable_answers(payload: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        parse_detection(payload, "emo-detect-v1", "1:1")


def test_face_detection_round_trip_and_box_checks() -> None:
    detection = FaceDetection(True, [1, 2, 30, 40], (0, 0, 50, 60), "emo-detect-v1", "1:1", "r", image_count=1)  # type: ignore[arg-type]
    assert detection.face_bbox == (1, 2, 30, 40)  # lists become tuples: hashable, comparable
    dumped = detection.to_dict()
    assert dumped["face_bbox"] == [1, 2, 30, 40] and json.loads(json.dumps(dumped)) == dumped
    assert FaceDetection.from_dict({**dumped, "unknown": 1}) == detection
    with pytest.raises(ValueError):
        FaceDetection(True, (1, 2, 3, True), None, "m", "1:1")  # type: ignore[arg-type]
    assert DETECT_RATIOS == {"emo-detect-v1": ("1:1", "3:4"), "emoji-detect-v1": ("1:1",)}


def test_the_model_facts_agree_with_the_emulators_contract() -> None:
    """The emulator stands for the service and keeps its own copy of the reference's facts; the provider's
    must say the same (the pipeline imports the provider's)."""
    from dashscope_emulator import contract

    assert MODELS == contract.MODELS and STYLE_LEVELS == contract.STYLE_LEVELS
    assert len(set(contract.EMOJI_TEMPLATES)) == len(contract.EMOJI_TEMPLATES) == len(EMOJI_DRIVEN_IDS) == 20
    assert frozenset(contract.EMOJI_TEMPLATES) == EMOJI_DRIVEN_IDS
    assert DETECT_RATIOS == contract.DETECT_MODELS
    assert tuple(DETECT_MODELS) == MODELS and set(DETECT_MODELS.values()) == set(contract.DETECT_MODELS)
    assert MODEL_DETECT_RATIOS == {"emo-v1": ("1:1", "3:4"), "emoji-v1": ("1:1",)}
