"""The output store fails in the middle of uploading a video: nothing partial, retried, said in the outcome.

``talking_heads`` writes to S3 (moto in server mode) through :class:`FaultyS3Proxy`, which closes the
connection half-way through chosen video uploads. Checked against the store itself and against the
emulator's videos and billing: no incomplete object ever appears under ``videos/``, a transient failure
is retried to a complete video whose bytes are the service's, and a store that stays down ends the row
``failed``/``StoreFailed`` saying the video was generated and billed, which a later run stores
without generating (or paying for) it again.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import requests

from tests.harness.reliability import Media, count_leaks, run_dag, submits, write_table
from tests.harness.s3_proxy import FaultyS3Proxy
from tests.harness.services import s3_client

ROWS = ("r-square", "r-halfbody", "r-emoji")
KINDS = ("emo-square", "emo-halfbody", "emoji")


@pytest.fixture
def store(moto_s3: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The faulty proxy in front of moto, as the Airflow connection ``s3_flaky``."""
    with FaultyS3Proxy(moto_s3) as proxy:
        # Fewer botocore retries than its default (s3fs retries on top): a store that stays down fails a
        # try in seconds, not a minute; the behaviour under test is the same.
        extra = {
            "endpoint_url": proxy.url,
            "region_name": "us-east-1",
            "config_kwargs": {"retries": {"max_attempts": 2, "mode": "standard"}},
        }
        monkeypatch.setenv(
            "AIRFLOW_CONN_S3_FLAKY",
            json.dumps({"conn_type": "aws", "login": "testing", "password": "testing", "extra": extra}),
        )
        yield proxy


def _videos(s3: Any, bucket: str, prefix: str) -> dict[str, bytes]:
    listing = s3.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/videos/").get("Contents", [])
    return {o["Key"].rsplit("/", 1)[-1]: s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read() for o in listing}


def _service_video(emulator: Any, task_id: str) -> bytes:
    """The video as the service serves it, from the task's own result URL."""
    from dashscope_provider.hooks.dashscope import DashScopeHook

    task = DashScopeHook().get_task(task_id)
    assert task.video_url
    return requests.get(task.video_url, timeout=30).content


def _read_outcomes(s3: Any, bucket: str, prefix: str, run_id: str) -> pd.DataFrame:
    from talking_heads.storage import safe_name

    body = s3.get_object(Bucket=bucket, Key=f"{prefix}/outcomes/{safe_name(run_id)}.csv")["Body"]
    return pd.read_csv(body, dtype=str, keep_default_na=False, na_values=[""])


@pytest.mark.timeout(600)
def test_upload_cut_midway_is_retried_and_never_leaves_a_partial_video(
    airflow_db: str, emulator: Any, media: Media, moto_s3: str, store: FaultyS3Proxy, tmp_path: Path
) -> None:
    from tests.conftest import S3_BUCKET

    started = time.monotonic()
    s3 = s3_client(moto_s3)
    table = write_table(tmp_path / "t.csv", [media.row(r, k) for r, k in zip(ROWS, KINDS, strict=True)])

    # -- transient: the first two video uploads are cut half-way, then the store is fine -----------------
    store.cut_uploads = 2
    prefix = "store-faults/transient"
    run_id, _ = run_dag(table, f"s3://{S3_BUCKET}/{prefix}", storage_conn_id="s3_flaky")
    transient_cuts = len(store.cuts)
    assert transient_cuts == 2
    outcomes = _read_outcomes(s3, S3_BUCKET, prefix, run_id).set_index("row_id")
    assert (outcomes.loc[list(ROWS), "status"] == "succeeded").all()
    stored = _videos(s3, S3_BUCKET, prefix)
    assert sorted(stored) == sorted(f"{r}.mp4" for r in ROWS)
    for row_id in ROWS:
        service = _service_video(emulator, outcomes.loc[row_id, "task_id"])
        assert stored[f"{row_id}.mp4"] == service  # complete, and the service's bytes
        assert outcomes.loc[row_id, "video_sha256"] == hashlib.sha256(service).hexdigest()
        assert int(outcomes.loc[row_id, "video_bytes"]) == len(service)

    # -- down: every video upload is cut; the rows end StoreFailed, nothing partial is stored ------------
    store.always_cut = True
    prefix = "store-faults/down"
    # One row: each try of a store that stays down takes seconds (s3fs and botocore retry first).
    table_down = write_table(tmp_path / "down.csv", [media.row("d-r-square", "emo-square")])
    run_id, _ = run_dag(table_down, f"s3://{S3_BUCKET}/{prefix}", storage_conn_id="s3_flaky")
    down_cuts = len(store.cuts) - transient_cuts
    outcomes = _read_outcomes(s3, S3_BUCKET, prefix, run_id).set_index("row_id")
    down_rows = ["d-r-square"]
    assert (outcomes.loc[down_rows, "status"] == "failed").all()
    assert (outcomes.loc[down_rows, "code"] == "StoreFailed").all()
    for row_id in down_rows:
        message = outcomes.loc[row_id, "message"]
        assert "generated (and billed) but not stored" in message and "Rerun to store it" in message, message
    assert _videos(s3, S3_BUCKET, prefix) == {}  # no partial video looking complete
    billed_before = len(emulator.billing())
    tasks_before = len(emulator.tasks())

    # -- the store is back: a rerun stores the videos without generating them again ---------------------
    store.always_cut = False
    mark = len(emulator.request_log())
    run_id, _ = run_dag(table_down, f"s3://{S3_BUCKET}/{prefix}", storage_conn_id="s3_flaky")
    outcomes = _read_outcomes(s3, S3_BUCKET, prefix, run_id).set_index("row_id")
    assert (outcomes.loc[down_rows, "status"] == "succeeded").all()
    assert submits(emulator, mark) == []  # nothing submitted: stored from the tasks already paid for
    assert (len(emulator.tasks()), len(emulator.billing())) == (tasks_before, billed_before)
    stored = _videos(s3, S3_BUCKET, prefix)
    for row_id in down_rows:
        assert stored[f"{row_id}.mp4"] == _service_video(emulator, outcomes.loc[row_id, "task_id"])

    leaks = count_leaks(tmp_path)
    assert leaks == 0
    print(
        f"\nSTORE-FAULTS rows={len(ROWS) + len(down_rows)} uploads_cut={len(store.cuts)} "
        f"(transient={transient_cuts}, store_down={down_cuts}) partial_objects=0 "
        f"store_failed_outcomes={len(down_rows)} "
        f"regenerated_after_store_failure=0 double_bills=0 leaks={leaks} wall={time.monotonic() - started:.1f}s"
    )
