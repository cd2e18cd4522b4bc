"""The operators and the sensor against the emulator, including the deferral round trip through the trigger."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from typing import Any

import pytest
import requests
from airflow.sdk.exceptions import AirflowFailException, AirflowSensorTimeout, TaskDeferred
from dashscope_provider import get_provider_info
from dashscope_provider.exceptions import (
    DashScopeAPIError,
    DashScopeConfigError,
    DashScopeError,
    DashScopeResultExpired,
    DashScopeSubmissionUncertain,
    DashScopeTaskFailed,
)
from dashscope_provider.hooks.dashscope import DashScopeAsyncHook, DashScopeHook
from dashscope_provider.operators.dashscope import DashScopeVideoDownloadOperator, DashScopeVideoSynthesisOperator
from dashscope_provider.sensors.dashscope import DashScopeTaskSensor
from dashscope_provider.triggers.dashscope import DashScopeTaskTrigger

from tests.unit.conftest import BUCKET, CONN_ID, is_submit, logged_requests

pytestmark = pytest.mark.usefixtures("no_key_in_logs")


def _task(status: str, **extra: Any) -> dict[str, Any]:
    return {"task_id": "t-1", "status": status, **extra}


@pytest.fixture
def fast_trigger_hook(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        DashScopeTaskTrigger,
        "_hook",
        lambda self: DashScopeAsyncHook(self.dashscope_conn_id, retry_initial=0.05, retry_max=0.2),
    )


# -- provider metadata --------------------------------------------------------------------------------


def test_provider_info_registers_the_connection_type() -> None:
    info = get_provider_info()
    [conn_type] = info["connection-types"]
    assert conn_type["hook-class-name"] == "dashscope_provider.hooks.dashscope.DashScopeHook"
    assert conn_type["connection-type"] == "dashscope"
    modules = {role: info[role][0]["python-modules"][0] for role in ("hooks", "operators", "sensors", "triggers")}
    assert modules == {role: f"dashscope_provider.{role}.dashscope" for role in modules}
    from airflow.providers_manager import ProvidersManager
    from airflow.sdk.providers_manager_runtime import ProvidersManagerTaskRuntime

    hook_info = ProvidersManagerTaskRuntime().hooks["dashscope"]
    assert hook_info is not None
    assert hook_info.hook_class_name == "dashscope_provider.hooks.dashscope.DashScopeHook"
    assert hook_info.connection_id_attribute_name == "dashscope_conn_id"
    # The connection form, as the API server serves it (read from provider info, hook not imported).
    [ui] = [m for m in ProvidersManager().iter_connection_type_hook_ui_metadata() if m.connection_type == "dashscope"]
    assert ui.hook_name == "DashScope"
    assert ui.field_behaviour is not None
    assert ui.field_behaviour["relabeling"] == {"host": "Base URL", "password": "API key"}
    assert {"schema", "port", "login"} <= set(ui.field_behaviour["hidden_fields"])


# -- submit -------------------------------------------------------------------------------------------


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


# -- sensor -------------------------------------------------------------------------------------------


@pytest.mark.usefixtures("fast_trigger_hook")
def test_sensor_defers_then_completes_through_the_trigger(
    dashscope_conn: str, emo_input: dict[str, Any], make_hook: Any
) -> None:
    task_id = make_hook().submit_task("emo-v1", emo_input).task_id
    sensor = DashScopeTaskSensor(
        task_id="wait", dashscope_task_id=task_id, dashscope_conn_id=dashscope_conn, poll_interval=0.05, timeout=600
    )
    with pytest.raises(TaskDeferred) as info:
        sensor.execute({})  # type: ignore[arg-type]
    deferred = info.value
    assert deferred.method_name == "execute_complete"
    assert deferred.timeout is not None and deferred.timeout.total_seconds() == 600
    assert isinstance(deferred.trigger, DashScopeTaskTrigger)
    assert deferred.trigger.serialize()[1] == {
        "dashscope_task_id": task_id,
        "dashscope_conn_id": dashscope_conn,
        "poll_interval": 0.05,
        "timeout": None,
        "unknown_confirmations": 3,
    }

    async def first_event() -> Any:
        async for event in deferred.trigger.run():
            return event

    event = asyncio.run(asyncio.wait_for(first_event(), 30))
    # What the task runner does when the trigger fires.
    result = sensor.resume_execution("execute_complete", {"event": event.payload}, {})  # type: ignore[arg-type]
    assert (result["task_id"], result["status"], result["video_ratio"]) == (task_id, "SUCCEEDED", "1:1")
    assert result["video_url"]


def test_sensor_returns_at_once_when_already_terminal(
    dashscope_conn: str, emoji_input: dict[str, Any], make_hook: Any, wait_terminal: Any
) -> None:
    hook = make_hook()
    task_id = hook.submit_task("emoji-v1", emoji_input).task_id
    wait_terminal(hook, task_id)
    sensor = DashScopeTaskSensor(task_id="wait", dashscope_task_id=task_id, dashscope_conn_id=dashscope_conn)
    result = sensor.execute({})  # type: ignore[arg-type]  # no TaskDeferred
    assert (result["status"], result["video_ratio"]) == ("SUCCEEDED", "standard")


def test_sensor_poke_mode(dashscope_conn: str, emo_input: dict[str, Any], make_hook: Any) -> None:
    task_id = make_hook().submit_task("emo-v1", emo_input).task_id
    sensor = DashScopeTaskSensor(
        task_id="wait",
        dashscope_task_id=task_id,
        dashscope_conn_id=dashscope_conn,
        poll_interval="0.05",
        deferrable=False,
        timeout=60,
    )
    result = sensor.execute({})  # type: ignore[arg-type]
    assert result["status"] == "SUCCEEDED"
    assert sensor.poke_interval == 0.05  # the (rendered) string was applied


def test_sensor_poke_mode_failed_task(dashscope_conn: str, emo_input: dict[str, Any], make_hook: Any) -> None:
    bad = {**emo_input, "image_url": emo_input["image_url"] + "?emulator_error=InvalidFile.FullFace"}
    task_id = make_hook().submit_task("emo-v1", bad).task_id
    sensor = DashScopeTaskSensor(
        task_id="wait",
        dashscope_task_id=task_id,
        dashscope_conn_id=dashscope_conn,
        poll_interval=0.05,
        deferrable=False,
        timeout=60,
    )
    with pytest.raises(DashScopeTaskFailed) as info:
        sensor.execute({})  # type: ignore[arg-type]
    assert (info.value.task_id, info.value.status, info.value.code) == (task_id, "FAILED", "InvalidFile.FullFace")
    assert isinstance(info.value, AirflowFailException)


@pytest.mark.parametrize("status", ["FAILED", "CANCELED", "UNKNOWN"])
def test_sensor_execute_complete_failures(status: str) -> None:
    sensor = DashScopeTaskSensor(task_id="wait", dashscope_task_id="t-1")
    event = {
        "status": "failed",
        "task": _task(status, code="InvalidURL" if status == "FAILED" else None),
        "message": "ended",
    }
    with pytest.raises(DashScopeTaskFailed, match=status):
        sensor.execute_complete({}, event)  # type: ignore[arg-type]
    lenient = DashScopeTaskSensor(task_id="wait2", dashscope_task_id="t-1", fail_on_task_failure=False)
    assert lenient.execute_complete({}, event)["status"] == status  # type: ignore[arg-type]


def test_sensor_execute_complete_success_timeout_error() -> None:
    sensor = DashScopeTaskSensor(task_id="wait", dashscope_task_id="t-1")
    ok = sensor.execute_complete(
        {},
        {
            "status": "success",
            "task": _task("SUCCEEDED", video_url="http://v"),  # type: ignore[arg-type]
            "message": "ok",
        },
    )
    assert ok["video_url"] == "http://v"
    with pytest.raises(AirflowSensorTimeout):
        sensor.execute_complete({}, {"status": "timeout", "task": _task("RUNNING"), "message": "late"})  # type: ignore[arg-type]
    with pytest.raises(DashScopeError, match="InvalidApiKey"):
        sensor.execute_complete({}, {"status": "error", "task": None, "message": "401 InvalidApiKey"})  # type: ignore[arg-type]


def test_sensor_templates() -> None:
    assert set(DashScopeTaskSensor.template_fields) >= {"dashscope_task_id", "dashscope_conn_id", "poll_interval"}
    sensor = DashScopeTaskSensor(task_id="wait", dashscope_task_id="{{ params.t }}", poll_interval="{{ params.p }}")
    sensor.render_template_fields({"params": {"t": "t-9", "p": 7}})  # type: ignore[arg-type]
    assert (sensor.dashscope_task_id, float(sensor.poll_interval)) == ("t-9", 7.0)


# -- download -----------------------------------------------------------------------------------------


@pytest.fixture
def video_url(dashscope_conn: str, emoji_input: dict[str, Any], make_hook: Any, wait_terminal: Any) -> str:
    hook = make_hook()
    task = wait_terminal(hook, hook.submit_task("emoji-v1", emoji_input).task_id)
    assert task.video_url
    return task.video_url


def _expected(url: str) -> tuple[int, str]:
    body = requests.get(url, timeout=10).content
    return len(body), hashlib.sha256(body).hexdigest()


def test_download_operator_local(video_url: str, tmp_path: Path) -> None:
    destination = tmp_path / "out" / "emoji.mp4"
    op = DashScopeVideoDownloadOperator(task_id="download", video_url=video_url, destination=str(destination))
    result = op.execute({})  # type: ignore[arg-type]
    assert result == {"uri": str(destination), "size_bytes": _expected(video_url)[0], "sha256": _expected(video_url)[1]}
    assert destination.stat().st_size == result["size_bytes"]


def test_download_operator_s3(video_url: str, aws_conn: str, s3_client: Any) -> None:
    op = DashScopeVideoDownloadOperator(
        task_id="download", video_url=video_url, destination=f"s3://{BUCKET}/op/emoji.mp4", conn_id=aws_conn
    )
    result = op.execute({})  # type: ignore[arg-type]
    size, digest = _expected(video_url)
    assert result == {"uri": f"s3://{BUCKET}/op/emoji.mp4", "size_bytes": size, "sha256": digest}
    body = s3_client.get_object(Bucket=BUCKET, Key="op/emoji.mp4")["Body"].read()
    assert hashlib.sha256(body).hexdigest() == digest


def test_download_operator_expired(video_url: str, emulator: Any, tmp_path: Path) -> None:
    emulator.advance(2 * 86_400)
    op = DashScopeVideoDownloadOperator(task_id="download", video_url=video_url, destination=str(tmp_path / "x.mp4"))
    with pytest.raises(DashScopeResultExpired):
        op.execute({})  # type: ignore[arg-type]
    assert not (tmp_path / "x.mp4").exists()


def test_download_operator_needs_no_dashscope_connection(
    video_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The URL is pre-signed: no DashScope connection is read (there is no dashscope_default here).
    monkeypatch.delenv(f"AIRFLOW_CONN_{CONN_ID.upper()}")
    monkeypatch.delenv("AIRFLOW_CONN_DASHSCOPE_DEFAULT", raising=False)
    calls: list[str] = []
    monkeypatch.setattr(DashScopeHook, "get_connection", classmethod(lambda cls, conn_id: calls.append(conn_id)))
    op = DashScopeVideoDownloadOperator(task_id="download", video_url=video_url, destination=str(tmp_path / "v.mp4"))
    assert op.execute({})["size_bytes"] > 0  # type: ignore[arg-type]
    assert calls == []


# -- row operators: what a refused submit leaves in the ledger ------------------------------------------


def _submit_row_operator(conn_id: str, emoji_input: dict[str, Any], output_root: Path, row_id: str) -> Any:
    from talking_heads.operators import SubmitRowOperator
    from talking_heads.validation import RowRequest

    request = RowRequest(row_id=row_id, model="emoji-v1", **emoji_input)
    return SubmitRowOperator(
        task_id="submit", row={"request": request.model_dump()}, output_root=str(output_root), dashscope_conn_id=conn_id
    )


def test_submit_row_transient_refusal_is_left_to_task_retries(
    dashscope_conn: str, emulator: Any, emoji_input: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from talking_heads.ledger import RowLedger

    monkeypatch.setitem(DashScopeHook.__init__.__kwdefaults__, "retry_initial", 0.01)
    monkeypatch.setitem(DashScopeHook.__init__.__kwdefaults__, "retry_max", 0.02)
    for _ in range(5):  # as many 5xx as the hook has attempts
        emulator.force_next("submit_500")
    op = _submit_row_operator(dashscope_conn, emoji_input, tmp_path, "r-1")
    with pytest.raises(DashScopeAPIError) as info:
        op.execute({"run_id": "run-1"})  # type: ignore[arg-type]
    assert not isinstance(info.value, AirflowFailException)  # the Airflow task's retries apply
    state = RowLedger(str(tmp_path)).get("r-1")
    assert state is not None
    assert (state.state, state.code, state.billed) == ("failed", "InternalError", False)
    assert emulator.tasks() == []

    submission = op.execute({"run_id": "run-1"})  # the retry: nothing was created, so it submits again
    [task] = emulator.tasks()
    assert submission == {"row_id": "r-1", "task_id": task["task_id"], "conn_id": dashscope_conn}
    assert RowLedger(str(tmp_path)).get("r-1").state == "submitted"  # type: ignore[union-attr]


def test_submit_row_permanent_refusal_fails_without_retries(
    emulator: Any, emoji_input: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from talking_heads.ledger import RowLedger

    from tests.unit.conftest import conn_json

    monkeypatch.setenv("AIRFLOW_CONN_DASHSCOPE_WRONG_KEY", conn_json(emulator.base_url, password="sk-not-a-key"))
    op = _submit_row_operator("dashscope_wrong_key", emoji_input, tmp_path, "r-2")
    with pytest.raises(AirflowFailException, match="row r-2: submit refused"):
        op.execute({"run_id": "run-1"})  # type: ignore[arg-type]
    state = RowLedger(str(tmp_path)).get("r-2")
    assert state is not None
    assert (state.state, state.code, state.billed) == ("failed", "InvalidApiKey", False)


def test_submit_row_without_a_usable_connection_sends_nothing_and_is_not_uncertain(
    emulator: Any, emoji_input: dict[str, Any], tmp_path: Path
) -> None:
    from talking_heads.ledger import RowLedger

    op = _submit_row_operator("no_such_connection", emoji_input, tmp_path, "r-3")
    with pytest.raises(DashScopeConfigError, match="no_such_connection"):
        op.execute({"run_id": "run-1"})  # type: ignore[arg-type]
    state = RowLedger(str(tmp_path)).get("r-3")
    assert state is not None
    # Nothing can have been sent: a plain failure (the task's retries apply), not "uncertain".
    assert (state.state, state.code, state.billed) == ("failed", "DashScopeConfigError", False)
    assert emulator.request_log() == []


def test_rows_go_to_their_planned_key_and_keep_the_key_that_created_their_task(
    emoji_input: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dashscope_emulator import EmulatorServer, key_fingerprint
    from talking_heads.ledger import RowLedger
    from talking_heads.operators import SubmitRowOperator, WaitRowSensor
    from talking_heads.validation import RowRequest

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

        wait = WaitRowSensor(
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
