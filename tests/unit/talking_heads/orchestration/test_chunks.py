"""Chunk mode (talking_heads.orchestration.chunks, RowChunkTrigger) against the emulator: each row of a chunk
is submitted, waited for and stored as the row steps do, its failure recorded in its ledger without sinking
the other rows, and a repeated try follows what the rows' records say."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import jinja2
import pytest
from airflow.sdk.module_loading import import_string
from airflow.triggers.base import TaskSuccessEvent, TriggerEvent
from dashscope_provider.compat import AirflowFailException, AirflowSensorTimeout
from dashscope_provider.exceptions import DashScopeAPIError
from dashscope_provider.hooks.dashscope import DashScopeHook
from dashscope_provider.triggers.dashscope import DashScopeTaskTrigger
from talking_heads.orchestration.chunks import (
    ROWS_PER_TASK_ENV,
    DownloadChunkOperator,
    SubmitChunkOperator,
    WaitChunkOperator,
    chunk_label,
    chunk_rows,
    rows_per_task,
)
from talking_heads.orchestration.triggers import RowChunkTrigger
from talking_heads.row.ledger import RowLedger
from talking_heads.row.payloads import WorkItem
from talking_heads.row.states import RowRecord
from talking_heads.table.validation import RowRequest

from tests.harness.airflow_compat import TaskDeferred
from tests.unit.conftest import CONN_ID
from tests.unit.dashscope_provider.conftest import fast_hook

pytestmark = pytest.mark.usefixtures("no_key_in_logs", "quick_retries")


@pytest.fixture
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Short back-offs for the hooks the operators (sync) and triggers (async) build with production ones."""
    monkeypatch.setitem(DashScopeHook.__init__.__kwdefaults__, "retry_initial", 0.01)
    monkeypatch.setitem(DashScopeHook.__init__.__kwdefaults__, "retry_max", 0.02)
    monkeypatch.setattr(DashScopeTaskTrigger, "_hook", lambda self: fast_hook(self.dashscope_conn_id))


def run_trigger(trigger: Any, limit: float = 30.0) -> list[TriggerEvent]:
    """Run the trigger's async generator to its end in a fresh event loop; return every event."""

    async def collect() -> list[TriggerEvent]:
        return [event async for event in trigger.run()]

    return asyncio.run(asyncio.wait_for(collect(), limit))


def _item(row_id: str, emo_input: dict[str, Any], conn_id: str | None = CONN_ID) -> dict[str, Any]:
    return WorkItem(RowRequest(row_id=row_id, model="emo-v1", **emo_input), conn_id).to_dict()


def _submit(rows: list[dict[str, Any]], root: Path) -> SubmitChunkOperator:
    return SubmitChunkOperator(task_id="submit", rows=rows, output_root=str(root), dashscope_conn_id=CONN_ID)


def _state(root: Path | str, row_id: str) -> RowRecord:
    state = RowLedger(str(root)).get(row_id)
    assert state is not None, f"row {row_id} has no record"
    return state


def _put(root: Path, row_id: str, status: str, task_id: str, **fields: Any) -> None:
    RowLedger(str(root)).put(RowRecord(row_id=row_id, status=status, task_id=task_id, conn_id=CONN_ID, **fields))  # type: ignore[arg-type]


def _sub(row_id: str, task_id: str) -> dict[str, Any]:
    return {"row_id": row_id, "task_id": task_id, "conn_id": CONN_ID}


# -- chunk_rows, rows_per_task, chunk_label --------------------------------------------------------------


def test_chunks_hold_up_to_k_rows_of_one_connection_in_table_order() -> None:
    items = [{"row_id": r, "conn_id": c} for r, c in zip("abcdefg", "xyxxyxz", strict=True)]
    chunks = chunk_rows(items, 2)
    assert [[i["row_id"] for i in chunk] for chunk in chunks] == [["a", "c"], ["b", "e"], ["d", "f"], ["g"]]
    assert all(len({i["conn_id"] for i in chunk}) == 1 for chunk in chunks)
    assert chunk_rows(items, 1) == [[i] for i in items]
    assert chunk_rows(items, 0) == chunk_rows(items, 1)  # fewer than one row per chunk means one
    assert chunk_rows([], 3) == []


@pytest.mark.parametrize(("raw", "rows"), [(None, 1), ("", 1), (" 4 ", 4), ("0", 1), ("-3", 1)])
def test_rows_per_task_reads_the_variable_at_least_one(
    raw: str | None, rows: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    if raw is None:
        monkeypatch.delenv(ROWS_PER_TASK_ENV, raising=False)
    else:
        monkeypatch.setenv(ROWS_PER_TASK_ENV, raw)
    assert rows_per_task() == rows


def test_rows_per_task_refuses_garbage_naming_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ROWS_PER_TASK_ENV, "lots")
    with pytest.raises(ValueError, match=f"{ROWS_PER_TASK_ENV}.*'lots'"):
        rows_per_task()


def test_chunk_label_renders_the_row_ids_or_the_empty_text() -> None:
    template = jinja2.Environment().from_string(chunk_label("rows", "no rows"))
    task = SimpleNamespace(rows=[{"row_id": "r-1"}, {"row_id": "r-2"}])
    assert template.render(task=task) == "r-1 r-2"
    assert template.render(task=SimpleNamespace(rows=[])) == "no rows"
    quoted = jinja2.Environment().from_string(chunk_label("rows", "the row's gone"))
    assert quoted.render(task=SimpleNamespace(rows=[])) == "the row's gone"
    many = template.render(task=SimpleNamespace(rows=[{"row_id": f"row-{n:04d}"} for n in range(100)]))
    assert many.startswith("row-0000 row-0001") and len(many) <= 250


# -- SubmitChunkOperator ----------------------------------------------------------------------------------


def test_submit_chunk_records_a_refused_row_failed_and_sends_the_others_once(
    dashscope_conn: str, emulator: Any, emo_input: dict[str, Any], tmp_path: Path
) -> None:
    emulator.force_next("submit_inspection")  # 400 DataInspectionFailed for the first row: no task
    op = _submit([_item(r, emo_input) for r in ("r-1", "r-2", "r-3")], tmp_path)
    submissions = op.execute({"run_id": "run-1"})  # type: ignore[arg-type]

    tasks = {t["task_id"] for t in emulator.tasks()}
    assert [s["row_id"] for s in submissions] == ["r-2", "r-3"]
    assert {s["task_id"] for s in submissions} == tasks and len(tasks) == 2
    refused = _state(tmp_path, "r-1")
    assert (refused.status, refused.code, refused.billed, refused.task_id) == (
        "failed",
        "DataInspectionFailed",
        False,
        None,
    )
    assert all(_state(tmp_path, s["row_id"]).status == "submitted" for s in submissions)
    assert {line["task_id"] for line in emulator.billing()} <= tasks  # nothing billed for the refused row

    again = op.execute({"run_id": "run-1"})  # a repeated try (a clear): the submitted rows are followed
    assert [s for s in again if s["row_id"] != "r-1"] == submissions
    [resent] = [t for t in emulator.tasks() if t["task_id"] not in tasks]  # only the refused row, unbilled
    assert [s["task_id"] for s in again if s["row_id"] == "r-1"] == [resent["task_id"]]


def test_submit_chunk_where_every_row_is_refused_transiently_raises_for_airflow_retries(
    dashscope_conn: str, emulator: Any, emo_input: dict[str, Any], tmp_path: Path
) -> None:
    for _ in range(2 * 5):  # as many 5xx as the hook has attempts, for each row
        emulator.force_next("submit_500")
    op = _submit([_item("r-1", emo_input), _item("r-2", emo_input)], tmp_path)
    with pytest.raises(DashScopeAPIError) as info:
        op.execute({"run_id": "run-1"})  # type: ignore[arg-type]
    assert not isinstance(info.value, AirflowFailException)  # the Airflow task's retries apply
    assert emulator.tasks() == []
    for row_id in ("r-1", "r-2"):
        state = _state(tmp_path, row_id)
        assert (state.status, state.code, state.billed) == ("failed", "InternalError", False)


def test_submit_chunk_with_one_row_sent_waits_for_it_despite_a_transient_refusal(
    dashscope_conn: str, emulator: Any, emo_input: dict[str, Any], tmp_path: Path
) -> None:
    for _ in range(5):  # the first row's every attempt
        emulator.force_next("submit_500")
    op = _submit([_item("r-1", emo_input), _item("r-2", emo_input)], tmp_path)
    [submission] = op.execute({"run_id": "run-1"})  # type: ignore[arg-type]
    [task] = emulator.tasks()
    assert submission == _sub("r-2", task["task_id"])
    assert _state(tmp_path, "r-2").status == "submitted"
    assert (_state(tmp_path, "r-1").status, _state(tmp_path, "r-1").billed) == ("failed", False)


# -- RowChunkTrigger --------------------------------------------------------------------------------------


def test_chunk_trigger_serialize_round_trip_names_an_importable_class() -> None:
    trigger = RowChunkTrigger([_sub("r-1", "t-1"), _sub("r-2", "t-2")], 0.5, output_root="s3://bucket/out")
    classpath, kwargs = trigger.serialize()
    assert classpath == "talking_heads.orchestration.triggers.RowChunkTrigger"
    assert kwargs["submissions"] == [_sub("r-1", "t-1"), _sub("r-2", "t-2")]
    assert (kwargs["output_root"], kwargs["storage_conn_id"], kwargs["poll_interval"]) == ("s3://bucket/out", None, 0.5)
    assert "sk-" not in json.dumps(kwargs)
    assert import_string(classpath)(**kwargs).serialize() == (classpath, kwargs)


def _submitted_tasks(make_hook: Any, root: Path, inputs: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Submit each row's input straight to the emulator and record it ``submitted``, as the submit step does."""
    subs = []
    for row_id, api_input in inputs.items():
        task_id = make_hook().submit_task("emo-v1", api_input).task_id
        _put(root, row_id, "submitted", task_id)
        subs.append(_sub(row_id, task_id))
    return subs


def test_chunk_trigger_records_every_row_and_ends_the_wait_with_their_results(
    dashscope_conn: str, emulator: Any, make_hook: Any, emo_input: dict[str, Any], tmp_path: Path
) -> None:
    subs = _submitted_tasks(make_hook, tmp_path, {"r-1": emo_input, "r-2": emo_input})
    [event] = run_trigger(RowChunkTrigger(subs, 0.05, output_root=str(tmp_path)))

    assert isinstance(event, TaskSuccessEvent)
    results = event.xcoms["return_value"]  # type: ignore[index]
    assert sorted(r["row_id"] for r in results) == ["r-1", "r-2"]
    for result in results:
        state = _state(tmp_path, result["row_id"])
        assert (state.status, state.billed, state.task_id) == ("generated", True, result["task_id"])
        assert result == {**result, "video_duration": state.video_duration, "video_ratio": state.video_ratio}
    assert len(emulator.billing()) == 2
    assert "http" not in json.dumps(event.xcoms)  # the signed URLs stay in the ledger


def test_chunk_trigger_records_a_task_failed_at_the_service_and_returns_only_the_good_row(
    dashscope_conn: str, make_hook: Any, emo_input: dict[str, Any], tmp_path: Path
) -> None:
    bad = {**emo_input, "image_url": emo_input["image_url"] + "?emulator_error=InvalidFile.Content"}
    subs = _submitted_tasks(make_hook, tmp_path, {"r-good": emo_input, "r-bad": bad})
    [event] = run_trigger(RowChunkTrigger(subs, 0.05, output_root=str(tmp_path)))

    assert isinstance(event, TaskSuccessEvent)
    assert [r["row_id"] for r in event.xcoms["return_value"]] == ["r-good"]  # type: ignore[index]
    assert _state(tmp_path, "r-good").status == "generated"
    failed = _state(tmp_path, "r-bad")
    assert (failed.status, failed.code, failed.billed) == ("failed", "InvalidFile.Content", False)


def test_chunk_trigger_that_cannot_write_the_ledger_hands_the_rows_to_the_resumed_wait(
    dashscope_conn: str, make_hook: Any, emo_input: dict[str, Any], tmp_path: Path
) -> None:
    subs = [_sub(r, make_hook().submit_task("emo-v1", emo_input).task_id) for r in ("r-1", "r-2")]
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    [event] = run_trigger(RowChunkTrigger(subs, 0.05, output_root=str(blocked)))

    assert not isinstance(event, TaskSuccessEvent)
    rows = event.payload["rows"]
    assert sorted(rows) == ["r-1", "r-2"]
    assert all(rows[s["row_id"]]["task"]["task_id"] == s["task_id"] for s in subs)
    assert {payload["status"] for payload in rows.values()} == {"success"}


# -- WaitChunkOperator ------------------------------------------------------------------------------------


def _wait(root: Path, subs: list[dict[str, Any]]) -> WaitChunkOperator:
    return WaitChunkOperator(task_id="wait", submissions=subs, output_root=str(root), poll_interval="0.05")


def test_wait_chunk_returns_at_once_when_every_rows_end_is_recorded(tmp_path: Path) -> None:
    _put(tmp_path, "r-1", "generated", "t-1", video_url="http://v/1", video_duration=5.0, video_ratio="1:1")
    _put(tmp_path, "r-2", "failed", "t-2", code="InvalidFile.Content")
    _put(tmp_path, "r-3", "succeeded", "t-3", video_duration=3.0, video_ratio="3:4")
    results = _wait(tmp_path, [_sub("r-1", "t-1"), _sub("r-2", "t-2"), _sub("r-3", "t-3")]).execute({})  # type: ignore[arg-type]
    assert results == [
        {"row_id": "r-1", "task_id": "t-1", "video_duration": 5.0, "video_ratio": "1:1"},
        {"row_id": "r-3", "task_id": "t-3", "video_duration": 3.0, "video_ratio": "3:4"},
    ]


def test_wait_chunk_defers_to_a_trigger_for_the_pending_rows_only(tmp_path: Path) -> None:
    _put(tmp_path, "r-1", "generated", "t-1", video_url="http://v/1")
    _put(tmp_path, "r-2", "submitted", "t-2")
    _put(tmp_path, "r-3", "generated", "t-old", video_url="http://v/3")  # another task's end: still pending
    with pytest.raises(TaskDeferred) as deferred:
        _wait(tmp_path, [_sub("r-1", "t-1"), _sub("r-2", "t-2"), _sub("r-3", "t-3")]).execute({})  # type: ignore[arg-type]
    trigger = deferred.value.trigger
    assert isinstance(trigger, RowChunkTrigger)
    assert trigger.submissions == [_sub("r-2", "t-2"), _sub("r-3", "t-3")]
    assert (trigger.output_root, trigger.storage_conn_id, trigger.poll_interval) == (str(tmp_path), None, 0.05)
    assert deferred.value.method_name == "execute_complete"


def test_a_retried_wait_ended_by_its_trigger_still_lists_the_rows_an_earlier_try_saw_end(
    dashscope_conn: str, make_hook: Any, emo_input: dict[str, Any], tmp_path: Path
) -> None:
    """Try 1 recorded r-1's end and raised for r-2 (a timeout, say); try 2 waits for r-2 alone, and its
    trigger's result, what the download stores, lists r-1 too."""
    _put(tmp_path, "r-1", "generated", "t-1", video_url="http://v/1", video_duration=5.0, video_ratio="1:1")
    [pending] = _submitted_tasks(make_hook, tmp_path, {"r-2": emo_input})
    with pytest.raises(TaskDeferred) as deferred:
        _wait(tmp_path, [_sub("r-1", "t-1"), pending]).execute({})  # type: ignore[arg-type]
    trigger = deferred.value.trigger
    assert trigger.submissions == [pending]
    [event] = run_trigger(import_string(trigger.serialize()[0])(**trigger.serialize()[1]))  # as the triggerer does

    assert isinstance(event, TaskSuccessEvent)
    assert [r["row_id"] for r in event.xcoms["return_value"]] == ["r-1", "r-2"]  # type: ignore[index]


def test_wait_chunk_resumed_with_a_timed_out_row_records_the_others_then_raises(tmp_path: Path) -> None:
    for row_id, task_id in (("r-1", "t-1"), ("r-2", "t-2"), ("r-3", "t-3")):
        _put(tmp_path, row_id, "submitted", task_id)
    done = {"task_id": "t-2", "status": "SUCCEEDED", "video_url": "http://v/2", "video_duration": 4.0}
    bad = {"task_id": "t-3", "status": "FAILED", "code": "InvalidFile.Value", "message": "unclear"}
    event = {
        "rows": {
            "r-1": {"status": "timeout", "task": None, "message": "DashScope task t-1 still PENDING"},
            "r-2": {"status": "success", "task": done, "message": ""},
            "r-3": {"status": "failed", "task": bad, "message": ""},
        }
    }
    wait = _wait(tmp_path, [_sub("r-1", "t-1"), _sub("r-2", "t-2"), _sub("r-3", "t-3")])
    with pytest.raises(AirflowSensorTimeout, match="t-1 still PENDING"):
        wait.execute_complete({}, event)  # type: ignore[arg-type]
    assert _state(tmp_path, "r-1").status == "submitted"
    assert (_state(tmp_path, "r-2").status, _state(tmp_path, "r-2").billed) == ("generated", True)
    assert (_state(tmp_path, "r-3").status, _state(tmp_path, "r-3").code) == ("failed", "InvalidFile.Value")


# -- DownloadChunkOperator --------------------------------------------------------------------------------


def test_download_chunk_stores_the_other_rows_then_raises_and_a_retry_copies_only_the_rest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    results = []
    for n in (1, 2, 3):
        _put(tmp_path, f"r-{n}", "generated", f"t-{n}", video_url=f"http://v/{n}", video_duration=5.0)
        results.append({"row_id": f"r-{n}", "task_id": f"t-{n}", "video_duration": 5.0, "video_ratio": "1:1"})
    copied: list[str] = []

    def transfer(video_url: str, destination: Any) -> dict[str, Any]:
        if video_url.endswith("/2") and not copied.count(video_url):
            copied.append(video_url)
            raise ConnectionError("the store hung up")
        copied.append(video_url)
        return {"uri": str(destination), "size_bytes": 10, "sha256": "ab" * 32}

    download = DownloadChunkOperator(task_id="download", results=json.dumps(results), output_root=str(tmp_path))
    monkeypatch.setattr(download, "_transfer", transfer)
    with pytest.raises(ConnectionError, match="hung up"):
        download.execute({"run_id": "run-1"})  # type: ignore[arg-type]
    assert download.results == results  # the JSON string of a trigger-ended wait, parsed
    assert [_state(tmp_path, f"r-{n}").status for n in (1, 2, 3)] == ["succeeded", "generated", "succeeded"]
    assert _state(tmp_path, "r-2").code == "StoreFailed"

    stored = download.execute({"run_id": "run-1"})  # type: ignore[arg-type]
    assert copied == ["http://v/1", "http://v/2", "http://v/3", "http://v/2"]  # r-1 and r-3 not copied again
    assert [s["row_id"] for s in stored] == ["r-1", "r-2", "r-3"]
    assert [_state(tmp_path, f"r-{n}").status for n in (1, 2, 3)] == ["succeeded"] * 3
    assert _state(tmp_path, "r-2").video_uri and _state(tmp_path, "r-2").code is None
