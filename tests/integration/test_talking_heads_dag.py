"""``talking_heads`` end to end with ``dag.test()``: real Airflow, the emulator over real HTTP.

Both models produce stored, playable videos; every row gets exactly one outcome; a second run of
the same table pays for nothing (checked against the emulator's own billing log).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import pandas as pd
import pytest
from dashscope_emulator import EmulatorServer

from tests.conftest import DAG_TEST_SPEED
from tests.harness.samples import sample_row
from tests.harness.services import s3_client
from tests.integration.conftest import KEY

REPO_ROOT = Path(__file__).resolve().parents[2]


def _table(path: Path, media_url: str, boxes: dict) -> Path:
    row = partial(sample_row, media_url, boxes)
    rows = [
        row("square", "emo-v1", "portrait_square.png", "voice.wav", style_level="calm", speaker="Ada"),
        row("halfbody", "emo-v1", "portrait_halfbody.jpg", "voice.mp3", speaker="Ada"),
        row("emoji", "emoji-v1", "portrait_emoji.png", driven_id="mengwa_kaixin", speaker="Ben"),
        {
            "row_id": "too-small",
            "model": "emo-v1",
            "image_url": f"{media_url}/tiny.png",
            "audio_url": f"{media_url}/voice.wav",
            "face_bbox": "[10, 10, 200, 200]",
            "ext_bbox": "[0, 0, 290, 290]",
            "speaker": "Cy",
        },
        row(
            "face-pose",
            "emo-v1",
            "portrait_square.png",
            "voice.wav",
            emulator_error="InvalidFile.FacePose",
            speaker="Eve",
        ),
        {
            "row_id": "invalid",
            "model": "emo-v1",
            "image_url": f"{media_url}/portrait_square.png",
            "face_bbox": "[1, 2, 3]",
            "ext_bbox": "[0, 0, 100, 100]",
            "speaker": "Dee",
        },
    ]
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def _run(table: Path, output_root: Path, day: int, **extra_conf: object) -> pd.DataFrame:
    return _run_with_state(table, output_root, day, **extra_conf)[1]


def _run_with_state(table: Path, output_root: Path, day: int, **extra_conf: object) -> tuple[str, pd.DataFrame]:
    """One run through ``dag.test()``: its final state and its outcome table."""
    from talking_heads.storage import safe_name

    from tests.harness.airflow_compat import DagBag

    dag = DagBag(str(REPO_ROOT / "dags")).get_dag("talking_heads")
    conf = {"input_table": str(table), "output_root": str(output_root), "poll_interval_seconds": 0.2, **extra_conf}
    run = dag.test(logical_date=datetime(2026, 11, day, tzinfo=UTC), run_conf=conf)
    return str(run.state), pd.read_csv(output_root / "outcomes" / f"{safe_name(run.run_id)}.csv")


def test_dag_generates_both_models_and_never_pays_twice(
    airflow_db: str, emulator: EmulatorServer, media: tuple[str, dict], tmp_path: Path
) -> None:
    media_url, boxes = media
    table = _table(tmp_path / "table.csv", media_url, boxes)
    output_root = tmp_path / "out"

    state, first = _run_with_state(table, output_root, 1)
    assert state == "success"  # rows failed, but fail_run_on_row_failures is off by default
    status = dict(zip(first["row_id"], first["status"], strict=True))
    assert status == {
        "square": "succeeded",
        "halfbody": "succeeded",
        "emoji": "succeeded",
        "too-small": "failed",
        "face-pose": "failed",
        "invalid": "failed",
    }
    by_id = first.set_index("row_id")
    assert by_id.loc["square", "video_ratio"] == "1:1"
    assert by_id.loc["halfbody", "video_ratio"] == "3:4"
    assert by_id.loc["emoji", "video_ratio"] == "standard"
    assert by_id.loc["too-small", "code"] == "PreflightCheck"  # caught before any spend
    assert "field 'image_url'" in by_id.loc["too-small", "message"]
    assert by_id.loc["face-pose", "code"] == "InvalidFile.FacePose"  # the service's own verdict
    assert by_id.loc["face-pose", "message"].startswith("The pose of the detected face is invalid")
    assert "field 'face_bbox'" in by_id.loc["invalid", "message"]
    assert by_id.loc["square", "speaker"] == "Ada"  # extra columns carried through
    assert pd.isna(by_id.loc["emoji", "cost_usd"])  # no reference price for emoji-v1: unknown, not invented

    billing = {b["task_id"]: b for b in emulator.billing()}
    assert len(billing) == 3
    for row_id in ("square", "halfbody", "emoji"):
        line = by_id.loc[row_id]
        bill = billing[line["task_id"]]
        assert float(line["video_duration"]) == pytest.approx(float(bill["video_duration"]))
        video = output_root / "videos" / f"{row_id}.mp4"
        assert video.stat().st_size == int(line["video_bytes"]) > 1000
        assert video.read_bytes()[4:8] == b"ftyp"  # an MP4 container
    expected_usd = round(float(by_id.loc["square", "video_duration"]) * 0.011469, 6)
    assert float(by_id.loc["square", "cost_usd"]) == pytest.approx(expected_usd)
    submitted = [r for r in emulator.request_log() if r["method"] == "POST" and r["path"].endswith("video-synthesis")]
    assert len(submitted) == 4  # the invalid and the undersized rows never reached the service

    _assert_key_never_leaked(output_root)

    # Asked to, the run fails on its failed rows, after writing every row's outcome and its note.
    state, second = _run_with_state(table, output_root, 2, fail_run_on_row_failures=True)
    assert state == "failed"
    assert dict(zip(second["row_id"], second["status"], strict=True))["square"] == "skipped"
    assert (second["status"] == "failed").sum() == 3 and len(second) == 6
    assert len(emulator.billing()) == 3  # nothing paid twice

    _assert_report_matches_billing(output_root, emulator.billing())


def _assert_report_matches_billing(output_root: Path, billing: list[dict]) -> None:
    """The cost report, from the outcome tables alone, equals the service's own billing, to the cent."""
    from talking_heads.reporting.report import write_report

    write_report(str(output_root))
    table = pd.read_csv(output_root / "reports" / "by_model_ratio.csv")
    prices = {"1:1": (0.011469, 0.08), "3:4": (0.022937, 0.16)}
    for (model, ratio), group in pd.DataFrame(billing).groupby(["model", "video_ratio"]):
        line = table[(table["model"] == model) & (table["video_ratio"] == ratio)].iloc[0]
        seconds = group["video_duration"].astype(float).sum()
        assert int(line["videos"]) == len(group)
        assert float(line["seconds"]) == pytest.approx(seconds, abs=1e-6)
        if ratio in prices:
            assert round(float(line["cost_usd"]), 2) == round(seconds * prices[ratio][0], 2)
            assert round(float(line["cost_cny"]), 2) == round(seconds * prices[ratio][1], 2)
        else:
            assert pd.isna(line["cost_usd"])  # emoji-v1: no published price, not invented


def test_budget_cap_is_never_passed(
    airflow_db: str, emulator: EmulatorServer, media: tuple[str, dict], tmp_path: Path
) -> None:
    media_url, boxes = media
    box = boxes["portrait_halfbody.jpg"]
    rows = [
        {
            "row_id": f"b{i}",
            "model": "emo-v1",
            "image_url": f"{media_url}/portrait_halfbody.jpg?row={i}",
            "audio_url": f"{media_url}/voice.wav",
            "face_bbox": json.dumps(box["face_bbox"]),
            "ext_bbox": json.dumps(box["ext_bbox"]),
        }
        for i in range(4)
    ]
    table = tmp_path / "budget.csv"
    pd.DataFrame(rows).to_csv(table, index=False)
    cap = 0.30  # each 3:4 row costs ~5.3 s x 0.022937 = ~0.1216 USD: two fit, four don't
    dry = _run(table, tmp_path / "out", 3, dry_run=True)
    assert (dry["status"] == "skipped").all() and dry["message"].str.startswith("dry run").all()
    assert emulator.billing() == []
    outcomes = _run(table, tmp_path / "out", 4, max_cost_usd=cap)
    billed_usd = sum(float(b["video_duration"]) * 0.022937 for b in emulator.billing())
    print(f"budget: cap {cap} USD, billed {billed_usd:.4f} USD for {len(emulator.billing())} of {len(rows)} rows")
    assert 0 < billed_usd <= cap
    assert (outcomes["status"] == "succeeded").sum() == 2
    skipped = outcomes[outcomes["status"] == "skipped"]
    assert len(skipped) == 2 and skipped["message"].str.startswith("budget").all()


def test_rows_spread_over_two_keys_each_waited_on_with_its_own_key(
    airflow_db: str, media: tuple[str, dict], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``extra_dashscope_conn_ids``: the rows to submit alternate between the keys; each task is queried
    with the key that created it (another key would see ``UNKNOWN``); the outcome names the key."""
    from dashscope_emulator import key_fingerprint

    media_url, boxes = media
    table = _table(tmp_path / "table.csv", media_url, boxes)
    second_key = "sk-dag-test-second-key-42"
    with EmulatorServer(api_keys=[KEY, second_key], port=0, speed=DAG_TEST_SPEED) as emulator:
        for conn_id, key in (("DASHSCOPE_DEFAULT", KEY), ("DASHSCOPE_KEY2", second_key)):
            monkeypatch.setenv(
                f"AIRFLOW_CONN_{conn_id}",
                json.dumps({"conn_type": "dashscope", "host": emulator.base_url, "password": key}),
            )
        outcomes = _run(table, tmp_path / "out", 5, extra_dashscope_conn_ids=["dashscope_key2"]).set_index("row_id")
        tasks = {t["task_id"]: t for t in emulator.tasks()}
        queries = [r for r in emulator.request_log() if "/tasks/" in r["path"]]

    fingerprints = {"dashscope_default": key_fingerprint(KEY), "dashscope_key2": key_fingerprint(second_key)}
    sent = outcomes[outcomes["task_id"].notna()]
    assert set(sent.index) == {"square", "halfbody", "emoji", "face-pose"}
    assert sorted(sent["dashscope_conn_id"]) == ["dashscope_default"] * 2 + ["dashscope_key2"] * 2
    for row_id, line in sent.iterrows():
        task = tasks[line["task_id"]]
        assert task["key_fingerprint"] == fingerprints[line["dashscope_conn_id"]], row_id
        assert {q["key_fingerprint"] for q in queries if q["task_id"] == line["task_id"]} == {task["key_fingerprint"]}
    assert list(outcomes.loc[["square", "halfbody", "emoji"], "status"]) == ["succeeded"] * 3
    assert outcomes.loc["face-pose", "code"] == "InvalidFile.FacePose"  # the service's verdict, not UNKNOWN
    assert len(tasks) == 4


def _assert_key_never_leaked(output_root: Path) -> None:
    """The API key appears nowhere: task logs, XCom, rendered fields, trigger rows, outputs."""
    import os

    from airflow.models.renderedtifields import RenderedTaskInstanceFields
    from airflow.models.trigger import Trigger
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        stored = [repr(x.value) for x in session.query(XComModel).all()]
        stored += [repr(r.rendered_fields) for r in session.query(RenderedTaskInstanceFields).all()]
        stored += [repr(t.kwargs) for t in session.query(Trigger).all()]
    assert stored, "expected XComs and rendered fields to search"
    assert not [s for s in stored if KEY in s]
    searched = 0
    for folder in (Path(os.environ["AIRFLOW_HOME"]) / "logs", output_root):
        for path in folder.rglob("*"):
            if path.is_file() and path.suffix != ".mp4":
                searched += 1
                assert KEY.encode() not in path.read_bytes(), path
    assert searched > 5


def test_outputs_on_s3(
    airflow_db: str,
    emulator: EmulatorServer,
    media: tuple[str, dict],
    aws_default: str,
    tmp_path: Path,
) -> None:
    """Ledger, videos and outcomes on an S3 API (moto on 127.0.0.1) through ``aws_default``."""
    from tests.conftest import S3_BUCKET

    media_url, boxes = media
    table = _table(tmp_path / "table.csv", media_url, boxes)
    root = f"s3://{S3_BUCKET}/e2e"
    s3 = s3_client(aws_default)

    from tests.harness.airflow_compat import DagBag

    dag = DagBag(str(REPO_ROOT / "dags")).get_dag("talking_heads")
    dag.test(
        logical_date=datetime(2026, 11, 5, tzinfo=UTC),
        run_conf={
            "input_table": str(table),
            "output_root": root,
            "poll_interval_seconds": 0.2,
            "storage_conn_id": "aws_default",
        },
    )
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=S3_BUCKET, Prefix="e2e/")["Contents"]}
    assert {"e2e/videos/square.mp4", "e2e/videos/halfbody.mp4", "e2e/videos/emoji.mp4"} <= keys
    assert {"e2e/state/square.json", "e2e/state/emoji.json"} <= keys
    outcome_key = next(k for k in keys if k.startswith("e2e/outcomes/") and k.endswith(".csv"))
    outcomes = pd.read_csv(s3.get_object(Bucket=S3_BUCKET, Key=outcome_key)["Body"])
    by_id = outcomes.set_index("row_id")
    assert by_id.loc["square", "status"] == "succeeded"
    assert by_id.loc["square", "video_uri"] == f"{root}/videos/square.mp4"
    body = s3.get_object(Bucket=S3_BUCKET, Key="e2e/videos/square.mp4")["Body"].read()
    assert len(body) == int(by_id.loc["square", "video_bytes"])


def test_chunk_mode_gives_the_same_outcomes_with_a_task_instance_per_chunk(
    airflow_db: str, emulator: EmulatorServer, media: tuple[str, dict], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``TALKING_HEADS_ROWS_PER_TASK=3``: the four rows to generate go in two chunks (3 + 1); every row
    ends as in the per-row shape, the grid names each chunk by its rows' ids, and a rerun pays nothing."""
    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from talking_heads.orchestration.chunks import ROWS_PER_TASK_ENV

    monkeypatch.setenv(ROWS_PER_TASK_ENV, "3")  # read when the DAG file is parsed (DagBag, in _run)
    media_url, boxes = media
    table = _table(tmp_path / "table.csv", media_url, boxes)
    output_root = tmp_path / "out"

    state, first = _run_with_state(table, output_root, 6)
    assert state == "success"
    assert dict(zip(first["row_id"], first["status"], strict=True)) == {
        "square": "succeeded",
        "halfbody": "succeeded",
        "emoji": "succeeded",
        "too-small": "failed",
        "face-pose": "failed",
        "invalid": "failed",
    }
    by_id = first.set_index("row_id")
    assert by_id.loc["face-pose", "code"] == "InvalidFile.FacePose"
    billing = {b["task_id"]: b for b in emulator.billing()}
    assert len(billing) == 3
    for row_id in ("square", "halfbody", "emoji"):
        assert float(by_id.loc[row_id, "video_duration"]) == pytest.approx(
            float(billing[by_id.loc[row_id, "task_id"]]["video_duration"])
        )
        assert (output_root / "videos" / f"{row_id}.mp4").read_bytes()[4:8] == b"ftyp"

    with create_session() as session:
        [run_id] = session.query(DagRun.run_id).filter(DagRun.logical_date == datetime(2026, 11, 6, tzinfo=UTC)).one()
        tis = session.query(TaskInstance).filter(TaskInstance.run_id == run_id, TaskInstance.task_id.like("generate.%"))
    labels = {(ti.task_id, ti.rendered_map_index) for ti in tis}
    assert labels == {
        ("generate.submit", "square halfbody emoji"),
        ("generate.submit", "face-pose"),
        ("generate.wait", "square halfbody emoji"),
        ("generate.wait", "face-pose"),
        ("generate.download", "square halfbody emoji"),
        ("generate.download", "no video to store"),  # the chunk's one row failed at the service
    }

    second = _run(table, output_root, 7)
    assert dict(zip(second["row_id"], second["status"], strict=True))["square"] == "skipped"
    assert len(emulator.billing()) == 3  # nothing paid twice
    _assert_key_never_leaked(output_root)
