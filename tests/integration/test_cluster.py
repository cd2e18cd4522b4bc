"""``talking_heads`` on real Airflow processes: the scheduled run, a REST-triggered run with conf, and a backfill.

Unpausing the @daily DAG starts its latest interval's run with the default params (the only cluster of the
suite that leaves the scheduler's own runs on). The waits must be deferred to the triggerer (no worker slot
held), and rows shared between backfilled dates must be paid for once (checked against the emulator's
billing log).

The metadata DB is Postgres, as in docker-compose.yaml: Airflow refuses to create a backfill on SQLite
while the scheduler and dag-processor write to it (``POST /backfills`` answers 503 "Database is locked").
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pandas as pd
import pytest

from tests.conftest import tier_size
from tests.harness.cluster import REPO_ROOT, AirflowCluster
from tests.harness.samples import served_samples
from tests.harness.services import PostgresServer, dashscope_connections, emulators

pytestmark = pytest.mark.integration
KEY = "sk-cluster-test-secret-42"
SAMPLE_TABLE = REPO_ROOT / "include" / "sample" / "talking_heads_sample.csv"


def _row(media: str, boxes: dict, row_id: str, model: str = "emo-v1") -> dict:
    if model == "emoji-v1":
        name = "portrait_emoji.png"
        extra = {"driven_id": "mengwa_kaixin"}
    else:
        name = "portrait_square.png"
        extra = {"audio_url": f"{media}/voice.wav"}
    return {
        "row_id": row_id,
        "model": model,
        "image_url": f"{media}/{name}",
        "face_bbox": json.dumps(boxes[name]["face_bbox"]),
        "ext_bbox": json.dumps(boxes[name]["ext_bbox"]),
        **extra,
    }


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    root = tmp_path_factory.mktemp("cluster")
    with (
        served_samples(root / "media") as (media, boxes),
        # Two services: a slow one (tasks take ~20 s in the full tier, ~5 s every day: the waits must defer)
        # and a fast one.
        emulators(KEY, dashscope_slow=tier_size(1, 4), dashscope_default=200) as services,
        PostgresServer(root / "postgres") as postgres,
    ):
        slow, fast = services["dashscope_slow"], services["dashscope_default"]
        env = dashscope_connections(services, KEY)
        cluster = AirflowCluster(root / "airflow", {**env, "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": postgres.url})
        with cluster.running("talking_heads"):
            yield {"root": root, "media": media, "boxes": boxes, "emu": fast, "slow": slow, "cluster": cluster}


def _finished_runs(cluster: AirflowCluster, run_type: str, count: int, seconds: float = 300) -> list[dict]:
    """The ``talking_heads`` runs of ``run_type`` once ``count`` of them exist and all have ended (or what
    there is after ``seconds``: the caller's assertion says what is missing)."""
    deadline = time.monotonic() + seconds
    while True:
        runs = [
            r for r in cluster.get("/dags/talking_heads/dagRuns", limit=100)["dag_runs"] if r["run_type"] == run_type
        ]
        if len(runs) >= count and all(r["state"] in ("success", "failed") for r in runs):
            return runs
        if time.monotonic() >= deadline:
            return runs
        time.sleep(1)


def test_unpausing_starts_the_latest_scheduled_run_and_it_accounts_for_every_sample_row(world: dict) -> None:
    cluster = world["cluster"]
    runs = _finished_runs(cluster, "scheduled", 1)
    assert [r["state"] for r in runs] == ["success"], (runs, cluster.logs("scheduler"))
    # Default params: the sample table, written under the deployment's output root (TALKING_HEADS_OUTPUT_ROOT).
    sample = pd.read_csv(SAMPLE_TABLE)
    [table] = (cluster.home / "default-output" / "outcomes").glob("*.csv")
    outcomes = pd.read_csv(table)
    assert sorted(outcomes["row_id"]) == sorted(sample["row_id"])
    assert set(outcomes["status"]) <= {"succeeded", "failed", "skipped"}


def test_rest_triggered_run_defers_waits_and_records_outcomes(world: dict) -> None:
    cluster, emu, root = world["cluster"], world["slow"], world["root"]
    table = root / "rest.csv"
    rows = [
        _row(world["media"], world["boxes"], "rest-emo"),
        _row(world["media"], world["boxes"], "rest-emoji", "emoji-v1"),
    ]
    pd.DataFrame(rows).to_csv(table, index=False)
    conf = {
        "input_table": str(table),
        "output_root": str(root / "out"),
        "poll_interval_seconds": 2,
        "dashscope_conn_id": "dashscope_slow",
    }
    started = time.monotonic()
    run = cluster.post("/dags/talking_heads/dagRuns", {"logical_date": None, "conf": conf})
    seen: set[str] = set()

    def watch() -> None:
        for ti in cluster.task_instances("talking_heads", run["dag_run_id"]):
            if ti["task_id"] == "generate.wait" and ti["state"]:
                seen.add(ti["state"])

    state = cluster.wait_for_run("talking_heads", run["dag_run_id"], on_poll=watch)
    print(f"REST run wall time {time.monotonic() - started:.1f}s, wait states seen: {sorted(seen)}")
    assert state == "success", cluster.logs("scheduler")
    assert "deferred" in seen
    outcomes = pd.read_csv(next((root / "out" / "outcomes").glob("*.csv")))
    assert outcomes["status"].tolist() == ["succeeded", "succeeded"]
    assert len(emu.billing()) == 2


def test_backfill_over_three_dates_pays_once_per_row(world: dict) -> None:
    cluster, emu, root = world["cluster"], world["emu"], world["root"]
    media, boxes = world["media"], world["boxes"]
    ids = {"2026-11-01": ["a", "b"], "2026-11-02": ["b", "c"], "2026-11-03": ["a", "c", "d"]}
    for day, row_ids in ids.items():
        pd.DataFrame([_row(media, boxes, f"bf-{i}") for i in row_ids]).to_csv(root / f"in-{day}.csv", index=False)
    billed_before = len(emu.billing())
    conf = {
        "input_table": str(root / "in-{{ ds }}.csv"),
        "output_root": str(root / "bf-out"),
        "poll_interval_seconds": 0.5,
    }
    cluster.post(
        "/backfills",
        {
            "dag_id": "talking_heads",
            "from_date": "2026-11-01T00:00:00Z",
            "to_date": "2026-11-03T00:00:00Z",
            "dag_run_conf": conf,
            "max_active_runs": 1,
        },
    )
    runs = _finished_runs(cluster, "backfill", 3)
    assert [r["state"] for r in runs] == ["success"] * 3
    assert len(emu.billing()) - billed_before == 4  # a, b, c, d once each
    statuses = pd.concat(pd.read_csv(p) for p in (root / "bf-out" / "outcomes").glob("*.csv"))
    assert (statuses["status"] == "succeeded").sum() == 4
    assert (statuses["status"] == "skipped").sum() == 3
