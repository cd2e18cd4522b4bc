"""The synthesis operator against the emulator."""

from __future__ import annotations

import json
from typing import Any

import pytest
from dashscope_provider.compat import AirflowFailException
from dashscope_provider.exceptions import DashScopeDetectionFailed, DashScopeSubmissionUncertain
from dashscope_provider.models import FaceDetection
from dashscope_provider.operators.dashscope import DashScopeFaceDetectOperator, DashScopeVideoSynthesisOperator

from tests.unit.conftest import CONN_ID, is_submit, logged_requests
from tests.unit.dashscope_provider.face_detect_stub import FaceDetectStub

pytestmark = pytest.mark.usefixtures("no_key_in_logs")


def test_synthesis_operator_returns_task_id(dashscope_conn: str, emulator: Any, emo_input: dict[str, Any]) -> None:
    op = DashScopeVideoSynthesisOperator(
        task_id="submit",
        model="emo-v1",
        input=emo_input,
        parameters={"style_level": "calm"},
        dashscope_conn_id=dashscope_conn,
    )
    task_id = op.execute({})  # type: ignore[arg-type]
    assert isinstance(task_id, str)
    [task] = emulator.tasks()
    assert (task["task_id"], task["parameters"]) == (task_id, {"style_level": "calm"})
    assert set(DashScopeVideoSynthesisOperator.template_fields) >= {"model", "input", "parameters"}


def test_synthesis_operator_uncertain_fails_without_retry(
    dashscope_conn: str, emulator: Any, emoji_input: dict[str, Any]
) -> None:
    emulator.force_next("drop_submit")
    op = DashScopeVideoSynthesisOperator(
        task_id="submit", model="emoji-v1", input=emoji_input, dashscope_conn_id=dashscope_conn, retries=3
    )
    with pytest.raises(DashScopeSubmissionUncertain) as info:
        op.execute({})  # type: ignore[arg-type]
    assert isinstance(info.value, AirflowFailException)  # the Airflow task fails; its retries are not used
    assert len(logged_requests(emulator, is_submit)) == 1


def test_synthesis_operator_templates_render() -> None:
    op = DashScopeVideoSynthesisOperator(
        task_id="submit",
        model="{{ params.model }}",
        input={"image_url": "{{ params.url }}"},
        dashscope_conn_id="{{ params.conn }}",
    )
    op.render_template_fields({"params": {"model": "emoji-v1", "url": "http://x/a.png", "conn": "c1"}})  # type: ignore[arg-type]
    assert (op.model, op.input, op.dashscope_conn_id) == ("emoji-v1", {"image_url": "http://x/a.png"}, "c1")


def test_synthesis_operator_hook_is_built_once_from_the_rendered_connection() -> None:
    from dashscope_provider.hooks.dashscope import DashScopeHook

    op = DashScopeVideoSynthesisOperator(
        task_id="submit", model="emo-v1", input={}, dashscope_conn_id="{{ params.conn }}"
    )
    op.render_template_fields({"params": {"conn": "c1"}})  # type: ignore[arg-type]
    assert isinstance(op.hook, DashScopeHook) and op.hook is op.hook
    assert op.hook.dashscope_conn_id == "c1"


# -- face detection -----------------------------------------------------------------------------------


def test_face_detect_operator_returns_the_boxes(detect_stub: FaceDetectStub) -> None:
    op = DashScopeFaceDetectOperator(
        task_id="detect", model="emo-detect-v1", image_url="http://images.example/a.png", dashscope_conn_id=CONN_ID
    )
    result = op.execute({})  # type: ignore[arg-type]
    assert result == {
        "passed": True,
        "face_bbox": [302, 286, 610, 593],
        "ext_bbox": [71, 9, 840, 778],
        "model": "emo-detect-v1",
        "ratio": "1:1",
        "request_id": result["request_id"],
        "code": None,
        "message": None,
        "image_count": 1,
    }
    assert json.loads(json.dumps(result)) == result  # XCom-ready
    assert FaceDetection.from_dict(result).passed


def test_face_detect_operator_fails_without_retry_when_the_image_does_not_pass(detect_stub: FaceDetectStub) -> None:
    op = DashScopeFaceDetectOperator(
        task_id="detect", model="emoji-detect-v1", image_url="http://images.example/noface.png", retries=3
    )
    op.dashscope_conn_id = CONN_ID
    with pytest.raises(DashScopeDetectionFailed, match=r"InvalidFile\.NoHuman") as info:
        op.execute({})  # type: ignore[arg-type]
    assert isinstance(info.value, AirflowFailException)  # the same image would be refused (and billed) again
    lenient = DashScopeFaceDetectOperator(
        task_id="detect2",
        model="emoji-detect-v1",
        image_url="http://images.example/noface.png",
        dashscope_conn_id=CONN_ID,
        fail_on_no_pass=False,
    )
    result = lenient.execute({})  # type: ignore[arg-type]
    assert (result["passed"], result["code"], result["face_bbox"]) == (False, "InvalidFile.NoHuman", None)
    assert len(detect_stub.billing) == 2  # both answers were billed


def test_face_detect_operator_templates() -> None:
    op = DashScopeFaceDetectOperator(
        task_id="detect",
        model="{{ params.model }}",
        image_url="{{ params.url }}",
        ratio="{{ params.ratio }}",
        dashscope_conn_id="{{ params.conn }}",
    )
    params = {"model": "emo-detect-v1", "url": "http://x/a.png", "ratio": "3:4", "conn": "c3"}
    op.render_template_fields({"params": params})  # type: ignore[arg-type]
    assert (op.model, op.image_url, op.ratio, op.hook.dashscope_conn_id) == (
        "emo-detect-v1",
        "http://x/a.png",
        "3:4",
        "c3",
    )
