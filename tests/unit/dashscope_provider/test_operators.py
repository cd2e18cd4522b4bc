"""The synthesis operator against the emulator."""

from __future__ import annotations

from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowFailException
from dashscope_provider.exceptions import DashScopeSubmissionUncertain
from dashscope_provider.operators.dashscope import DashScopeVideoSynthesisOperator

from tests.unit.conftest import is_submit, logged_requests

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
