"""The HTTP layer (:mod:`dashscope_emulator.handler`): injected faults as the client sees them, admin endpoints."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import pytest
import requests
from dashscope_emulator import EmulatorServer, key_fingerprint

from tests.unit.dashscope_emulator.helpers import Client, assert_error, detect_body, emo_body, emoji_body


def _count_tasks(server: EmulatorServer, api_key: str) -> int:
    return sum(t["key_fingerprint"] == key_fingerprint(api_key) for t in server.tasks())


def test_drop_submit_creates_the_task_but_the_client_sees_a_connection_error(
    emu: EmulatorServer, media: dict, key: str
) -> None:
    client = Client(emu.base_url, key)
    emu.force_next("drop_submit")
    with pytest.raises(requests.ConnectionError):
        client.submit_raw(emo_body(media, image="missing.png"))
    assert _count_tasks(emu, key) == 1  # the task exists: a blind retry would pay twice
    entry = [r for r in emu.request_log() if r["key_fingerprint"] == key_fingerprint(key)][-1]
    assert entry["fault"] == "drop_submit" and entry["status"] is None and entry["task_id"]
    assert client.submit_raw(emo_body(media, image="missing.png")).status_code == 200  # one-shot


@pytest.mark.parametrize(
    ("fault", "status", "code"),
    [
        ("submit_500", 500, "InternalError"),
        ("submit_503", 503, "ServiceUnavailable"),
        ("submit_inspection", 400, "DataInspectionFailed"),  # content moderation refused the input
    ],
)
def test_submit_5xx_creates_no_task(
    emu: EmulatorServer, media: dict, key: str, fault: str, status: int, code: str
) -> None:
    client = Client(emu.base_url, key)
    emu.force_next(fault)
    response = client.submit_raw(emo_body(media, image="missing.png"))
    assert_error(response, status, code)
    if status == 500:
        assert response.json()["message"] == (
            "An internal error has occured, please try again later or contact service support."
        )
    if status == 400:
        assert response.json()["message"] == "Input data may contain inappropriate content."
    assert _count_tasks(emu, key) == 0


def test_submit_502_without_json_body_creates_the_task(emu: EmulatorServer, media: dict, key: str) -> None:
    client = Client(emu.base_url, key)
    emu.force_next("submit_502_no_body")
    response = client.submit_raw(emo_body(media, image="missing.png"))
    assert response.status_code == 502
    assert response.headers["Content-Type"].startswith("text/html") and b"Bad Gateway" in response.content
    assert _count_tasks(emu, key) == 1


def test_query_faults(emu: EmulatorServer, key: str) -> None:
    client = Client(emu.base_url, key)
    task_id = str(uuid.uuid4())
    emu.force_next("query_500")
    assert_error(client.query_raw(task_id), 500, "InternalError")
    emu.force_next("query_503")
    assert_error(client.query_raw(task_id), 503, "ServiceUnavailable")
    emu.force_next("drop_query")
    with pytest.raises(requests.ConnectionError):
        client.query_raw(task_id)
    assert client.query_raw(task_id).status_code == 200


def test_admin_endpoints_over_http(cache_dir: Path, media: dict) -> None:
    with EmulatorServer(api_keys=["sk-admin"], speed=2000, cache_dir=cache_dir) as server:
        admin = requests.Session()
        base = server.base_url + "/_emulator"
        assert admin.get(base + "/health").json()["status"] == "ok"
        assert admin.post(base + "/force", json={"fault": "submit_500"}).status_code == 200
        client = Client(server.base_url, "sk-admin")
        assert client.submit_raw(emoji_body(media)).status_code == 500
        assert admin.post(base + "/force", json={"fault": "nope"}).status_code == 400
        assert admin.post(base + "/faults", json={"query_5xx": 1.0, "seed": 3}).json()["query_5xx"] == 1.0
        assert client.query_raw(str(uuid.uuid4())).status_code in (500, 503)
        assert admin.post(base + "/faults", json={}).status_code == 200  # all off again
        task_id = client.submit(emoji_body(media))
        client.wait(task_id)
        assert [line["task_id"] for line in admin.get(base + "/billing").json()] == [task_id]
        assert [t["task_id"] for t in admin.get(base + "/tasks").json()] == [task_id]
        log = admin.get(base + "/requests").json()
        assert {"time", "method", "path", "key_fingerprint", "status", "model", "task_id", "fault"} <= set(log[0])
        assert any(r["fault"] == "submit_500" and r["status"] == 500 for r in log)
        assert admin.post(base + "/advance", json={"seconds": 90_000}).status_code == 200
        assert client.query(task_id)["output"]["task_status"] == "UNKNOWN"  # submitted > 24 h ago now


def test_detect_faults_and_that_a_dropped_answer_was_still_billed(emu: EmulatorServer, media: dict, key: str) -> None:
    client = Client(emu.base_url, key)
    body = detect_body(f"{media['url']}/portrait_square.png")

    def billed() -> int:
        return sum(d["key_fingerprint"] == key_fingerprint(key) for d in emu.detections())

    emu.force_next("detect_500")
    assert_error(client.detect_raw(body), 500, "InternalError")
    emu.force_next("detect_503")
    assert_error(client.detect_raw(body), 503, "ServiceUnavailable")
    assert billed() == 0  # no detection was made
    emu.force_next("drop_detect")
    with pytest.raises(requests.ConnectionError):
        client.detect_raw(body)
    assert billed() == 1  # made and billed, though the client never saw the answer: don't retry blindly
    entry = [r for r in emu.request_log() if r["key_fingerprint"] == key_fingerprint(key)][-1]
    assert entry["fault"] == "drop_detect" and entry["status"] is None and entry["model"] == "emo-detect-v1"
    assert client.detect_raw(body).status_code == 200  # one-shot
    assert billed() == 2


def test_detect_fault_probabilities_over_the_admin_api(cache_dir: Path, media: dict) -> None:
    with EmulatorServer(api_keys=["sk-admin-detect"], speed=2000, cache_dir=cache_dir) as server:
        admin = requests.Session()
        settings = admin.post(server.base_url + "/_emulator/faults", json={"detect_5xx": 1.0, "seed": 1}).json()
        assert settings["detect_5xx"] == 1.0 and settings["drop_detect"] == 0.0
        client = Client(server.base_url, "sk-admin-detect")
        body = detect_body(f"{media['url']}/portrait_square.png")
        assert client.detect_raw(body).status_code in (500, 503)
        assert client.query_raw(str(uuid.uuid4())).status_code == 200  # query faults stay off
        admin.post(server.base_url + "/_emulator/faults", json={})
        assert client.detect_raw(body).status_code == 200
        assert len(server.detections()) == 1


def test_a_held_submit_answer_comes_after_its_task_exists(emu: EmulatorServer, media: dict, key: str) -> None:
    """``set_submit_answer_delay``: the task is created at once, its answer held; a client cut off meanwhile
    has a task it never hears of (what tests/integration/test_kill_burst.py kills into)."""
    client = Client(emu.base_url, key)
    assert requests.post(f"{emu.base_url}/_emulator/submit_delay", json={"seconds": 1.0}, timeout=5).ok
    try:
        answers: list[requests.Response] = []
        started = time.monotonic()
        sender = threading.Thread(target=lambda: answers.append(client.submit_raw(emo_body(media))))
        sender.start()
        deadline = time.monotonic() + 5
        while _count_tasks(emu, key) == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert _count_tasks(emu, key) == 1 and not answers  # the task exists; its answer is still held
        sender.join(timeout=10)
        assert answers[0].status_code == 200 and time.monotonic() - started >= 1.0
        with pytest.raises(requests.HTTPError):  # out of range: a 400
            requests.post(f"{emu.base_url}/_emulator/submit_delay", json={"seconds": 99}, timeout=5).raise_for_status()
    finally:
        emu.set_submit_answer_delay(0)
