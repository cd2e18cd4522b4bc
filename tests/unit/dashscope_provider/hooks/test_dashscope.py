"""DashScopeHook over real HTTP: connection, submit, query, cancel and what is retried (against the emulator).
Face detection is in ``test_face_detection.py``."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from dashscope_provider.compat import AirflowFailException
from dashscope_provider.exceptions import (
    DashScopeAPIError,
    DashScopeConfigError,
    DashScopeRequestNotSent,
    DashScopeSubmissionUncertain,
)
from dashscope_provider.hooks.dashscope import DashScopeHook
from dashscope_provider.models import DEFAULT_BASE_URL, DashScopeTask, SubmittedTask

from tests.harness.services import QuietHandler, send_json, serve_http
from tests.unit.conftest import (
    CONN_ID,
    KEY,
    assert_no_key,
    conn_json,
    is_query,
    is_submit,
    logged_requests,
)

pytestmark = pytest.mark.usefixtures("no_key_in_logs")


# -- connection ---------------------------------------------------------------------------------------


def test_ui_field_behaviour_relabels_host_and_password() -> None:
    behaviour = DashScopeHook.get_ui_field_behaviour()
    assert {"schema", "port", "login"} <= set(behaviour["hidden_fields"])
    assert behaviour["relabeling"] == {"host": "Base URL", "password": "API key"}
    assert behaviour["placeholders"]["host"] == DEFAULT_BASE_URL


def test_connection_from_env_and_test_connection(dashscope_conn: str, make_hook: Any, emulator: Any) -> None:
    ok, message = make_hook(dashscope_conn).test_connection()
    assert ok, message
    assert emulator.base_url in message
    # The key travelled as a bearer token: the emulator recognised it.
    from dashscope_emulator import key_fingerprint

    assert logged_requests(emulator, is_query)[-1]["key_fingerprint"] == key_fingerprint(KEY)


def test_test_connection_with_a_wrong_key(emulator: Any, make_hook: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_DASHSCOPE_BAD", conn_json(emulator.base_url, "sk-wrong-key"))
    ok, message = make_hook("dashscope_bad").test_connection()
    assert not ok
    assert "401" in message and "InvalidApiKey" in message
    assert "sk-wrong-key" not in message


def test_connection_without_key(emulator: Any, make_hook: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    no_key = json.dumps({"conn_type": "dashscope", "host": emulator.base_url})
    monkeypatch.setenv("AIRFLOW_CONN_DASHSCOPE_NOKEY", no_key)
    with pytest.raises(DashScopeConfigError, match="no API key"):
        make_hook("dashscope_nokey").get_task("whatever")
    assert emulator.request_log() == []


def test_submit_with_an_unusable_connection_is_a_config_error(
    emulator: Any, make_hook: Any, emo_input: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Raised before anything is sent (the submit pacer, keyed by the connection's account, comes after).
    monkeypatch.setenv(
        "AIRFLOW_CONN_DASHSCOPE_NOKEY", json.dumps({"conn_type": "dashscope", "host": emulator.base_url})
    )
    for conn_id, match in (("dashscope_nokey", "no API key"), ("no_such_connection", "no_such_connection")):
        with pytest.raises(DashScopeConfigError, match=match):
            make_hook(conn_id).submit_task("emo-v1", emo_input)
    assert emulator.request_log() == []


# -- submit -------------------------------------------------------------------------------------------


def test_submit_emo_v1(dashscope_conn: str, make_hook: Any, emulator: Any, emo_input: dict[str, Any]) -> None:
    submitted = make_hook().submit_task("emo-v1", emo_input, {"style_level": "active"})
    assert isinstance(submitted, SubmittedTask)
    assert submitted.task_status == "PENDING"
    assert submitted.request_id
    [task] = emulator.tasks()
    assert task["task_id"] == submitted.task_id
    assert task["model"] == "emo-v1"
    assert task["parameters"] == {"style_level": "active"}


def test_submit_emoji_v1(dashscope_conn: str, make_hook: Any, emulator: Any, emoji_input: dict[str, Any]) -> None:
    submitted = make_hook().submit_task("emoji-v1", emoji_input)
    [task] = emulator.tasks()
    assert (task["task_id"], task["model"], task["input"]["driven_id"]) == (
        submitted.task_id,
        "emoji-v1",
        "mengwa_kaixin",
    )


MSG_FORMAT = (
    "The request is missing required parameters or in a wrong format, please check the parameters that you send.."
)


@pytest.mark.parametrize(
    ("change", "status", "code", "message"),
    [
        pytest.param({"input": {"image_url": "x"}}, 400, "InvalidParameter", MSG_FORMAT, id="missing-fields"),
        pytest.param(
            {"parameters": {"style_level": "wild"}},
            400,
            "InvalidParameter",
            "The style_level is invalid.",
            id="bad-style-level",
        ),
        pytest.param({"model": "emo-v9"}, 400, "InvalidParameter", "Model not exist.", id="unknown-model"),
        pytest.param(
            {"image_url": "ftp://example.com/a.png"},
            400,
            "InvalidURL",
            "Required URL is missing or invalid, please check the request URL.",
            id="bad-url",
        ),
        pytest.param({"key": "sk-wrong-key"}, 401, "InvalidApiKey", "Invalid API-key provided.", id="bad-key"),
    ],
)
def test_submit_errors_map_to_api_error(
    change: dict[str, Any],
    status: int,
    code: str,
    message: str,
    emulator: Any,
    make_hook: Any,
    emo_input: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", conn_json(emulator.base_url, change.get("key", KEY)))
    task_input = change.get("input", {**emo_input, **{k: v for k, v in change.items() if k == "image_url"}})
    with pytest.raises(DashScopeAPIError) as info:
        make_hook().submit_task(change.get("model", "emo-v1"), task_input, change.get("parameters"))
    error = info.value
    assert (error.status_code, error.code, error.message) == (status, code, message)
    assert error.request_id
    assert not error.retryable
    assert error.request_id in str(error) and code in str(error)
    assert len(logged_requests(emulator, is_submit)) == 1  # a refused request is not sent again
    assert emulator.tasks() == []
    assert_no_key(error)
    assert "sk-wrong-key" not in str(error)


@pytest.mark.parametrize(
    ("fault", "status", "code"), [("submit_500", 500, "InternalError"), ("submit_503", 503, "ServiceUnavailable")]
)
def test_submit_5xx_with_error_body_is_retried_until_attempts_run_out(
    fault: str, status: int, code: str, dashscope_conn: str, make_hook: Any, emulator: Any, emo_input: dict[str, Any]
) -> None:
    for _ in range(3):
        emulator.force_next(fault)
    with pytest.raises(DashScopeAPIError) as info:
        make_hook(max_attempts=3).submit_task("emo-v1", emo_input)
    assert (info.value.status_code, info.value.code) == (status, code)
    assert info.value.retryable and info.value.request_id
    assert len(logged_requests(emulator, is_submit, 3)) == 3
    assert emulator.tasks() == []


def test_submit_500_is_retried_and_creates_exactly_one_task(
    dashscope_conn: str, make_hook: Any, emulator: Any, emo_input: dict[str, Any], wait_terminal: Any
) -> None:
    emulator.force_next("submit_500")
    hook = make_hook()
    submitted = hook.submit_task("emo-v1", emo_input)
    assert [r["status"] for r in logged_requests(emulator, is_submit, 2)] == [500, 200]
    assert [t["task_id"] for t in emulator.tasks()] == [submitted.task_id]
    assert wait_terminal(hook, submitted.task_id).status == "SUCCEEDED"
    assert [line["task_id"] for line in emulator.billing()] == [submitted.task_id]


#: No client-side pacing of emo-v1 submits: as if the calls came from several processes of one account,
#: which share no limiter, so the service's own limit (5 per second) answers 429.
UNPACED = {"emo-v1": 1000.0}


def test_throttled_submits_are_retried_and_succeed(
    dashscope_conn: str, make_hook: Any, emulator: Any, emo_input: dict[str, Any]
) -> None:
    # 8 submissions back to back: the emulator allows 5 per second per account, so some get 429 and wait.
    hook = make_hook(max_attempts=8, retry_initial=0.2, retry_max=1.0, submit_qps=UNPACED)
    ids = [hook.submit_task("emo-v1", emo_input).task_id for _ in range(8)]
    statuses = [r["status"] for r in logged_requests(emulator, is_submit, 9)]
    assert 429 in statuses
    assert statuses.count(200) == 8
    assert sorted(t["task_id"] for t in emulator.tasks()) == sorted(ids)
    assert hook.throttled == statuses.count(429)  # every 429 it retried through, for the caller to record


def test_throttling_does_not_use_up_the_attempts_for_real_failures(
    dashscope_conn: str, make_hook: Any, emulator: Any, emo_input: dict[str, Any]
) -> None:
    # One attempt for real failures, but 429s are retried (for up to throttle_timeout): a burst of
    # throttled answers must not turn good submissions into refused rows.
    hook = make_hook(max_attempts=1, retry_initial=0.2, retry_max=1.0, throttle_timeout=60, submit_qps=UNPACED)
    ids = [hook.submit_task("emo-v1", emo_input).task_id for _ in range(8)]
    statuses = [r["status"] for r in logged_requests(emulator, is_submit, 9)]
    assert 429 in statuses
    assert statuses.count(200) == 8
    assert sorted(t["task_id"] for t in emulator.tasks()) == sorted(ids)
    emulator.force_next("submit_500")  # a real failure still counts: one attempt, then the error
    with pytest.raises(DashScopeAPIError) as info:
        hook.submit_task("emo-v1", emo_input)
    assert (info.value.status_code, info.value.code) == (500, "InternalError")


def test_throttled_submit_maps_to_api_error_when_throttle_timeout_passes(
    dashscope_conn: str, make_hook: Any, emulator: Any, emo_input: dict[str, Any]
) -> None:
    hook = make_hook(max_attempts=1, throttle_timeout=0, submit_qps=UNPACED)
    with pytest.raises(DashScopeAPIError) as info:  # the 6th submit within a second is refused
        for _ in range(6):
            hook.submit_task("emo-v1", emo_input)
    assert (info.value.status_code, info.value.code) == (429, "Throttling.RateQuota")
    assert info.value.message == "Requests rate limit exceeded, please try again later."
    assert info.value.retryable and info.value.request_id
    assert len(emulator.tasks()) == 5
    assert hook.throttled == 0  # raised, not retried through


@pytest.mark.parametrize("fault", ["drop_submit", "submit_502_no_body"])
def test_lost_submit_answer_is_uncertain_and_never_resent(
    fault: str, dashscope_conn: str, make_hook: Any, emulator: Any, emo_input: dict[str, Any]
) -> None:
    emulator.force_next(fault)
    with pytest.raises(DashScopeSubmissionUncertain) as info:
        make_hook(max_attempts=5).submit_task("emo-v1", emo_input, request_fingerprint="row-7")
    error = info.value
    assert isinstance(error, AirflowFailException)  # Airflow's own retries won't resend it either
    assert not error.request_not_sent
    assert error.request_fingerprint == "row-7" and "row-7" in str(error)
    if fault == "submit_502_no_body":
        assert error.status_code == 502
    # Exactly one request went out, and the service did create a task: resending would pay twice.
    assert len(logged_requests(emulator, is_submit)) == 1
    assert len(emulator.tasks()) == 1
    assert_no_key(error)


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A TCP server that reads requests and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    accepted: list[socket.socket] = []

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            accepted.append(conn)

    threading.Thread(target=serve, daemon=True).start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    listener.close()
    for conn in accepted:
        conn.close()


def test_submit_read_timeout_is_uncertain(
    silent_server: str, make_hook: Any, emo_input: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", conn_json(silent_server))
    with pytest.raises(DashScopeSubmissionUncertain, match="ReadTimeout") as info:
        make_hook(timeout=(2.0, 0.3)).submit_task("emo-v1", emo_input)
    assert_no_key(info.value)


def test_refused_connection_is_retried_then_not_sent(
    make_hook: Any, emo_input: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", conn_json(f"http://127.0.0.1:{closed_port}"))
    attempts: list[int] = []
    hook = make_hook(max_attempts=3)
    original = hook.get_conn

    def counting_get_conn(*args: Any, **kwargs: Any) -> Any:
        attempts.append(1)
        return original(*args, **kwargs)

    hook.get_conn = counting_get_conn
    with pytest.raises(DashScopeRequestNotSent) as info:
        hook.submit_task("emo-v1", emo_input)
    assert info.value.request_not_sent
    assert len(attempts) == 3
    assert_no_key(info.value)


# -- query --------------------------------------------------------------------------------------------


def test_get_task_emo_v1_shape(
    emulator_100x: Any, make_hook: Any, emo_input: dict[str, Any], wait_terminal: Any
) -> None:
    hook = make_hook()
    task_id = hook.submit_task("emo-v1", emo_input).task_id
    pending = hook.get_task(task_id)
    assert pending.status in ("PENDING", "RUNNING") and not pending.is_terminal
    task = wait_terminal(hook, task_id)
    assert task.status == "SUCCEEDED" and task.is_terminal and task.succeeded
    assert task.video_url and "/results/" in task.video_url  # from output.results.video_url
    assert isinstance(task.video_duration, float) and task.video_duration > 0
    assert task.video_ratio == "1:1"
    assert task.submit_time and task.scheduled_time and task.end_time and task.request_id
    assert task.code is None and task.message is None
    assert DashScopeTask.from_dict(json.loads(json.dumps(task.to_dict()))) == task


def test_get_task_emoji_v1_shape(
    dashscope_conn: str, make_hook: Any, emoji_input: dict[str, Any], wait_terminal: Any, emulator: Any
) -> None:
    hook = make_hook()
    task = wait_terminal(hook, hook.submit_task("emoji-v1", emoji_input).task_id)
    assert task.status == "SUCCEEDED"
    assert task.video_url and "/results/" in task.video_url  # from output.video_url
    [billed] = emulator.billing()
    assert isinstance(billed["video_duration"], int)  # the service's integer seconds ...
    assert task.video_duration == float(billed["video_duration"])  # ... normalised to a float
    assert task.video_ratio == "standard"


def test_get_task_failed(dashscope_conn: str, make_hook: Any, emo_input: dict[str, Any], wait_terminal: Any) -> None:
    hook = make_hook()
    bad = {**emo_input, "image_url": emo_input["image_url"] + "?emulator_error=InvalidFile.FacePose"}
    task = wait_terminal(hook, hook.submit_task("emo-v1", bad).task_id)
    assert (task.status, task.code) == ("FAILED", "InvalidFile.FacePose")
    assert task.message and task.video_url is None and task.video_duration is None


def test_get_task_unknown_and_expired(
    dashscope_conn: str, make_hook: Any, emoji_input: dict[str, Any], emulator: Any
) -> None:
    hook = make_hook()
    unknown = hook.get_task("no-such-task")
    assert (unknown.task_id, unknown.status, unknown.is_terminal) == ("no-such-task", "UNKNOWN", True)
    task_id = hook.submit_task("emoji-v1", emoji_input).task_id
    emulator.advance(25 * 3600)  # task ids live 24 h
    assert hook.get_task(task_id).status == "UNKNOWN"


def test_get_task_retries_5xx_and_dropped_connections(dashscope_conn: str, make_hook: Any, emulator: Any) -> None:
    for fault in ("query_500", "drop_query", "query_503"):
        emulator.force_next(fault)
    task = make_hook(max_attempts=4).get_task("no-such-task")
    assert task.status == "UNKNOWN"
    assert [r["status"] for r in logged_requests(emulator, is_query, 4)] == [500, None, 503, 200]


def test_get_task_does_not_retry_401(emulator: Any, make_hook: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", conn_json(emulator.base_url, "sk-wrong-key"))
    with pytest.raises(DashScopeAPIError) as info:
        make_hook().get_task("no-such-task")
    assert (info.value.status_code, info.value.code) == (401, "InvalidApiKey")
    assert len(logged_requests(emulator, is_query)) == 1


# -- cancel -------------------------------------------------------------------------------------------


def test_cancel_pending_task_only(
    slow_emulator: Any, make_hook: Any, emoji_input: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Real-time clock: the first task runs for many seconds, so the second one waits PENDING in the queue.
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", conn_json(slow_emulator.base_url))
    hook = make_hook()
    running = hook.submit_task("emoji-v1", emoji_input).task_id
    queued = hook.submit_task("emoji-v1", emoji_input).task_id
    assert hook.get_task(queued).status == "PENDING"
    assert hook.cancel_task(queued) is True
    assert hook.get_task(queued).status == "CANCELED"
    assert hook.cancel_task(queued) is True  # refused by the service, but it is canceled
    assert hook.cancel_task(running) is False  # RUNNING: the service refuses (400 UnsupportedOperation)
    assert hook.cancel_task("no-such-task") is False
    assert hook.get_task(running).status == "RUNNING"


# -- HttpHook's surface --------------------------------------------------------------------------------


class _Recorder(QuietHandler):
    """Answers every request with an UNKNOWN task and records what it received."""

    seen: list[dict[str, Any]] = []

    def do_GET(self) -> None:
        self.seen.append({"path": self.path, "headers": dict(self.headers)})
        send_json(self, 200, {"request_id": "r", "output": {"task_id": "t", "task_status": "UNKNOWN"}})


@pytest.fixture
def recorder() -> Iterator[str]:
    _Recorder.seen = []
    with serve_http(_Recorder) as url:
        yield url


def test_session_is_httphooks_with_a_bearer_token(
    recorder: str, make_hook: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # login is ignored (no basic auth); extras are HttpHook's: unknown keys become headers, timeout is read.
    conn = {
        "conn_type": "dashscope",
        "host": f"{recorder}/api/v1/",
        "login": "someone",
        "password": KEY,
        "extra": {"X-Team": "video", "timeout": 7},
    }
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", json.dumps(conn))
    hook = make_hook()
    assert hook.url_from_endpoint("api/v1/tasks/t") == f"{recorder}/api/v1/tasks/t"  # /api/v1 not doubled
    assert hook.get_task("t").status == "UNKNOWN"
    [request] = _Recorder.seen
    assert request["path"] == "/api/v1/tasks/t"
    assert request["headers"]["Authorization"] == f"Bearer {KEY}"
    assert request["headers"]["X-Team"] == "video"
    assert hook.base_url == recorder
    assert hook._request_timeout() == 7
    assert hook.keep_alive_adapter is not None  # HttpHook's TCP keep-alive, on by default


def test_hook_reads_its_connection_once(recorder: str, make_hook: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", conn_json(recorder))
    hook = make_hook()
    for _ in range(3):
        hook.get_task("t")
    assert hook.dashscope_connection is hook.dashscope_connection
    assert len(_Recorder.seen) == 3
