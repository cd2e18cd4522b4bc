"""DashScopeAsyncHook against the emulator, run in a real event loop."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from dashscope_provider.exceptions import DashScopeAPIError

from tests.unit.conftest import CONN_ID, KEY, conn_json, is_query, logged_requests
from tests.unit.dashscope_provider.conftest import fast_hook

pytestmark = pytest.mark.usefixtures("no_key_in_logs")


def test_async_hook_get_task_shapes(
    dashscope_conn: str, make_hook: Any, emoji_input: dict[str, Any], wait_terminal: Any
) -> None:
    sync_hook = make_hook()
    task_id = sync_hook.submit_task("emoji-v1", emoji_input).task_id
    expected = wait_terminal(sync_hook, task_id)
    task = asyncio.run(fast_hook().get_task(task_id))
    # The same parsing as the sync hook (request ids differ per request).
    assert task.to_dict() | {"request_id": None} == expected.to_dict() | {"request_id": None}
    assert task.video_ratio == "standard" and isinstance(task.video_duration, float)


def test_async_hook_does_not_retry_401(emulator: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", conn_json(emulator.base_url, "sk-wrong-key"))
    with pytest.raises(DashScopeAPIError) as info:
        asyncio.run(fast_hook().get_task("t"))
    assert (info.value.status_code, info.value.code) == (401, "InvalidApiKey")
    assert len(logged_requests(emulator, is_query)) == 1
    assert KEY not in str(info.value) and "sk-wrong-key" not in str(info.value)
