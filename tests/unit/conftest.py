"""Fixtures for the DashScope provider tests: the emulator over real HTTP, sample media, moto S3.

Connections come from the environment (``AIRFLOW_CONN_*``), the way users set them.
"""

from __future__ import annotations

import json
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import S3_BUCKET
from tests.harness.services import s3_client as harness_s3_client
from tests.harness.services import s3_connection

KEY = "sk-test"
CONN_ID = "dashscope_test"
AWS_CONN_ID = "aws_test"
BUCKET = S3_BUCKET


def conn_json(host: str, password: str = KEY) -> str:
    """An ``AIRFLOW_CONN_*`` value for a dashscope connection."""
    return json.dumps({"conn_type": "dashscope", "host": host, "password": password})


def assert_no_key(exc: BaseException, key: str = KEY) -> None:
    """The key appears nowhere in the exception: not in str(), repr(), nor its chained causes."""
    text = "".join(traceback.format_exception(exc))
    assert key not in str(exc)
    assert key not in repr(exc)
    assert key not in text


def logged_requests(
    emulator: Any, keep: Callable[[dict[str, Any]], bool], at_least: int = 1, settle: float = 0.1
) -> list[dict[str, Any]]:
    """The emulator's request-log entries that ``keep`` selects, once at least ``at_least`` are there.

    The emulator logs a request after it has answered (or dropped) it, so the client can be faster than
    the log; wait for the expected entries, then a little longer to catch any unexpected extra one.
    """
    deadline = time.monotonic() + 5.0
    while len([r for r in emulator.request_log() if keep(r)]) < at_least and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(settle)
    return [r for r in emulator.request_log() if keep(r)]


def is_submit(record: dict[str, Any]) -> bool:
    return record["method"] == "POST" and record["path"] == "/api/v1/services/aigc/image2video/video-synthesis"


def is_query(record: dict[str, Any]) -> bool:
    return record["method"] == "GET" and record["path"].startswith("/api/v1/tasks/")


def is_result(record: dict[str, Any]) -> bool:
    return record["path"].startswith("/results/")


@pytest.fixture(scope="session")
def media_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from dashscope_emulator import make_samples

    folder = tmp_path_factory.mktemp("media")
    make_samples(folder)
    return folder


@pytest.fixture(scope="session")
def samples(media_dir: Path) -> dict[str, Any]:
    """``samples.json``: per image its size and the face/ext boxes."""
    return json.loads((media_dir / "samples.json").read_text())


@pytest.fixture(scope="session")
def media_url(media_dir: Path) -> Iterator[str]:
    """Base URL of a static server for the sample media (the emulator downloads inputs from it)."""
    from dashscope_emulator import serve_directory

    with serve_directory(media_dir) as url:
        yield url


@pytest.fixture(scope="session")
def emo_input(media_url: str, samples: dict[str, Any]) -> dict[str, Any]:
    """A valid emo-v1 ``input`` (square portrait: ratio 1:1)."""
    boxes = samples["portrait_square.png"]
    return {
        "image_url": f"{media_url}/portrait_square.png",
        "audio_url": f"{media_url}/voice.wav",
        "face_bbox": boxes["face_bbox"],
        "ext_bbox": boxes["ext_bbox"],
    }


@pytest.fixture(scope="session")
def emoji_input(media_url: str, samples: dict[str, Any]) -> dict[str, Any]:
    """A valid emoji-v1 ``input``."""
    boxes = samples["portrait_emoji.png"]
    return {
        "image_url": f"{media_url}/portrait_emoji.png",
        "driven_id": "mengwa_kaixin",
        "face_bbox": boxes["face_bbox"],
        "ext_bbox": boxes["ext_bbox"],
    }


@pytest.fixture
def emulator() -> Iterator[Any]:
    """A fresh emulator per test (own queue, rate windows, billing and request log), fast clock."""
    from dashscope_emulator import EmulatorServer

    server = EmulatorServer(api_keys=[KEY], port=0, speed=1000).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def slow_emulator() -> Iterator[Any]:
    """An emulator on real time: a task stays RUNNING/PENDING for many seconds."""
    from dashscope_emulator import EmulatorServer

    server = EmulatorServer(api_keys=[KEY], port=0, speed=1).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def emulator_100x(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """An emulator at 100x behind ``dashscope_test``: an emo-v1 task is RUNNING for its simulated ~20 s, about
    0.2 s of wall time, long enough to be seen unfinished (at :func:`emulator`'s 1000x it can end before the next
    query: only a video's first render, now cached for the run, used to take longer)."""
    from dashscope_emulator import EmulatorServer

    with EmulatorServer(api_keys=[KEY], port=0, speed=100) as server:
        monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", conn_json(server.base_url))
        yield server


@pytest.fixture
def dashscope_conn(emulator: Any, monkeypatch: pytest.MonkeyPatch) -> str:
    """The connection ``dashscope_test`` -> the emulator, from the environment. Returns its id."""
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", conn_json(emulator.base_url))
    return CONN_ID


@pytest.fixture
def make_hook() -> Callable[..., Any]:
    """Build a DashScopeHook with short back-offs (the defaults are seconds)."""
    from dashscope_provider.hooks.dashscope import DashScopeHook

    def make(conn_id: str = CONN_ID, **kwargs: Any) -> Any:
        kwargs.setdefault("retry_initial", 0.05)
        kwargs.setdefault("retry_max", 0.5)
        kwargs.setdefault("timeout", (2.0, 10.0))
        return DashScopeHook(dashscope_conn_id=conn_id, **kwargs)

    return make


@pytest.fixture
def wait_terminal() -> Callable[..., Any]:
    """Poll a task with the sync hook until it is terminal (the emulator's clock runs 1000x)."""

    def wait(hook: Any, task_id: str, timeout: float = 30.0) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            task = hook.get_task(task_id)
            if task.is_terminal:
                return task
            if time.monotonic() > deadline:
                raise AssertionError(f"task {task_id} still {task.status} after {timeout} s")
            time.sleep(0.05)

    return wait


@pytest.fixture
def no_key_in_logs(caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]) -> Iterator[None]:
    """Fail the test if the API key shows up in any log record or in the console output.

    Airflow's structlog loggers write to the console rather than to stdlib handlers, so both are checked.
    """
    caplog.set_level("DEBUG")
    yield
    captured = capfd.readouterr()
    assert KEY not in caplog.text
    assert KEY not in captured.out
    assert KEY not in captured.err


@pytest.fixture
def aws_conn(moto_s3: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The connection ``aws_test`` -> moto, from the environment. Returns its id."""
    monkeypatch.setenv(f"AIRFLOW_CONN_{AWS_CONN_ID.upper()}", json.dumps(s3_connection(moto_s3)))
    return AWS_CONN_ID


@pytest.fixture
def s3_client(moto_s3: str) -> Any:
    return harness_s3_client(moto_s3)


#: A second key of the account ``account_emulator`` gives ``KEY`` (another program, or another connection, of it).
SAME_ACCOUNT_KEY = "sk-same-account-other-key"
#: A key of another Alibaba Cloud account on the same emulator.
OTHER_ACCOUNT_KEY = "sk-other-account-key"


@pytest.fixture
def account_emulator(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """An emulator where ``KEY`` and ``SAME_ACCOUNT_KEY`` are one account's and ``OTHER_ACCOUNT_KEY`` another's;
    the connection ``dashscope_test`` points at it with ``KEY``."""
    from dashscope_emulator import EmulatorServer

    accounts = {"acct": [KEY, SAME_ACCOUNT_KEY]}
    with EmulatorServer(api_keys=[OTHER_ACCOUNT_KEY], accounts=accounts, port=0, speed=1000) as server:
        monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", conn_json(server.base_url))
        yield server


def submit_as(emulator: Any, key: str, body: dict[str, Any]) -> str:
    """Submit ``body`` straight to the emulator with ``key`` (as another program would); its task id.
    Waits out the account's submit limit (429) instead of failing."""
    for _ in range(40):
        answer = requests.post(
            emulator.base_url + "/api/v1/services/aigc/image2video/video-synthesis",
            json=body,
            headers={"Authorization": f"Bearer {key}", "X-DashScope-Async": "enable"},
            timeout=10,
        )
        if answer.status_code != 429:
            assert answer.status_code == 200, answer.text
            return answer.json()["output"]["task_id"]
        time.sleep(0.25)
    raise AssertionError("throttled")
