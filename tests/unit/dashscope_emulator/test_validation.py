"""Request and media checks (:mod:`dashscope_emulator.validation`): the documented errors, over HTTP."""

from __future__ import annotations

import json
import wave
from collections.abc import Callable
from pathlib import Path

import pytest
from dashscope_emulator import EmulatorServer, key_fingerprint

from tests.unit.dashscope_emulator.helpers import (
    DETECT,
    FORMAT_MESSAGE,
    SUBMIT,
    Client,
    assert_error,
    detect_body,
    emo_body,
    emoji_body,
)


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


# -- the face-detect body --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mutate", "code", "message"),
    [
        (lambda b: "not json", "InvalidParameter", FORMAT_MESSAGE),
        (lambda b: [b], "InvalidParameter", FORMAT_MESSAGE),
        (lambda b: {k: v for k, v in b.items() if k != "model"}, "InvalidParameter", FORMAT_MESSAGE),
        (lambda b: {**b, "input": {}}, "InvalidParameter", FORMAT_MESSAGE),
        (lambda b: {k: v for k, v in b.items() if k != "parameters"}, "InvalidParameter", FORMAT_MESSAGE),
        (lambda b: {**b, "parameters": {"ratio": 1}}, "InvalidParameter", FORMAT_MESSAGE),
        (lambda b: {**b, "model": "emo-v1"}, "InvalidParameter", "Model not exist."),
        (
            lambda b: {**b, "parameters": {"ratio": "16:9"}},
            "InvalidParameter",
            "The ratio is invalid: emo-detect-v1 accepts 1:1 or 3:4.",
        ),
        (
            lambda b: {**b, "model": "emoji-detect-v1", "parameters": {"ratio": "3:4"}},
            "InvalidParameter",
            "The ratio is invalid: emoji-detect-v1 accepts 1:1.",
        ),
        (
            lambda b: {**b, "input": {"image_url": "file:///etc/passwd"}},
            "InvalidURL",
            "Required URL is missing or invalid, please check the request URL.",
        ),
    ],
    ids=[
        "not-json",
        "not-object",
        "no-model",
        "no-image",
        "no-ratio",
        "ratio-not-string",
        "video-model",
        "emo-ratio-16:9",
        "emoji-ratio-3:4",
        "file-url",
    ],
)
def test_detect_body_errors_are_not_billed(
    emu: EmulatorServer, media: dict, key: str, mutate: Callable, code: str, message: str
) -> None:
    body = mutate(detect_body(f"{media['url']}/portrait_square.png"))
    client = Client(emu.base_url, key)
    raw = body if isinstance(body, str) else json.dumps(body)
    response = client.session.post(
        emu.base_url + DETECT,
        data=raw,
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    assert_error(response, 400, code, message)
    assert all(d["key_fingerprint"] != key_fingerprint(key) for d in emu.detections())


def test_detect_is_synchronous_and_refuses_the_async_header(emu: EmulatorServer, media: dict, key: str) -> None:
    client = Client(emu.base_url, key)
    body = detect_body(f"{media['url']}/portrait_square.png")
    refused = client.detect_raw(body, headers=client.headers())  # with X-DashScope-Async: enable
    assert_error(refused, 403, "AccessDenied", "current user api does not support asynchronous calls")
    text = client.session.post(
        emu.base_url + DETECT, data=json.dumps(body), headers={"Authorization": f"Bearer {key}"}
    )  # no Content-Type
    assert_error(text, 400, "InvalidParameter", FORMAT_MESSAGE)
    assert client.detect_raw(body).status_code == 200


@pytest.mark.parametrize(
    ("image", "code", "message"),
    [
        ("no-such-file.png", "InvalidParameter.DataInspection", DOWNLOAD),
        (
            "samples.json",
            "InvalidURL",
            "The request URL is invalid, please check the request URL is available and the request image format "
            "is one of the following types: JPEG, JPG, PNG, BMP, and WEBP.",
        ),
    ],
    ids=["image-404", "not-an-image"],
)
def test_detect_of_an_image_that_cannot_be_read_is_a_failed_request(
    emu: EmulatorServer, media: dict, key: str, image: str, code: str, message: str
) -> None:
    response = Client(emu.base_url, key).detect_raw(detect_body(f"{media['url']}/{image}"))
    assert_error(response, 400, code, message)  # no usage: not billed
    assert all(d["key_fingerprint"] != key_fingerprint(key) for d in emu.detections())
