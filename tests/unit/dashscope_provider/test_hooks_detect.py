"""DashScopeHook.detect_face over real HTTP against a strict face-detect stub: shapes, errors, retries, pacing."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from typing import Any

import pytest
from dashscope_provider.exceptions import DashScopeAPIError, DashScopeQuotaExhausted
from dashscope_provider.models import FaceDetection

from tests.unit.conftest import CONN_ID, KEY, assert_no_key
from tests.unit.dashscope_provider.conftest import detect_conn, fast_hook
from tests.unit.dashscope_provider.face_detect_stub import FaceDetectStub

pytestmark = pytest.mark.usefixtures("no_key_in_logs")

IMAGE = "http://images.example/portrait.png"
NO_FACE = "http://images.example/noface.png"


def _statuses(stub: FaceDetectStub) -> list[int | None]:
    return [r["status"] for r in stub.requests]


# -- answers ------------------------------------------------------------------------------------------


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


# -- errors and retries -------------------------------------------------------------------------------


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


# -- pacing per account -------------------------------------------------------------------------------


def _record_slots(monkeypatch: pytest.MonkeyPatch, limiter: Any) -> list[float]:
    """The slot each call of ``limiter`` reserves (exactly spaced, unlike arrival times under load)."""
    slots: list[float] = []
    reserve = limiter.reserve

    def recording() -> float:
        delay = reserve()
        slots.append(time.monotonic() + delay)
        return delay

    monkeypatch.setattr(limiter, "reserve", recording)
    return slots


def test_detections_are_paced_per_account_and_model(
    detect_stub: FaceDetectStub, make_hook: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    hook = make_hook()
    slots = _record_slots(monkeypatch, hook.pacing.detect_limiter("emo-detect-v1"))
    started = time.monotonic()
    assert all(hook.detect_face("emo-detect-v1", IMAGE).passed for _ in range(11))
    assert time.monotonic() - started >= 10 / 4.5 - 0.05  # 4.5 per second, below the page's 5 for emo-detect-v1
    # (slots are read just after reserving: a few microseconds late, hence the 5 ms)
    assert min(b - a for a, b in itertools.pairwise(slots)) >= 1 / 4.5 - 0.005
    # An unpaced burst of 11 would get at least 6 answers 429; paced, the stub's window admits them all
    # (arrival jitter on a loaded machine may still cost the odd 429, which is then retried).
    assert _statuses(detect_stub).count(429) <= 1


def test_keys_of_one_account_share_the_pace(
    detect_stub: FaceDetectStub, make_hook: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = make_hook(detect_conn(monkeypatch, detect_stub.base_url, "ds_a", KEY, account="acct-1"))
    second = make_hook(detect_conn(monkeypatch, detect_stub.base_url, "ds_b", "sk-same-account", account="acct-1"))
    other = make_hook(detect_conn(monkeypatch, detect_stub.base_url, "ds_c", "sk-other-account"))
    assert first.pacing.detect_limiter("emoji-detect-v1") is second.pacing.detect_limiter("emoji-detect-v1")
    assert first.pacing.detect_limiter("emoji-detect-v1") is not other.pacing.detect_limiter("emoji-detect-v1")
    assert first.pacing.detect_limiter("emoji-detect-v1") is not first.pacing.detect_limiter("emo-detect-v1")
    # 90 % of the page's 1/s and 5/s: room for arrival jitter inside the service's 1 s window.
    assert first.pacing.detect_limiter("emoji-detect-v1").qps == 0.9
    assert first.pacing.detect_limiter("emo-detect-v1").qps == 4.5
    started = time.monotonic()
    for hook in (first, second, first, second):
        assert hook.detect_face("emoji-detect-v1", IMAGE).passed
    assert time.monotonic() - started >= 3 - 0.05  # one per second for the account, whichever key
    assert _statuses(detect_stub).count(429) <= 1
    assert {r["key"] for r in detect_stub.requests} == {KEY, "sk-same-account"}
    # The account is the provider's own extra: never sent as a header.
    assert not any("account" in {h.lower() for h in r["headers"]} for r in detect_stub.requests)


def test_detect_rate_can_be_set_per_hook(
    detect_stub: FaceDetectStub, make_hook: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    hook = make_hook(
        detect_conn(monkeypatch, detect_stub.base_url, "ds_slow", account="acct-slow"),
        detect_qps={"emo-detect-v1": 2.5},
    )
    assert hook.pacing.detect_limiter("emo-detect-v1").qps == 2.5


def test_the_async_query_budget_is_per_account(detect_stub: FaceDetectStub, monkeypatch: pytest.MonkeyPatch) -> None:
    detect_conn(monkeypatch, detect_stub.base_url, "dq_a", KEY, account="acct-q")
    detect_conn(monkeypatch, detect_stub.base_url, "dq_b", "sk-same-account", account="acct-q")
    detect_conn(monkeypatch, detect_stub.base_url, "dq_c", "sk-other-account")

    async def limiters() -> list[Any]:
        return [(await fast_hook(conn_id)._configure())[2] for conn_id in ("dq_a", "dq_b", "dq_c")]

    a, b, c = asyncio.run(limiters())
    assert a is b and a is not c
    assert CONN_ID  # the default connection is left alone
