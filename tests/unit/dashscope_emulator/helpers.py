"""Helpers for the emulator's self-tests: a minimal DashScope client, request bodies, ffmpeg probes."""

from __future__ import annotations

import re
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests
from dashscope_emulator.media import ffmpeg_exe

SUBMIT = "/api/v1/services/aigc/image2video/video-synthesis"
DETECT = "/api/v1/services/aigc/image2video/face-detect"
FORMAT_MESSAGE = (
    "The request is missing required parameters or in a wrong format, please check the parameters that you send.."
)
TIME_FORMAT = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d{3}$")
INCLUDE_DIR = Path(__file__).resolve().parents[3] / "include"
#: Where ``photo.png`` of the ``pictures`` fixture has its skin-toned oval.
PHOTO_OVAL = (300, 150, 460, 350)
KEYS = [f"sk-unit-{i:02d}-{uuid.uuid4().hex[:8]}" for i in range(80)]


class Client:
    """A minimal DashScope client: what the project's hook does, without retries unless asked."""

    def __init__(self, base_url: str, api_key: str | None) -> None:
        self.base_url = base_url
        self.session = requests.Session()
        self.api_key = api_key

    def headers(self, **extra: str) -> dict[str, str]:
        headers = {"X-DashScope-Async": "enable"}
        if self.api_key is not None:
            headers["Authorization"] = f"Bearer {self.api_key}"
        headers.update(extra)
        return headers

    def submit_raw(self, body: Any = None, headers: dict[str, str] | None = None, **kwargs: Any) -> requests.Response:
        return self.session.post(
            self.base_url + SUBMIT,
            json=body,
            headers=headers if headers is not None else self.headers(),
            **kwargs,
        )

    def submit(self, body: dict[str, Any]) -> str:
        """Submit, waiting out 429s like a well-behaved client; returns the task id."""
        for _ in range(40):
            response = self.submit_raw(body)
            if response.status_code != 429:
                assert response.status_code == 200, response.text
                return response.json()["output"]["task_id"]
            time.sleep(0.25)
        raise AssertionError("throttled for 10 s")

    def detect_raw(self, body: Any, headers: dict[str, str] | None = None) -> requests.Response:
        """A face-detect call: synchronous, so no ``X-DashScope-Async`` header unless given."""
        if headers is None:
            headers = {} if self.api_key is None else {"Authorization": f"Bearer {self.api_key}"}
        return self.session.post(self.base_url + DETECT, json=body, headers=headers)

    def detect(self, image_url: str, ratio: str = "1:1", model: str = "emo-detect-v1") -> dict[str, Any]:
        """Detect, waiting out 429s; returns the answer (HTTP 200 whether or not the check passed)."""
        for _ in range(40):
            response = self.detect_raw(detect_body(image_url, ratio, model))
            if response.status_code != 429:
                assert response.status_code == 200, response.text
                return response.json()
            time.sleep(0.25)
        raise AssertionError("throttled for 10 s")

    def query_raw(self, task_id: str) -> requests.Response:
        return self.session.get(f"{self.base_url}/api/v1/tasks/{task_id}", headers=self.headers())

    def query(self, task_id: str) -> dict[str, Any]:
        for _ in range(40):
            response = self.query_raw(task_id)
            if response.status_code != 429:
                assert response.status_code == 200, response.text
                return response.json()
            time.sleep(0.1)
        raise AssertionError("throttled for 4 s")

    def cancel(self, task_id: str) -> requests.Response:
        return self.session.post(f"{self.base_url}/api/v1/tasks/{task_id}/cancel", headers=self.headers())

    def wait(self, task_id: str, timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            answer = self.query(task_id)
            if answer["output"]["task_status"] not in ("PENDING", "RUNNING"):
                return answer
            time.sleep(0.06)
        raise AssertionError(f"task {task_id} still running after {timeout} s")


def emo_body(
    media: dict[str, Any], image: str = "portrait_square.png", audio: str = "voice.wav", **overrides: Any
) -> dict[str, Any]:
    boxes = media["boxes"].get(image, media["boxes"]["portrait_square.png"])
    body: dict[str, Any] = {
        "model": "emo-v1",
        "input": {
            "image_url": f"{media['url']}/{image}",
            "audio_url": f"{media['url']}/{audio}",
            "face_bbox": boxes["face_bbox"],
            "ext_bbox": boxes["ext_bbox"],
        },
        "parameters": {"style_level": "normal"},
    }
    body["input"].update(overrides)
    return body


def emoji_body(media: dict[str, Any], driven_id: str = "mengwa_kaixin") -> dict[str, Any]:
    boxes = media["boxes"]["portrait_emoji.png"]
    return {
        "model": "emoji-v1",
        "input": {
            "image_url": f"{media['url']}/portrait_emoji.png",
            "driven_id": driven_id,
            "face_bbox": boxes["face_bbox"],
            "ext_bbox": boxes["ext_bbox"],
        },
    }


def detect_body(image_url: str, ratio: str = "1:1", model: str = "emo-detect-v1") -> dict[str, Any]:
    return {"model": model, "input": {"image_url": image_url}, "parameters": {"ratio": ratio}}


def probe(path: Path) -> str:
    """What ``ffmpeg -i`` says about a file (stderr): the streams, their sizes, the duration."""
    result = subprocess.run([ffmpeg_exe(), "-hide_banner", "-i", str(path)], capture_output=True, text=True)
    return result.stderr


def probed_seconds(info: str) -> float:
    hours, minutes, seconds = re.search(r"Duration: (\d+):(\d+):([\d.]+)", info).groups()  # type: ignore[union-attr]
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def wait_for(condition: Callable[[], bool], timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def assert_error(response: requests.Response, status: int, code: str, message: str | None = None) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"request_id", "code", "message"}
    assert body["code"] == code
    uuid.UUID(body["request_id"])
    if message is not None:
        assert body["message"] == message
