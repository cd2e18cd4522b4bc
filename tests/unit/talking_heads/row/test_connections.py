"""The run's DashScope connections (talking_heads.row.connections): the hook a row uses, and the task a
recorded row is followed with, always on the key that created it."""

from __future__ import annotations

from typing import Any

import pytest
from dashscope_provider.hooks.dashscope import DashScopeHook
from talking_heads.row.connections import RunConnections
from talking_heads.row.payloads import Submission
from talking_heads.row.states import RowRecord, RowStatus

DEFAULT = "dashscope_default_of_the_run"


def _connections() -> RunConnections:
    return RunConnections(lambda conn_id: DashScopeHook(dashscope_conn_id=conn_id), DEFAULT)


@pytest.mark.parametrize(
    ("status", "followed"),
    [
        ("submitting", False),  # being sent: no task known yet
        ("uncertain", False),  # the answer was lost: looked for in the task list, not followed
        ("submitted", True),
        ("generated", True),
        ("succeeded", True),
        ("failed", False),
    ],
)
def test_a_row_is_followed_only_in_a_state_that_knows_its_task(status: str, followed: bool) -> None:
    record = RowRecord("r", status, task_id="t-1", conn_id="dashscope_two")
    expected = Submission("r", "t-1", "dashscope_two") if followed else None
    assert _connections().submission(record) == expected


def test_every_status_is_decided() -> None:
    # A status added later must be placed in the table above: every one is either followed or not.
    decided = {"submitting", "uncertain", "submitted", "generated", "succeeded", "failed"}
    assert {str(s) for s in RowStatus} == decided


def test_no_record_or_no_task_id_is_nothing_to_follow() -> None:
    connections = _connections()
    assert connections.submission(None) is None
    assert connections.submission(RowRecord("r", "submitted", task_id=None)) is None


def test_a_task_recorded_without_its_key_falls_back_to_the_runs_default() -> None:
    assert _connections().submission(RowRecord("r", "generated", task_id="t-2")) == Submission("r", "t-2", DEFAULT)


def test_the_hook_is_built_for_the_named_connection_or_the_default() -> None:
    built: list[str] = []

    def hook_for(conn_id: str) -> Any:
        built.append(conn_id)
        return DashScopeHook(dashscope_conn_id=conn_id)

    connections = RunConnections(hook_for, DEFAULT)
    assert connections.hook("dashscope_two").dashscope_conn_id == "dashscope_two"
    assert connections.hook().dashscope_conn_id == DEFAULT
    assert connections.hook(None).dashscope_conn_id == DEFAULT
    assert built == ["dashscope_two", DEFAULT, DEFAULT]
