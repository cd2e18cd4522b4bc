"""DashScopeHook.detect_face (``hooks/face_detection.py``'s request and answer) against a strict face-detect stub
over real HTTP: shapes, errors, what is retried and what may be billed."""

from __future__ import annotations

import json
from typing import Any

import pytest
from dashscope_provider.exceptions import DashScopeAPIError, DashScopeQuotaExhausted
from dashscope_provider.models import FaceDetection

from tests.unit.conftest import KEY, assert_no_key
from tests.unit.dashscope_provider.conftest import detect_conn
from tests.unit.dashscope_provider.face_detect_stub import FaceDetectStub

pytestmark = pytest.mark.usefixtures("no_key_in_logs")


# -- face detection -----------------------------------------------------------------------------------

IMAGE = "http://images.example/portrait.png"
NO_FACE = "http://images.example/noface.png"


def _statuses(stub: FaceDetectStub) -> list[int | None]:
    return [r["status"] for r in stub.requests]


# -- face detection: answers ------------------------------------------------------------------------------------------


def test_emo_detect_passed(detect_stub: FaceDetectStub, make_hook: Any) -> None:
    detection = make_hook().detect_face("emo-detect-v1", IMAGE)
    assert detection == FaceDetection(
        passed=True,
        face_bbox=(302, 286, 610, 593),
        ext_bbox=(71, 9, 840, 778),
        model="emo-detect-v1",
        ratio="1:1",
        request_id=detection.request_id,
        image_count=1,
    )
    assert detection.request_id and detection.code is None and detection.message is None
    [request] = detect_stub.requests
    # The body and headers the page specifies: the ratio always sent, synchronous (no async header).
    assert request["body"] == {"model": "emo-detect-v1", "input": {"image_url": IMAGE}, "parameters": {"ratio": "1:1"}}
    assert request["headers"]["Authorization"] == f"Bearer {KEY}"
    assert "X-DashScope-Async" not in request["headers"]
    assert len(detect_stub.billing) == 1


def test_emo_detect_half_body_ratio(detect_stub: FaceDetectStub, make_hook: Any) -> None:
    detection = make_hook().detect_face("emo-detect-v1", IMAGE, ratio="3:4")
    assert detection.passed and detection.ratio == "3:4"
    assert detection.ext_bbox is not None
    x1, y1, x2, y2 = detection.ext_bbox
    assert (x2 - x1) * 4 == (y2 - y1) * 3  # ext_bbox has the asked aspect: it decides emo-v1's output
    assert detect_stub.requests[0]["body"]["parameters"] == {"ratio": "3:4"}


def test_emo_detect_not_passed_is_an_answer_and_billed(detect_stub: FaceDetectStub, make_hook: Any) -> None:
    detection = make_hook().detect_face("emo-detect-v1", NO_FACE)
    assert (detection.passed, detection.code, detection.face_bbox, detection.ext_bbox) == (
        False,
        "InvalidFile.NoHuman",
        None,
        None,
    )
    assert detection.message and detection.image_count == 1
    assert _statuses(detect_stub) == [200]  # not retried: the same image gets the same verdict, billed again
    assert len(detect_stub.billing) == 1


def test_emoji_detect_shape_is_normalised(detect_stub: FaceDetectStub, make_hook: Any) -> None:
    detection = make_hook().detect_face("emoji-detect-v1", IMAGE)
    # bbox_face -> face_bbox, ext_bbox_face -> ext_bbox: what emoji-v1's input takes.
    assert (detection.passed, detection.face_bbox, detection.ext_bbox) == (
        True,
        (212, 194, 460, 441),
        (63, 30, 609, 575),
    )
    assert detection.ratio == "1:1"
    dumped = json.loads(json.dumps(detection.to_dict()))
    assert dumped["face_bbox"] == [212, 194, 460, 441] and dumped["passed"] is True
    assert FaceDetection.from_dict(dumped) == detection


def test_emoji_detect_not_passed(detect_stub: FaceDetectStub, make_hook: Any) -> None:
    detection = make_hook().detect_face("emoji-detect-v1", IMAGE + "?fail=InvalidFile.FacePose")
    assert (detection.passed, detection.code, detection.ext_bbox) == (False, "InvalidFile.FacePose", None)
    assert FaceDetection.from_dict(detection.to_dict()) == detection


@pytest.mark.parametrize(("model", "ratio"), [("emoji-detect-v1", "3:4"), ("emo-detect-v1", "16:9")])
def test_a_ratio_the_model_does_not_take_is_refused_before_sending(
    model: str, ratio: str, detect_stub: FaceDetectStub, make_hook: Any
) -> None:
    with pytest.raises(ValueError, match="ratio"):
        make_hook().detect_face(model, IMAGE, ratio=ratio)
    assert detect_stub.requests == []


# -- face detection: errors and retries -------------------------------------------------------------------------------


def test_refusals_map_to_api_error_and_are_not_retried(
    detect_stub: FaceDetectStub, make_hook: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(DashScopeAPIError) as info:
        make_hook().detect_face("emo-detect-v1", "ftp://images.example/a.png")
    assert (info.value.status_code, info.value.code, info.value.operation) == (400, "InvalidURL", "detect")
    assert info.value.request_id and not info.value.retryable
    detect_conn(monkeypatch, detect_stub.base_url, key="sk-wrong-key")
    with pytest.raises(DashScopeAPIError) as info:
        make_hook().detect_face("emo-detect-v1", IMAGE)
    assert (info.value.status_code, info.value.code) == (401, "InvalidApiKey")
    assert "sk-wrong-key" not in str(info.value)
    assert _statuses(detect_stub) == [400, 401]
    assert detect_stub.billing == []  # a refused request is not billed


def test_transient_failures_are_retried(detect_stub: FaceDetectStub, make_hook: Any) -> None:
    for fault in ("500", "503", "502_no_body", "429"):
        detect_stub.force_next(fault)
    hook = make_hook(max_attempts=5)
    detection = hook.detect_face("emo-detect-v1", IMAGE)
    assert detection.passed
    assert _statuses(detect_stub) == [500, 503, 502, 429, 200]
    assert len(detect_stub.billing) == 1  # failed requests are not billed
    assert hook.throttled == 1  # the one 429 it absorbed


@pytest.mark.parametrize(
    ("fault", "status", "code", "error_type"),
    [
        ("inspection", 400, "DataInspectionFailed", DashScopeAPIError),  # content moderation
        ("free_quota", 429, "Throttling.AllocationQuota", DashScopeQuotaExhausted),  # a free-only account, used up
    ],
)
def test_answers_waiting_does_not_cure_are_never_retried(
    fault: str, status: int, code: str, error_type: type, detect_stub: FaceDetectStub, make_hook: Any
) -> None:
    detect_stub.force_next(fault)
    hook = make_hook(max_attempts=5)
    with pytest.raises(DashScopeAPIError) as info:
        hook.detect_face("emo-detect-v1", IMAGE)
    assert type(info.value) is error_type
    assert (info.value.status_code, info.value.code) == (status, code)
    assert not info.value.retryable
    assert _statuses(detect_stub) == [status]  # sent once
    assert hook.throttled == 0 and detect_stub.billing == []


def test_a_lost_answer_is_retried_and_may_be_billed_twice(detect_stub: FaceDetectStub, make_hook: Any) -> None:
    # Safe to repeat (the same image gets the same boxes), but the lost answer was billed: documented.
    detect_stub.force_next("drop")
    detection = make_hook().detect_face("emoji-detect-v1", IMAGE)
    assert detection.passed
    assert len(detect_stub.requests) == 2
    assert len(detect_stub.billing) == 2


def test_an_unreadable_answer_is_not_retried(detect_stub: FaceDetectStub, make_hook: Any) -> None:
    detect_stub.force_next("garbage")
    with pytest.raises(DashScopeAPIError) as info:
        make_hook().detect_face("emo-detect-v1", IMAGE)
    assert info.value.status_code == 200 and "unreadable" in str(info.value)
    assert len(detect_stub.requests) == 1  # it was answered (billed): asking again would pay again
    assert_no_key(info.value)


def test_persistent_5xx_ends_after_max_attempts(detect_stub: FaceDetectStub, make_hook: Any) -> None:
    for _ in range(3):
        detect_stub.force_next("503")
    with pytest.raises(DashScopeAPIError) as info:
        make_hook(max_attempts=3).detect_face("emo-detect-v1", IMAGE)
    assert (info.value.status_code, info.value.code) == (503, "ModelUnavailable")
    assert len(detect_stub.requests) == 3
