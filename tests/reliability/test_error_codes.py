"""One table row per documented API error code, end to end through ``talking_heads``.

Every code the reference documents that a row passing validation can still meet is provoked the way
the service would meet it: media it cannot fetch or read, sizes and lengths past its limits, and the
detection failures (asked of the emulator with ``?emulator_error=``). Pre-flight checks are off, so the
service itself reports each one. A second run of the same table through a connection with a wrong key
meets ``InvalidApiKey`` on every submit. Rows that break a validation rule are in the table too, to
show they never reach the service. Checked against the emulator's own request log, tasks and billing.

Codes not in the table, and why: the submit-time ``InvalidParameter`` (a missing or malformed field, a
bad ``style_level``) is what validation refuses before any request is made, so a table cannot provoke
it; ``Throttling.RateQuota`` and 5xx are transient and retried (``test_faults``).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.harness.reliability import Media, count_leaks, run_dag, submits, write_table

# Messages as the reference pages give them (pages 000/001, error codes).
IMAGE_FORMAT = (
    "The request URL is invalid, please check the request URL is available and the request image "
    "format is one of the following types: JPEG, JPG, PNG, BMP, and WEBP."
)
RESOLUTION = (
    "The image resolution is invalid, please make sure that the largest length of image is smaller "
    "than 7000, and the smallest length of image is larger than 400."
)
DOWNLOAD = "Unable to download the media resource during the data inspection process."
AUDIO_LONG = "The input audio is longer than 60s!"
AUDIO_SIZE = "File size is larger than 15MB."
AUDIO_TYPE = "File type is not supported. Allowed types are: .wav, .mp3."
DETECTION = {
    "InvalidFile.Content": "The input image has no human body. Please upload other image with single person.",
    "InvalidFile.BodyProportion": "The proportion of the detected person in the picture is too large or too small, "
    "please upload other image.",
    "InvalidFile.Value": "The value of the image is invalid, please upload other clearer image.",
    "InvalidFile.FrontBody": "The pose of the detected person is invalid, please upload other image with the "
    "front view.",
    "InvalidFile.FullFace": "The pose of the detected face is invalid, please upload other image with whole face.",
    "InvalidFile.FacePose": "The pose of the detected face is invalid, please upload other image with the "
    "expected orientation.",
}
MULTI_BODY = "The input image has multi human bodies. Please upload other image with single person."


@pytest.fixture(scope="module")
def bad_media(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Files the service refuses: not an image, a 16 MB "mp3" (the limit is 15 MB)."""
    from dashscope_emulator import serve_directory

    folder = tmp_path_factory.mktemp("bad-media")
    (folder / "not_image.png").write_text("this is not a picture\n")
    with (folder / "huge.mp3").open("wb") as handle:
        handle.truncate(16 * 1024 * 1024)
    with serve_directory(folder, port=0) as base_url:
        yield base_url


def _rows(media: Media, bad_url: str) -> tuple[list[dict[str, Any]], dict[str, tuple[str, str]], set[str]]:
    """The table, the API failures expected per row (code, message), and the rows that must succeed."""
    rows: list[dict[str, Any]] = []
    expected: dict[str, tuple[str, str]] = {}

    def api_row(row_id: str, code: str, message: str, kind: str = "emo-square", **changes: Any) -> None:
        rows.append(media.row(row_id, kind, **changes))
        expected[row_id] = (code, message)

    def with_row(url: str, row_id: str) -> str:
        return f"{url}{'&' if '?' in url else '?'}row={row_id}"

    api_row("image-format", "InvalidURL", IMAGE_FORMAT, image_url=with_row(f"{bad_url}/not_image.png", "image-format"))
    api_row(
        "image-too-small",
        "InvalidFile.Resolution",
        RESOLUTION,
        image_url=with_row(f"{media.url}/tiny.png", "image-too-small"),
        face_bbox="[10, 10, 200, 200]",
        ext_bbox="[0, 0, 290, 290]",
    )
    api_row(
        "image-missing",
        "InvalidParameter.DataInspection",
        DOWNLOAD,
        image_url=with_row(f"{media.url}/no-such-file.png", "image-missing"),
    )
    api_row("audio-too-long", "InvalidURL", AUDIO_LONG, audio_url=f"{media.url}/long.wav")
    api_row("audio-too-big", "InvalidURL", AUDIO_SIZE, audio_url=f"{bad_url}/huge.mp3")
    api_row("audio-wrong-type", "InvalidURL", AUDIO_TYPE, audio_url=f"{media.url}/not_audio.ogg")
    api_row("audio-missing", "InvalidParameter.DataInspection", DOWNLOAD, audio_url=f"{media.url}/no-such.wav")
    for code, message in DETECTION.items():
        row_id = f"detect-{code.split('.')[-1].lower()}"
        kind = "emoji" if code == "InvalidFile.FacePose" else "emo-square"  # both models meet detection codes
        base = media.row(row_id, kind)["image_url"]
        api_row(row_id, code, message, kind, image_url=f"{base}&emulator_error={code}")
    base = media.row("detect-multi", "emo-halfbody")["image_url"]
    api_row(
        "detect-multi",
        "InvalidFile.Content",
        MULTI_BODY,
        "emo-halfbody",
        image_url=f"{base}&emulator_error=InvalidFile.Content.multi",
    )

    succeed = {"ok-emo", "ok-emoji"}
    rows += [media.row("ok-emo", "emo-halfbody"), media.row("ok-emoji", "emoji")]
    # Rows validation refuses: never sent, whatever the connection.
    rows += [
        media.row("invalid-style", style_level="wild"),
        media.row("invalid-ratio", ext_bbox="[0, 100, 800, 700]"),  # 4:3: neither 1:1 nor 3:4
        media.row("invalid-driven", "emoji", driven_id="no_such_template"),
        media.row("invalid-audio", audio_url=None),
    ]
    return rows, expected, succeed


INVALID_FIELDS = {
    "invalid-style": "style_level",
    "invalid-ratio": "ext_bbox",
    "invalid-driven": "driven_id",
    "invalid-audio": "audio_url",
}


@pytest.mark.timeout(600)
def test_every_documented_error_code_ends_its_row_with_that_code(
    airflow_db: str, emulator: Any, media: Media, bad_media: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started = time.monotonic()
    rows, expected, succeed = _rows(media, bad_media)
    table = write_table(tmp_path / "codes.csv", rows)

    # -- run 1: the right key; the service reports each media problem -------------------------------------
    _, outcomes = run_dag(table, tmp_path / "out", preflight_checks=False)
    assert len(outcomes) == len(rows) and outcomes["row_id"].is_unique
    by_id = outcomes.set_index("row_id")
    got = {r: (by_id.loc[r, "code"], by_id.loc[r, "message"]) for r in expected}
    assert got == expected
    assert (by_id.loc[list(expected), "status"] == "failed").all()
    assert by_id.loc[list(expected), "task_id"].notna().all()  # the service made a task and failed it
    assert (by_id.loc[sorted(succeed), "status"] == "succeeded").all()
    for row_id, field in INVALID_FIELDS.items():
        assert by_id.loc[row_id, "status"] == "failed"
        message = by_id.loc[row_id, "message"]
        assert f"row_id '{row_id}'" in message and f"field '{field}'" in message, message

    sent = submits(emulator)
    assert Counter(r["row"] for r in sent if r["task_id"]) == dict.fromkeys([*expected, *succeed], 1)
    assert not {r["row"] for r in sent} & set(INVALID_FIELDS)  # nothing invalid reached the service
    failed_tasks = {t["task_id"]: t for t in emulator.tasks() if t["status"] == "FAILED"}
    service_said = {
        r: (failed_tasks[by_id.loc[r, "task_id"]]["code"], failed_tasks[by_id.loc[r, "task_id"]]["message"])
        for r in expected
    }
    assert service_said == expected  # the outcome carries exactly what the service reported
    billed = {line["task_id"] for line in emulator.billing()}
    assert billed == {by_id.loc[r, "task_id"] for r in succeed}  # failed tasks cost nothing

    # -- run 2: a wrong key; every submit is refused with InvalidApiKey, nothing is created -------------
    wrong_key = {"conn_type": "dashscope", "host": emulator.base_url, "password": "sk-wrong"}
    monkeypatch.setenv("AIRFLOW_CONN_DASHSCOPE_WRONG_KEY", json.dumps(wrong_key))
    tasks_before, mark = len(emulator.tasks()), len(emulator.request_log())
    _, refused = run_dag(
        table, tmp_path / "out-wrong-key", dashscope_conn_id="dashscope_wrong_key", preflight_checks=False
    )
    assert len(refused) == len(rows)
    sendable = refused[~refused["row_id"].isin(list(INVALID_FIELDS))]
    assert set(sendable["code"]) == {"InvalidApiKey"} and set(sendable["status"]) == {"failed"}
    assert sendable["task_id"].isna().all()
    assert len(emulator.tasks()) == tasks_before
    wrong_key_submits = submits(emulator, mark)
    assert {r["status"] for r in wrong_key_submits} == {401}
    assert len(wrong_key_submits) == len(sendable)  # a 401 is not retried
    assert not {r["row"] for r in wrong_key_submits} & set(INVALID_FIELDS)

    leaks = count_leaks(tmp_path / "out") + count_leaks(tmp_path / "out-wrong-key", key="sk-wrong")
    assert leaks == 0
    codes = Counter(c for c, _ in expected.values()) + Counter({"InvalidApiKey": 1})
    print(
        f"\nERROR-CODES rows={len(rows)} api_codes={len(codes)} {dict(codes)} "
        f"validation_refusals={len(INVALID_FIELDS)} "
        f"outcomes_recorded={len(outcomes) + len(refused)} invalid_submits=0 failed_tasks_billed=0 leaks={leaks} "
        f"wall={time.monotonic() - started:.1f}s"
    )


def test_table_rows_cover_every_code_the_emulator_documents(media: Media) -> None:
    """The table above keeps up with the emulator: every detection code it can report has a row."""
    from dashscope_emulator.server import EMULATOR_ERRORS

    _, expected, _ = _rows(media, "http://127.0.0.1:9")
    assert set(EMULATOR_ERRORS.values()) <= set(expected.values())
