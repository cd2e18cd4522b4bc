"""Self-tests of the DashScope emulator over real HTTP, against the reference pages' contract.

Most tests share one fast emulator (speed 2000) and take a fresh API key each, so queues and rate
limits don't leak between tests; tests that move simulated time or need a slow clock get their own
server. Rendered videos are cached in one folder for the whole module, so each distinct video is
rendered once.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
import wave
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from dashscope_emulator import (
    EmulatorServer,
    emoji_template_seconds,
    key_fingerprint,
    make_samples,
    run_seconds,
    serve_directory,
)
from dashscope_emulator.clock import format_time
from dashscope_emulator.faults import FaultInjector
from dashscope_emulator.media import ffmpeg_exe

SUBMIT = "/api/v1/services/aigc/image2video/video-synthesis"
FORMAT_MESSAGE = (
    "The request is missing required parameters or in a wrong format, please check the parameters that you send.."
)
TIME_FORMAT = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d{3}$")
INCLUDE_DIR = Path(__file__).resolve().parents[2] / "include"
KEYS = [f"sk-unit-{i:02d}-{uuid.uuid4().hex[:8]}" for i in range(80)]


# -- fixtures and helpers -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The sample media, served over HTTP; ``url``, ``dir`` and ``boxes`` (samples.json)."""
    folder = tmp_path_factory.mktemp("emulator-media")
    make_samples(folder)
    boxes = json.loads((folder / "samples.json").read_text())
    with serve_directory(folder, port=0) as base_url:
        yield {"url": base_url, "dir": folder, "boxes": boxes}


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("emulator-renders")


@pytest.fixture(scope="module")
def emu(cache_dir: Path) -> Iterator[EmulatorServer]:
    with EmulatorServer(api_keys=KEYS, port=0, speed=2000, seed=0, cache_dir=cache_dir) as server:
        yield server


_unused_keys = iter(KEYS)


@pytest.fixture
def key() -> str:
    """A key no other test of the module used: its own queue and rate-limit windows."""
    return next(_unused_keys)


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


# -- submission errors ----------------------------------------------------------------------------


def test_submit_without_or_with_unknown_key_is_401(emu: EmulatorServer, media: dict) -> None:
    assert_error(Client(emu.base_url, None).submit_raw(emo_body(media)), 401, "InvalidApiKey", "No API-key provided.")
    assert_error(
        Client(emu.base_url, "sk-nope").submit_raw(emo_body(media)),
        401,
        "InvalidApiKey",
        "Invalid API-key provided.",
    )
    # Auth comes first: a request that is wrong in every other way still gets the 401.
    response = requests.post(emu.base_url + SUBMIT, data="not json", headers={"Authorization": "Bearer sk-nope"})
    assert_error(response, 401, "InvalidApiKey", "Invalid API-key provided.")


def test_submit_without_async_header_is_refused(emu: EmulatorServer, media: dict, key: str) -> None:
    client = Client(emu.base_url, key)
    response = client.submit_raw(emo_body(media), headers={"Authorization": f"Bearer {key}"})
    assert_error(response, 400, "InvalidParameter", "current user api does not support synchronous calls")


@pytest.mark.parametrize(
    "mutate",
    [
        pytest.param(lambda b: "not json", id="body-not-json"),
        pytest.param(lambda b: [b], id="body-not-object"),
        pytest.param(lambda b: {k: v for k, v in b.items() if k != "model"}, id="no-model"),
        pytest.param(lambda b: {k: v for k, v in b.items() if k != "input"}, id="no-input"),
        pytest.param(lambda b: {**b, "input": "x"}, id="input-not-object"),
        pytest.param(lambda b: {**b, "parameters": "calm"}, id="parameters-not-object"),
        pytest.param(lambda b: {**b, "input": {**b["input"], "audio_url": None}}, id="no-audio"),
        pytest.param(lambda b: {**b, "input": {**b["input"], "face_bbox": [1, 2, 3]}}, id="bbox-3"),
        pytest.param(lambda b: {**b, "input": {**b["input"], "ext_bbox": [0, 0, 10.5, 10]}}, id="bbox-float"),
        pytest.param(lambda b: {**b, "input": {**b["input"], "ext_bbox": "[0, 0, 10, 10]"}}, id="bbox-string"),
        pytest.param(lambda b: {**b, "input": {**b["input"], "face_bbox": [True, 0, 1, 1]}}, id="bbox-bool"),
    ],
)
def test_submit_format_errors(emu: EmulatorServer, media: dict, key: str, mutate: Callable) -> None:
    body = mutate(emo_body(media))
    client = Client(emu.base_url, key)
    raw = body if isinstance(body, str) else json.dumps(body)
    response = client.session.post(
        emu.base_url + SUBMIT, data=raw, headers=client.headers(**{"Content-Type": "application/json"})
    )
    assert_error(response, 400, "InvalidParameter", FORMAT_MESSAGE)


def test_submit_needs_json_content_type(emu: EmulatorServer, media: dict, key: str) -> None:
    client = Client(emu.base_url, key)
    response = client.session.post(
        emu.base_url + SUBMIT,
        data=json.dumps(emo_body(media)),
        headers=client.headers(**{"Content-Type": "text/plain"}),
    )
    assert_error(response, 400, "InvalidParameter", FORMAT_MESSAGE)
    # A charset parameter is fine.
    ok = client.session.post(
        emu.base_url + SUBMIT,
        data=json.dumps(emo_body(media, image="nowhere.png")),
        headers=client.headers(**{"Content-Type": "application/json; charset=UTF-8"}),
    )
    assert ok.status_code == 200, ok.text


@pytest.mark.parametrize(
    ("mutate", "code", "message"),
    [
        (lambda b: {**b, "model": "emo-v2"}, "InvalidParameter", "Model not exist."),
        (lambda b: {**b, "parameters": {"style_level": "wild"}}, "InvalidParameter", "The style_level is invalid."),
        (
            lambda b: {**b, "input": {**b["input"], "image_url": "file:///etc/passwd"}},
            "InvalidURL",
            "Required URL is missing or invalid, please check the request URL.",
        ),
        (
            lambda b: {**b, "input": {**b["input"], "audio_url": "ftp://host/voice.wav"}},
            "InvalidURL",
            "Required URL is missing or invalid, please check the request URL.",
        ),
        (
            lambda b: {**b, "input": {**b["input"], "image_url": ""}},
            "InvalidURL",
            "Required URL is missing or invalid, please check the request URL.",
        ),
    ],
    ids=["unknown-model", "style-level", "image-file-url", "audio-ftp-url", "image-empty"],
)
def test_submit_value_errors(
    emu: EmulatorServer, media: dict, key: str, mutate: Callable, code: str, message: str
) -> None:
    assert_error(Client(emu.base_url, key).submit_raw(mutate(emo_body(media))), 400, code, message)


def test_submit_emoji_unknown_driven_id(emu: EmulatorServer, media: dict, key: str) -> None:
    response = Client(emu.base_url, key).submit_raw(emoji_body(media, driven_id="mengwa_dance"))
    assert_error(response, 400, "InvalidParameter")
    assert "driven_id" in response.json()["message"]


# -- rate limits ----------------------------------------------------------------------------------


def test_submit_rate_limit_and_recovery(emu: EmulatorServer, media: dict, key: str) -> None:
    client = Client(emu.base_url, key)
    body = emo_body(media, image="missing.png")  # fails fast when it runs: no rendering
    statuses = [client.submit_raw(body).status_code for _ in range(6)]
    assert statuses[:5] == [200] * 5
    assert statuses[5] == 429
    throttled = client.submit_raw(body)
    assert_error(throttled, 429, "Throttling.RateQuota", "Requests rate limit exceeded, please try again later.")
    time.sleep(1.05)
    assert client.submit_raw(body).status_code == 200
    # Throttled submissions created nothing.
    mine = [t for t in emu.tasks() if t["key_fingerprint"] == key_fingerprint(key)]
    assert len(mine) == 6


def test_query_rate_limit_and_recovery(emu: EmulatorServer, key: str) -> None:
    client = Client(emu.base_url, key)
    task_id = str(uuid.uuid4())
    statuses = [client.query_raw(task_id).status_code for _ in range(21)]
    assert statuses[:20] == [200] * 20
    assert statuses[20] == 429
    assert_error(client.query_raw(task_id), 429, "Throttling.RateQuota")
    time.sleep(1.05)
    assert client.query_raw(task_id).status_code == 200


# -- successful tasks -----------------------------------------------------------------------------


def _download(client: Client, url: str, target: Path) -> Path:
    with client.session.get(url, stream=True) as response:
        assert response.status_code == 200
        assert response.headers["Content-Type"] == "video/mp4"
        length = int(response.headers["Content-Length"])
        with target.open("wb") as out:
            for chunk in response.iter_content(65536):
                out.write(chunk)
    assert target.stat().st_size == length
    return target


def test_emo_square_wav_succeeds_with_a_playable_512x512_video(
    emu: EmulatorServer, media: dict, key: str, tmp_path: Path
) -> None:
    client = Client(emu.base_url, key)
    submitted = client.submit_raw(emo_body(media))
    assert submitted.status_code == 200
    body = submitted.json()
    assert set(body) == {"output", "request_id"}
    assert body["output"]["task_status"] == "PENDING"
    task_id = body["output"]["task_id"]
    uuid.UUID(task_id)

    answer = client.wait(task_id)
    output = answer["output"]
    assert set(answer) == {"request_id", "output", "usage"}
    assert output["task_status"] == "SUCCEEDED", output
    assert set(output) == {"task_id", "task_status", "submit_time", "scheduled_time", "end_time", "results"}
    for name in ("submit_time", "scheduled_time", "end_time"):
        assert TIME_FORMAT.match(output[name]), output[name]
    assert output["submit_time"] <= output["scheduled_time"] <= output["end_time"]
    usage = answer["usage"]
    with wave.open(str(media["dir"] / "voice.wav")) as clip:
        seconds = clip.getnframes() / clip.getframerate()
    assert isinstance(usage["video_duration"], float)
    assert usage == {"video_duration": round(seconds, 2), "video_ratio": "1:1"}

    url = output["results"]["video_url"]
    assert re.search(r"\.mp4\?Expires=\d+&OSSAccessKeyId=emulator&Signature=[\w-]+$", url)
    video = _download(client, url, tmp_path / "square.mp4")
    info = probe(video)
    assert "512x512" in info and "h264" in info and "aac" in info, info
    assert probed_seconds(info) == pytest.approx(usage["video_duration"], abs=0.15)

    # HEAD and Range, as a downloader that resumes would use them.
    head = client.session.head(url)
    assert head.status_code == 200 and int(head.headers["Content-Length"]) == video.stat().st_size
    part = client.session.get(url, headers={"Range": "bytes=4-11"})
    assert part.status_code == 206 and part.content == video.read_bytes()[4:12]
    assert part.headers["Content-Range"] == f"bytes 4-11/{video.stat().st_size}"
    # A tampered signature is refused.
    forged = client.session.get(url.replace("Expires=", "Expires=9"))
    assert forged.status_code == 403 and b"<Code>SignatureDoesNotMatch</Code>" in forged.content

    bill = [line for line in emu.billing() if line["task_id"] == task_id]
    assert bill == [
        {
            "task_id": task_id,
            "model": "emo-v1",
            "key_fingerprint": key_fingerprint(key),
            "video_duration": usage["video_duration"],
            "video_ratio": "1:1",
            "submit_time": output["submit_time"],
            "end_time": output["end_time"],
        }
    ]
    assert key not in json.dumps(emu.billing()) + json.dumps(emu.request_log()) + json.dumps(emu.tasks())


def test_emo_halfbody_mp3_succeeds_with_a_512x704_video(
    emu: EmulatorServer, media: dict, key: str, tmp_path: Path
) -> None:
    client = Client(emu.base_url, key)
    body = emo_body(media, image="portrait_halfbody.jpg", audio="voice.mp3")
    body["parameters"] = {"style_level": "active"}
    answer = client.wait(client.submit(body))
    assert answer["output"]["task_status"] == "SUCCEEDED", answer
    assert answer["usage"]["video_ratio"] == "3:4"
    assert 4.0 < answer["usage"]["video_duration"] < 6.5
    info = probe(_download(client, answer["output"]["results"]["video_url"], tmp_path / "halfbody.mp4"))
    assert "512x704" in info and "aac" in info, info


def test_emoji_succeeds_with_integer_duration_and_standard_ratio(
    emu: EmulatorServer, media: dict, key: str, tmp_path: Path
) -> None:
    client = Client(emu.base_url, key)
    answer = client.wait(client.submit(emoji_body(media, "dagong_wunai")))
    output = answer["output"]
    assert output["task_status"] == "SUCCEEDED", answer
    assert "results" not in output
    assert set(output) == {"task_id", "task_status", "submit_time", "scheduled_time", "end_time", "video_url"}
    usage = answer["usage"]
    assert usage == {"video_duration": emoji_template_seconds("dagong_wunai"), "video_ratio": "standard"}
    assert isinstance(usage["video_duration"], int) and 2 <= usage["video_duration"] <= 5
    info = probe(_download(client, output["video_url"], tmp_path / "emoji.mp4"))
    assert "512x512" in info and "Audio:" not in info, info
    assert probed_seconds(info) == pytest.approx(usage["video_duration"], abs=0.15)


def test_identical_tasks_render_once(emu: EmulatorServer, media: dict, key: str) -> None:
    client = Client(emu.base_url, key)
    body = emoji_body(media, "jingdian_lei")
    first = client.wait(client.submit(body))
    assert emu.renderer is not None
    renders = emu.renderer.renders
    second = client.wait(client.submit(body))
    assert emu.renderer.renders == renders
    assert first["output"]["task_status"] == second["output"]["task_status"] == "SUCCEEDED"
    assert first["output"]["video_url"] != second["output"]["video_url"]  # one URL per task, same file


# -- failures found when the task runs --------------------------------------------------------------


def _big_wav(folder: Path) -> str:
    path = folder / "big.wav"
    if not path.exists():
        with wave.open(str(path), "wb") as out:
            out.setnchannels(1)
            out.setsampwidth(2)
            out.setframerate(48000)
            out.writeframes(b"\0" * (16 * 1024 * 1024))  # 16 MB, ~175 s
    return "big.wav"


AUDIO_TYPE = "File type is not supported. Allowed types are: .wav, .mp3."
DOWNLOAD = "Unable to download the media resource during the data inspection process."


@pytest.mark.parametrize(
    ("change", "code", "message"),
    [
        (
            {"image": "tiny.png", "face_bbox": [95, 70, 205, 195], "ext_bbox": [40, 40, 260, 260]},
            "InvalidFile.Resolution",
            "The image resolution is invalid, please make sure that the largest length of image is smaller than "
            "7000, and the smallest length of image is larger than 400.",
        ),
        ({"audio": "long.wav"}, "InvalidURL", "The input audio is longer than 60s!"),
        ({"audio": "not_audio.ogg"}, "InvalidURL", AUDIO_TYPE),
        ({"audio": "samples.json"}, "InvalidURL", AUDIO_TYPE),
        ({"audio": "BIG"}, "InvalidURL", "File size is larger than 15MB."),
        (
            {"image": "samples.json"},
            "InvalidURL",
            "The request URL is invalid, please check the request URL is available and the request image format "
            "is one of the following types: JPEG, JPG, PNG, BMP, and WEBP.",
        ),
        ({"image": "no-such-file.png"}, "InvalidParameter.DataInspection", DOWNLOAD),
        ({"image_url": "http://127.0.0.1:9/portrait.png"}, "InvalidParameter.DataInspection", DOWNLOAD),
        ({"audio": "no-such-voice.wav"}, "InvalidParameter.DataInspection", DOWNLOAD),
        ({"ext_bbox": [100, 100, 700, 600]}, "InvalidParameter", None),
        ({"ext_bbox": [100, 100, 900, 900]}, "InvalidParameter", None),
        ({"face_bbox": [50, 220, 550, 560]}, "InvalidParameter", None),
    ],
    ids=[
        "tiny-image",
        "long-audio",
        "ogg-audio",
        "text-audio",
        "audio-over-15MB",
        "text-image",
        "image-404",
        "image-unreachable",
        "audio-404",
        "ratio-6:5",
        "ext-outside-image",
        "face-outside-ext",
    ],
)
def test_media_failures(
    emu: EmulatorServer, media: dict, key: str, change: dict, code: str, message: str | None
) -> None:
    change = dict(change)
    audio = change.pop("audio", "voice.wav")
    if audio == "BIG":
        audio = _big_wav(media["dir"])
    body = emo_body(media, image=change.pop("image", "portrait_square.png"), audio=audio, **change)
    client = Client(emu.base_url, key)
    answer = client.wait(client.submit(body))
    output = answer["output"]
    assert output["task_status"] == "FAILED", answer
    assert output["code"] == code
    if message is not None:
        assert output["message"] == message
    assert set(output) == {
        "task_id",
        "task_status",
        "submit_time",
        "scheduled_time",
        "end_time",
        "code",
        "message",
    }
    assert "usage" not in answer
    assert all(line["task_id"] != output["task_id"] for line in emu.billing())  # failures are free


CONTENT_ERRORS = {
    "InvalidFile.Content": "The input image has no human body. Please upload other image with single person.",
    "InvalidFile.Content.multi": (
        "The input image has multi human bodies. Please upload other image with single person."
    ),
    "InvalidFile.BodyProportion": "The proportion of the detected person in the picture is too large or too small, "
    "please upload other image.",
    "InvalidFile.Value": "The value of the image is invalid, please upload other clearer image.",
    "InvalidFile.FrontBody": (
        "The pose of the detected person is invalid, please upload other image with the front view."
    ),
    "InvalidFile.FullFace": "The pose of the detected face is invalid, please upload other image with whole face.",
    "InvalidFile.FacePose": (
        "The pose of the detected face is invalid, please upload other image with the expected orientation."
    ),
}


def test_emulator_error_triggers_every_content_check(emu: EmulatorServer, media: dict, key: str) -> None:
    client = Client(emu.base_url, key)
    task_ids = {}
    for token in CONTENT_ERRORS:
        body = emo_body(media, image_url=f"{media['url']}/portrait_square.png?emulator_error={token}")
        task_ids[token] = client.submit(body)
    body = emoji_body(media)
    body["input"]["image_url"] += "?emulator_error=InvalidFile.FacePose"
    task_ids["emoji"] = client.submit(body)
    for token, task_id in task_ids.items():
        output = client.wait(task_id)["output"]
        assert output["task_status"] == "FAILED"
        expected = "InvalidFile.FacePose" if token == "emoji" else token.removesuffix(".multi")
        assert output["code"] == expected
        assert output["message"] == CONTENT_ERRORS[expected if token == "emoji" else token]


# -- queue, cancel, expiry, visibility --------------------------------------------------------------


def test_queue_is_fifo_one_running_per_key_and_keys_run_in_parallel(cache_dir: Path, media: dict) -> None:
    # Real time (speed 1): a task stays RUNNING for run_seconds() unless the test advances the clock.
    with EmulatorServer(api_keys=["sk-a", "sk-b"], speed=1, cache_dir=cache_dir) as server:
        a, b = Client(server.base_url, "sk-a"), Client(server.base_url, "sk-b")
        body = emo_body(media)
        a_ids = [a.submit(body) for _ in range(4)]
        b_id = b.submit(body)

        def status() -> dict[str, str]:
            return {t["task_id"]: t["status"] for t in server.tasks()}

        wait_for(lambda: status()[a_ids[0]] == "RUNNING" and status()[b_id] == "RUNNING", what="both keys running")
        assert [status()[t] for t in a_ids] == ["RUNNING", "PENDING", "PENDING", "PENDING"]
        pending = a.query(a_ids[1])["output"]
        assert set(pending) == {"task_id", "task_status", "submit_time"} and pending["task_status"] == "PENDING"

        # Cancel: only a PENDING task of one's own key.
        refused = "Failed to cancel the task, please confirm if the task is in PENDING status."
        assert_error(a.cancel(a_ids[0]), 400, "UnsupportedOperation", refused)
        assert_error(b.cancel(a_ids[3]), 400, "UnsupportedOperation")
        assert_error(a.cancel(str(uuid.uuid4())), 400, "UnsupportedOperation")
        canceled = a.cancel(a_ids[3])
        assert canceled.status_code == 200 and set(canceled.json()) == {"request_id"}
        assert a.query(a_ids[3])["output"]["task_status"] == "CANCELED"
        assert_error(a.cancel(a_ids[3]), 400, "UnsupportedOperation")

        # Step simulated time along; at every moment exactly one of sk-a's tasks runs until all are done.
        seen_running: list[str] = []
        deadline = time.monotonic() + 30
        while any(status()[t] in ("PENDING", "RUNNING") for t in [*a_ids[:3], b_id]):
            snapshot = status()
            running = [t for t in a_ids if snapshot[t] == "RUNNING"]
            assert len(running) <= 1, snapshot
            if running and running[0] not in seen_running:
                seen_running.append(running[0])
            server.advance(run_seconds(6) / 4)
            time.sleep(0.01)
            assert time.monotonic() < deadline, "queue did not drain"
        assert seen_running == a_ids[:3]  # FIFO

        outputs = [a.query(t)["output"] for t in a_ids[:3]]
        assert all(o["task_status"] == "SUCCEEDED" for o in outputs)
        for earlier, later in itertools.pairwise(outputs):
            assert earlier["scheduled_time"] < later["scheduled_time"]
            assert earlier["end_time"] <= later["scheduled_time"]  # never two at once
        assert b.query(b_id)["output"]["task_status"] == "SUCCEEDED"
        # sk-b's task ran while sk-a's first one did.
        b_output = b.query(b_id)["output"]
        assert b_output["scheduled_time"] < outputs[0]["end_time"]

        # Billing: exactly the successes, once each; the canceled task costs nothing.
        billed = [line["task_id"] for line in server.billing()]
        assert sorted(billed) == sorted([*a_ids[:3], b_id])
        fingerprints = {line["key_fingerprint"] for line in server.billing()}
        assert fingerprints == {key_fingerprint("sk-a"), key_fingerprint("sk-b")}


def test_task_of_another_key_or_unknown_id_is_unknown(emu: EmulatorServer, media: dict) -> None:
    owner, other = Client(emu.base_url, KEYS[-1]), Client(emu.base_url, KEYS[-2])
    task_id = owner.submit(emo_body(media, image="missing.png"))
    assert other.query(task_id)["output"] == {"task_id": task_id, "task_status": "UNKNOWN"}
    unknown = str(uuid.uuid4())
    answer = owner.query(unknown)
    assert set(answer) == {"request_id", "output"}
    assert answer["output"] == {"task_id": unknown, "task_status": "UNKNOWN"}


def test_after_24_hours_the_task_is_unknown_and_the_video_url_expired(cache_dir: Path, media: dict) -> None:
    with EmulatorServer(api_keys=["sk-x"], speed=2000, cache_dir=cache_dir) as server:
        client = Client(server.base_url, "sk-x")
        task_id = client.submit(emoji_body(media))
        url = client.wait(task_id)["output"]["video_url"]
        assert client.session.get(url).status_code == 200
        server.advance(86_400 + 1)
        expired = client.session.get(url)
        assert expired.status_code == 403
        assert expired.headers["Content-Type"] == "application/xml"
        assert expired.text.startswith('<?xml version="1.0" encoding="UTF-8"?>\n<Error>')
        assert "<Code>AccessDenied</Code>" in expired.text
        assert "<Message>Request has expired.</Message>" in expired.text
        assert client.query(task_id)["output"] == {"task_id": task_id, "task_status": "UNKNOWN"}
        assert len(server.billing()) == 1  # expiry doesn't refund or re-bill


# -- faults ---------------------------------------------------------------------------------------


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
    [("submit_500", 500, "InternalError"), ("submit_503", 503, "ServiceUnavailable")],
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


def test_probabilistic_faults_are_reproducible_with_a_seed() -> None:
    def draws(seed: int) -> list[str | None]:
        injector = FaultInjector()
        injector.configure(submit_5xx=0.3, drop_submit=0.2, query_5xx=0.4, seed=seed)
        return [injector.draw("submit") for _ in range(50)] + [injector.draw("query") for _ in range(50)]

    first = draws(7)
    assert first == draws(7)
    assert {"submit_500", "submit_503", "drop_submit", None} <= set(first[:50])
    assert {"query_500", "query_503", None} <= set(first[50:])
    assert "drop_query" not in first
    with pytest.raises(ValueError, match="must be in"):
        FaultInjector().configure(submit_5xx=1.5)
    with pytest.raises(ValueError, match="unknown fault"):
        FaultInjector().force_next("submit_418")


# -- admin over HTTP, CLI, defaults, samples ---------------------------------------------------------


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


def test_default_key_is_sk_emulator(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DASHSCOPE_EMULATOR_API_KEYS", raising=False)
    with EmulatorServer(port=0) as server:
        answer = Client(server.base_url, "sk-emulator").query(str(uuid.uuid4()))
        assert answer["output"]["task_status"] == "UNKNOWN"
    monkeypatch.setenv("DASHSCOPE_EMULATOR_API_KEYS", "sk-env-1, sk-env-2")
    with EmulatorServer(port=0) as server:
        assert server.key_count == 2
        assert Client(server.base_url, "sk-env-2").query_raw(str(uuid.uuid4())).status_code == 200
        assert Client(server.base_url, "sk-emulator").query_raw(str(uuid.uuid4())).status_code == 401


def test_cli_prints_one_line_and_stops_on_sigterm() -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(INCLUDE_DIR), os.environ.get("PYTHONPATH", "")])}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dashscope_emulator",
            "--port",
            "0",
            "--api-key",
            "sk-cli-a",
            "--api-key",
            "sk-cli-b",
            "--speed",
            "60",
            "--fault-rate",
            "0",
            "--seed",
            "1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        timer = threading.Timer(20, process.kill)
        timer.start()
        line = process.stdout.readline()  # type: ignore[union-attr]
        timer.cancel()
        banner = r"DashScope emulator listening on (http://127\.0\.0\.1:\d+) \(speed 60x, keys: 2\)\n"
        match = re.fullmatch(banner, line)
        assert match, line
        response = requests.get(
            f"{match.group(1)}/api/v1/tasks/{uuid.uuid4()}", headers={"Authorization": "Bearer sk-cli-b"}
        )
        assert response.json()["output"]["task_status"] == "UNKNOWN"
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
        stderr = process.stderr.read()  # type: ignore[union-attr]
        assert "GET /api/v1/tasks/" in stderr and "200" in stderr  # one line per request...
        assert "sk-cli" not in stderr + line  # ...and never the key
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_samples_fit_the_reference_limits(media: dict) -> None:
    from PIL import Image

    folder, boxes = media["dir"], media["boxes"]
    for name in ("portrait_square.png", "portrait_halfbody.jpg", "portrait_emoji.png"):
        with Image.open(folder / name) as image:
            width, height = image.size
        assert min(width, height) >= 400
        fx1, fy1, fx2, fy2 = boxes[name]["face_bbox"]
        ex1, ey1, ex2, ey2 = boxes[name]["ext_bbox"]
        assert 0 <= ex1 <= fx1 < fx2 <= ex2 <= width and 0 <= ey1 <= fy1 < fy2 <= ey2 <= height
        ratio = (ex2 - ex1) / (ey2 - ey1)
        assert ratio == (0.75 if name == "portrait_halfbody.jpg" else 1.0)
    with Image.open(folder / "tiny.png") as image:
        assert image.size == (300, 300)
    with wave.open(str(folder / "voice.wav")) as clip:
        assert (clip.getnchannels(), clip.getsampwidth(), clip.getframerate()) == (1, 2, 16000)
        assert 4.0 <= clip.getnframes() / clip.getframerate() <= 6.0
    with wave.open(str(folder / "long.wav")) as clip:
        assert clip.getnframes() / clip.getframerate() == pytest.approx(61.0)
    assert "mp3" in probe(folder / "voice.mp3")
    assert (folder / "not_audio.ogg").read_bytes()[:4] == b"OggS"


def test_serve_directory_supports_head_and_range(media: dict) -> None:
    data = (media["dir"] / "voice.wav").read_bytes()
    head = requests.head(f"{media['url']}/voice.wav")
    assert head.status_code == 200 and int(head.headers["Content-Length"]) == len(data)
    part = requests.get(f"{media['url']}/voice.wav", headers={"Range": "bytes=-10"})
    assert part.status_code == 206 and part.content == data[-10:]
    assert requests.get(f"{media['url']}/voice.wav", headers={"Range": f"bytes={len(data)}-"}).status_code == 416
    # The emulator_error query string doesn't change which file is served.
    assert requests.get(f"{media['url']}/tiny.png?emulator_error=InvalidFile.Value").status_code == 200


def test_format_time_is_utc_plus_8_with_milliseconds() -> None:
    assert format_time(0) == "1970-01-01 08:00:00.000"
    assert format_time(1_757_572_418.7164) == "2025-09-11 14:33:38.716"


def test_media_sniffing_and_durations(media: dict, tmp_path: Path) -> None:
    from dashscope_emulator.media import audio_duration, sniff_audio, sniff_image

    folder = media["dir"]
    assert sniff_image((folder / "portrait_square.png").read_bytes()) == "png"
    assert sniff_image((folder / "portrait_halfbody.jpg").read_bytes()) == "jpeg"
    assert sniff_image(b"GIF89a....") is None
    assert sniff_audio((folder / "voice.mp3").read_bytes()) == "mp3"
    assert sniff_audio((folder / "not_audio.ogg").read_bytes()) is None
    # A 32-bit float WAV, which the wave module refuses: the RIFF fallback still finds its length.
    floats = tmp_path / "float.wav"
    subprocess.run(
        [ffmpeg_exe(), "-loglevel", "error", "-i", str(folder / "voice.wav"), "-c:a", "pcm_f32le", str(floats)],
        check=True,
    )
    wav_seconds = audio_duration((folder / "voice.wav").read_bytes(), "wav")
    assert audio_duration(floats.read_bytes(), "wav") == pytest.approx(wav_seconds, abs=0.01)
    assert audio_duration((folder / "voice.mp3").read_bytes(), "mp3") == pytest.approx(wav_seconds, abs=0.15)
