"""``talking_heads`` from a folder of files: no boxes, media as local paths, ``s3://`` and ``oss://`` URLs.

Real Airflow (``dag.test()``), the emulator over HTTP (it detects faces and fetches the presigned
media), S3 on moto's server (the output root, and media), and OSS on the strict signature-checking
double (media). Two runs: every detection is paid once per image and ratio, and no task is made twice.
"""

from __future__ import annotations

import json
import shutil
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from dashscope_emulator import EmulatorServer, make_samples
from PIL import Image

from tests.conftest import S3_BUCKET
from tests.harness.oss_double import OSSDouble
from tests.harness.services import s3_client, s3_connection

REPO_ROOT = Path(__file__).resolve().parents[2]
OSS_KEY_ID, OSS_SECRET, OSS_BUCKET = "LTAI-files-test", "oss-secret-for-files", "portraits"
#: This module's prefix in the session's shared S3 server (other tests write their own).
OUT = f"from-files-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A user's folder: sample portraits and clips, a picture with nobody in it, and a table beside them."""
    folder = tmp_path / "shoot"
    make_samples(folder)
    Image.new("RGB", (640, 640), (128, 128, 128)).save(folder / "empty_room.png")
    return folder


@pytest.fixture
def stores(folder: Path, moto_s3: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    s3 = s3_client(moto_s3)
    s3.put_object(
        Bucket=S3_BUCKET, Key="in/portrait_halfbody.jpg", Body=(folder / "portrait_halfbody.jpg").read_bytes()
    )
    s3.put_object(Bucket=S3_BUCKET, Key="in/voice.mp3", Body=(folder / "voice.mp3").read_bytes())
    monkeypatch.setenv("AIRFLOW_CONN_FILES_S3", json.dumps(s3_connection(moto_s3)))
    with OSSDouble({OSS_KEY_ID: OSS_SECRET}, buckets=[OSS_BUCKET], region="cn-hangzhou") as oss:
        oss.put(OSS_BUCKET, "emoji/portrait_emoji.png", (folder / "portrait_emoji.png").read_bytes(), "image/png")
        # oss:// media outside the output store: the filesystem reads the OSS_* environment, as ossfs does.
        for name, value in {
            "OSS_ACCESS_KEY_ID": OSS_KEY_ID,
            "OSS_ACCESS_KEY_SECRET": OSS_SECRET,
            "OSS_ENDPOINT": oss.endpoint,
            "OSS_REGION": "cn-hangzhou",
        }.items():
            monkeypatch.setenv(name, value)
        yield {"s3": s3, "oss": oss}


def _table(folder: Path) -> Path:
    rows = [
        {"row_id": "local-square", "model": "emo-v1", "image_url": "portrait_square.png", "audio_url": "voice.wav"},
        {
            "row_id": "s3-halfbody",
            "model": "emo-v1",
            "image_url": f"s3://{S3_BUCKET}/in/portrait_halfbody.jpg",
            "audio_url": f"s3://{S3_BUCKET}/in/voice.mp3",
            "ratio": "3:4",
        },
        {
            "row_id": "oss-emoji",
            "model": "emoji-v1",
            "image_url": f"oss://{OSS_BUCKET}/emoji/portrait_emoji.png",
            "driven_id": "mengwa_kaixin",
        },
        # The same image and ratio as the first row: one detection serves both.
        {
            "row_id": "local-again",
            "model": "emo-v1",
            "image_url": str(folder / "portrait_square.png"),
            "audio_url": "voice.wav",
        },
        {"row_id": "nobody", "model": "emo-v1", "image_url": "empty_room.png", "audio_url": "voice.wav"},
    ]
    path = folder / "table.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def _run(table: Path, day: int) -> pd.DataFrame:
    from airflow.sdk import ObjectStoragePath
    from talking_heads.storage import safe_name

    from tests.harness.airflow_compat import DagBag

    dag = DagBag(str(REPO_ROOT / "dags")).get_dag("talking_heads")
    conf = {
        "input_table": str(table),
        "output_root": f"s3://{S3_BUCKET}/{OUT}",
        "storage_conn_id": "files_s3",
        "poll_interval_seconds": 0.2,
    }
    run = dag.test(logical_date=datetime(2026, 12, day, tzinfo=UTC), run_conf=conf)
    outcomes = ObjectStoragePath(f"s3://{S3_BUCKET}/{OUT}/outcomes/{safe_name(run.run_id)}.csv", conn_id="files_s3")
    with outcomes.open("rb") as handle:
        return pd.read_csv(handle).set_index("row_id")


def test_a_folder_of_files_becomes_videos_paying_each_detection_once(
    airflow_db: str, emulator: EmulatorServer, folder: Path, stores: dict[str, Any]
) -> None:
    table = _table(folder)
    first = _run(table, 1)

    assert first["status"].to_dict() == {
        "local-square": "succeeded",
        "s3-halfbody": "succeeded",
        "oss-emoji": "succeeded",
        "local-again": "succeeded",
        "nobody": "failed",
    }
    assert first["video_ratio"].dropna().to_dict() == {
        "local-square": "1:1",
        "s3-halfbody": "3:4",
        "oss-emoji": "standard",
        "local-again": "1:1",
    }
    assert first.loc["nobody", "code"] == "InvalidFile.NoHuman"  # the detection's verdict; never submitted
    assert pd.isna(first.loc["nobody", "task_id"])
    paid = first["detection_images"].to_dict()
    assert {k: paid[k] for k in ("s3-halfbody", "oss-emoji", "nobody")} == dict.fromkeys(
        ["s3-halfbody", "oss-emoji", "nobody"], 1
    )
    assert paid["local-square"] + paid["local-again"] == 1  # one of the two rows paid for the shared image
    assert first["detection_cost_cny"].sum() == pytest.approx(3 * 0.004)  # three emo-detect-v1 images
    assert pd.isna(first.loc["oss-emoji", "detection_cost_cny"])  # emoji-detect-v1: no published price

    detections = emulator.detections()
    assert Counter((d["model"], d["ratio"], d["passed"]) for d in detections) == {
        ("emo-detect-v1", "1:1", True): 1,
        ("emo-detect-v1", "3:4", True): 1,
        ("emoji-detect-v1", "1:1", True): 1,
        ("emo-detect-v1", "1:1", False): 1,
    }
    tasks = emulator.tasks()
    assert len(tasks) == 4
    # The service was given presigned https(s) URLs, never a store URL or a path; none reached the outcomes.
    assert all(t["input"]["image_url"].startswith("http") for t in tasks)
    assert not first.astype(str).apply(lambda c: c.str.contains("Signature")).any().any()
    videos = stores["s3"].list_objects_v2(Bucket=S3_BUCKET, Prefix=f"{OUT}/videos/")["Contents"]
    assert sorted(v["Key"] for v in videos) == [
        f"{OUT}/videos/{r}.mp4" for r in ("local-again", "local-square", "oss-emoji", "s3-halfbody")
    ]
    inputs = stores["s3"].list_objects_v2(Bucket=S3_BUCKET, Prefix=f"{OUT}/inputs/")["Contents"]
    assert len(inputs) == 3  # portrait_square.png, voice.wav and empty_room.png, once each
    oss_requests = stores["oss"].requests()
    assert {r.auth for r in oss_requests} <= {"v4", "v4-url"} and all(r.status < 400 for r in oss_requests)
    assert any(r.auth == "v4-url" for r in oss_requests)  # the emulator fetched the presigned URL

    second = _run(table, 2)
    videos_rows = ["local-square", "s3-halfbody", "oss-emoji", "local-again"]
    assert second["status"].to_dict() == {**dict.fromkeys(videos_rows, "skipped"), "nobody": "failed"}
    assert second.loc["nobody", "code"] == "InvalidFile.NoHuman"
    assert second["detection_images"].fillna(0).sum() == 0
    assert len(emulator.detections()) == len(detections)  # no detection paid twice
    assert len(emulator.tasks()) == 4  # no task made twice

    from talking_heads.reporting.report import write_report

    written = write_report(f"s3://{S3_BUCKET}/{OUT}", conn_id="files_s3")
    assert written["detections"] == 4
    shutil.rmtree(folder)
