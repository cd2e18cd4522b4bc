"""Row operators (talking_heads.orchestration.operators): what a refused submit leaves in the ledger, which
key a row uses, and the download reading the XCom of a wait its trigger ended."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from dashscope_provider.compat import AirflowFailException
from dashscope_provider.exceptions import DashScopeAPIError, DashScopeConfigError
from dashscope_provider.hooks.dashscope import DashScopeHook

pytestmark = pytest.mark.usefixtures("no_key_in_logs")


# -- row operators: what a refused submit leaves in the ledger ------------------------------------------


def _submit_row_operator(conn_id: str, emoji_input: dict[str, Any], output_root: Path, row_id: str) -> Any:
    from talking_heads.orchestration.operators import SubmitRowOperator
    from talking_heads.table.validation import RowRequest

    request = RowRequest(row_id=row_id, model="emoji-v1", **emoji_input)
    return SubmitRowOperator(
        task_id="submit", row={"request": request.model_dump()}, output_root=str(output_root), dashscope_conn_id=conn_id
    )


def _ledger_outcome(output_root: Path, row_id: str) -> tuple[str, str | None, bool]:
    """``(state, code, billed)`` of the row's entry in the ledger under ``output_root`` (it must have one)."""
    from talking_heads.row.ledger import RowLedger

    state = RowLedger(str(output_root)).get(row_id)
    assert state is not None
    return state.status, state.code, state.billed


def test_submit_row_transient_refusal_is_left_to_task_retries(
    dashscope_conn: str, emulator: Any, emoji_input: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from talking_heads.row.ledger import RowLedger

    monkeypatch.setitem(DashScopeHook.__init__.__kwdefaults__, "retry_initial", 0.01)
    monkeypatch.setitem(DashScopeHook.__init__.__kwdefaults__, "retry_max", 0.02)
    for _ in range(5):  # as many 5xx as the hook has attempts
        emulator.force_next("submit_500")
    op = _submit_row_operator(dashscope_conn, emoji_input, tmp_path, "r-1")
    with pytest.raises(DashScopeAPIError) as info:
        op.execute({"run_id": "run-1"})  # type: ignore[arg-type]
    assert not isinstance(info.value, AirflowFailException)  # the Airflow task's retries apply
    assert _ledger_outcome(tmp_path, "r-1") == ("failed", "InternalError", False)
    assert emulator.tasks() == []

    submission = op.execute({"run_id": "run-1"})  # the retry: nothing was created, so it submits again
    [task] = emulator.tasks()
    assert submission == {"row_id": "r-1", "task_id": task["task_id"], "conn_id": dashscope_conn}
    assert RowLedger(str(tmp_path)).get("r-1").status == "submitted"  # type: ignore[union-attr]


def test_submit_row_permanent_refusal_fails_without_retries(
    emulator: Any, emoji_input: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.unit.conftest import conn_json

    monkeypatch.setenv("AIRFLOW_CONN_DASHSCOPE_WRONG_KEY", conn_json(emulator.base_url, password="sk-not-a-key"))
    op = _submit_row_operator("dashscope_wrong_key", emoji_input, tmp_path, "r-2")
    with pytest.raises(AirflowFailException, match="row r-2: submit refused"):
        op.execute({"run_id": "run-1"})  # type: ignore[arg-type]
    assert _ledger_outcome(tmp_path, "r-2") == ("failed", "InvalidApiKey", False)


def test_submit_row_without_a_usable_connection_sends_nothing_and_is_not_uncertain(
    emulator: Any, emoji_input: dict[str, Any], tmp_path: Path
) -> None:
    op = _submit_row_operator("no_such_connection", emoji_input, tmp_path, "r-3")
    with pytest.raises(DashScopeConfigError, match="no_such_connection"):
        op.execute({"run_id": "run-1"})  # type: ignore[arg-type]
    # Nothing can have been sent: a plain failure (the task's retries apply), not "uncertain".
    assert _ledger_outcome(tmp_path, "r-3") == ("failed", "DashScopeConfigError", False)
    assert emulator.request_log() == []


def test_rows_go_to_their_planned_key_and_keep_the_key_that_created_their_task(
    emoji_input: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dashscope_emulator import EmulatorServer, key_fingerprint
    from talking_heads.orchestration.operators import SubmitRowOperator, WaitRowOperator
    from talking_heads.row.ledger import RowLedger
    from talking_heads.table.validation import RowRequest

    from tests.unit.conftest import conn_json

    with EmulatorServer(api_keys=["sk-key-one", "sk-key-two"], port=0, speed=1000) as emulator:
        monkeypatch.setenv("AIRFLOW_CONN_DASHSCOPE_ONE", conn_json(emulator.base_url, password="sk-key-one"))
        monkeypatch.setenv("AIRFLOW_CONN_DASHSCOPE_TWO", conn_json(emulator.base_url, password="sk-key-two"))
        request = RowRequest(row_id="r-k", model="emoji-v1", **emoji_input).model_dump()

        def submit(planned_conn: str) -> dict[str, Any]:
            op = SubmitRowOperator(
                task_id="submit",
                row={"request": request, "conn_id": planned_conn},
                output_root=str(tmp_path),
                dashscope_conn_id="dashscope_one",
            )
            return op.execute({"run_id": "run-1"})  # type: ignore[arg-type]

        submission = submit("dashscope_two")
        [task] = emulator.tasks()
        assert task["key_fingerprint"] == key_fingerprint("sk-key-two")  # the plan's key, not the default
        assert submission["conn_id"] == "dashscope_two"
        assert RowLedger(str(tmp_path)).get("r-k").conn_id == "dashscope_two"  # type: ignore[union-attr]

        # A rerun whose plan chose the other key: the task in flight is only known to the key that created it.
        again = submit("dashscope_one")
        assert again == submission
        assert len(emulator.tasks()) == 1

        wait = WaitRowOperator(
            task_id="wait",
            submission=again,
            output_root=str(tmp_path),
            dashscope_conn_id="dashscope_one",
            poll_interval="0.05",
            deferrable=False,
            timeout=60,
        )
        result = wait.execute({})  # type: ignore[arg-type]
        assert (result["task_id"], result["video_ratio"]) == (task["task_id"], "standard")
        queried = {r["key_fingerprint"] for r in emulator.request_log() if "/tasks/" in r["path"]}
        assert queried == {key_fingerprint("sk-key-two")}


def test_the_download_reads_the_xcom_of_a_wait_its_trigger_ended(monkeypatch: pytest.MonkeyPatch) -> None:
    """Airflow 3.3.2 stores a TaskSuccessEvent's XCom JSON-encoded once more; the Task SDK reads a string."""
    from talking_heads.orchestration.operators import DownloadRowOperator
    from talking_heads.row import store

    seen: list[Any] = []
    monkeypatch.setattr(store, "store_row", lambda ledger, result, **kwargs: seen.append(result) or {})
    result = {"row_id": "r-1", "task_id": "t-1", "video_duration": 5.3, "video_ratio": "1:1"}
    download = DownloadRowOperator(task_id="download", result=json.dumps(result), output_root="/tmp/x")
    download.execute({"run_id": "run-1"})  # type: ignore[arg-type]
    assert download.result == result  # what the map index template ({{ task.result.row_id }}) renders from
    assert seen[0].row_id == "r-1" and seen[0].video_ratio == "1:1"
