"""Tasks, queue, results, expiry and billing (:mod:`dashscope_emulator.service`), over HTTP."""

from __future__ import annotations

import itertools
import json
import re
import time
import uuid
import wave
from pathlib import Path

import pytest
from dashscope_emulator import EmulatorServer, emoji_template_seconds, key_fingerprint, run_seconds

from tests.unit.dashscope_emulator.helpers import (
    KEYS,
    TIME_FORMAT,
    Client,
    assert_error,
    emo_body,
    emoji_body,
    probe,
    probed_seconds,
    wait_for,
)


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


def test_emulators_given_no_cache_share_the_one_the_environment_names(
    media: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``$DASHSCOPE_EMULATOR_RENDER_CACHE``: a second emulator serves the first one's render without rendering it
    again, and the renders outlive both (the test suite's emulators share one cache so)."""
    monkeypatch.setenv("DASHSCOPE_EMULATOR_RENDER_CACHE", str(tmp_path / "renders"))
    body = emoji_body(media, "jingdian_lei")
    renders = []
    for _ in range(2):
        with EmulatorServer(api_keys=["sk-cache"], speed=2000) as server:
            client = Client(server.base_url, "sk-cache")
            answer = client.wait(client.submit(body))
            assert answer["output"]["task_status"] == "SUCCEEDED", answer
            _download(client, answer["output"]["video_url"], tmp_path / "v.mp4")  # served from the shared cache
            assert server.renderer is not None
            renders.append(server.renderer.renders)
    assert renders == [1, 0]
    assert len(list((tmp_path / "renders").glob("*.mp4"))) == 1


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
