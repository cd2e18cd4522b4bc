"""``talking_heads`` on docker-compose.yaml's topology, run as processes: CeleryExecutor, two workers.

Postgres (metadata DB and Celery results), Redis (broker), an S3 API (moto server), the DashScope
emulator, and Airflow's api-server, scheduler, dag-processor, triggerer and two ``airflow celery worker``
processes, each a separate process on 127.0.0.1 (see ``CeleryAirflowCluster`` for the mapping to compose).
One run triggered through the REST API reads its table from S3 and writes its videos, ledger and
outcomes there. What must hold:

* every row has its outcome (the service's verdicts, a validation failure), each video is in the bucket
  with the bytes the service produced, and each task was billed once;
* every task ran on a Celery worker, both workers took tasks, every wait was ``deferred`` to the triggerer;
* **no worker slot is held while waiting**: the Celery workers' own logs give when each worker ran a
  wait task; the REST API, polled during the run, gives when each wait was deferred. Their overlap (the
  worker-seconds spent while deferred) must be a small part of the time deferred (a held slot makes it
  all of it); what it measures is the end of the task that deferred, seconds at most, not the wait.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import requests
from dashscope_emulator import EmulatorServer, make_samples, serve_directory

from tests.conftest import tier_size
from tests.harness.cluster import CeleryAirflowCluster
from tests.harness.samples import sample_row
from tests.harness.services import PostgresServer, RedisServer, S3Server, Service, wait_until

pytestmark = pytest.mark.integration
KEY = "sk-distributed-test-secret-7"
BUCKET = "talking-heads-distributed"
DAG_ID = "talking_heads"
WAIT_TASK = "generate.wait"
#: Seconds a run may take on a loaded 2-core machine (it takes ~1 min of service time).
RUN_TIMEOUT = 420
#: The emulator's pace: real time in the full tier; every day twice as fast (a task of 13 s takes 6.5), still
#: seconds of deferral per wait against the worker time a held slot would add.
SPEED = tier_size(1, 2)


@dataclass
class Deployment:
    """What the test talks to, and where each part runs."""

    cluster: CeleryAirflowCluster
    services: list[Service]
    emulator: EmulatorServer
    s3: S3Server
    media_url: str
    boxes: dict[str, Any]
    started: float
    where: dict[str, str] = field(default_factory=dict)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    started = time.monotonic()
    root = tmp_path_factory.mktemp("distributed")
    make_samples(root / "media")
    boxes = json.loads((root / "media" / "samples.json").read_text())
    # SPEED: the service takes real seconds (8 + 2.5 x video seconds per task, one at a time per key), so
    # every wait spends long enough deferred to tell a held worker slot from a free one.
    with (
        serve_directory(root / "media", port=0) as media_url,
        EmulatorServer(api_keys=[KEY], speed=SPEED) as emulator,
        PostgresServer(root / "postgres") as postgres,
        RedisServer(root / "redis") as redis,
        S3Server(root / "s3", BUCKET) as s3,
    ):
        services: list[Service] = [postgres, redis, s3]
        env = {
            "AIRFLOW_CONN_DASHSCOPE_DEFAULT": json.dumps(
                {"conn_type": "dashscope", "host": emulator.base_url, "password": KEY}
            ),
            "AIRFLOW_CONN_AWS_DEFAULT": json.dumps(s3.connection()),
            # Workers log JSON lines: when each Celery task started and ended, parsed below.
            "AIRFLOW__CELERY__JSON_LOGS": "True",
        }
        cluster = CeleryAirflowCluster(
            root / "airflow", postgres, redis, env, workers=2, worker_concurrency=2, scheduled_runs=False
        )
        try:
            cluster.start()
            cluster.wait_for_dag(DAG_ID, seconds=180)
            where = {s.name: s.where for s in services}
            where["emulator"] = f"pid {os.getpid()} (the test process) {emulator.base_url}"
            where.update(cluster.where())
            yield Deployment(cluster, services, emulator, s3, media_url, boxes, started, where)
        finally:
            cluster.stop()


def _rows(media_url: str, boxes: dict[str, Any]) -> list[dict[str, Any]]:
    row = partial(sample_row, media_url, boxes)
    return [
        row("square", "emo-v1", "portrait_square.png", "voice.wav"),
        row("halfbody", "emo-v1", "portrait_halfbody.jpg", "voice.mp3"),
        row("emoji", "emoji-v1", "portrait_emoji.png", driven_id="mengwa_kaixin"),
        row("face-pose", "emo-v1", "portrait_square.png", "voice.wav", emulator_error="InvalidFile.FacePose"),
        {
            "row_id": "invalid",
            "model": "emo-v1",
            "image_url": f"{media_url}/portrait_square.png",
            "face_bbox": "[1, 2, 3]",
            "ext_bbox": "[0, 0, 100, 100]",
        },
    ]


# -- what the REST API shows during the run ------------------------------------------------------------


@dataclass
class StateSamples:
    """Task-instance states polled through the REST API, per (task_id, map_index).

    Each sample keeps when its request was sent and when its answer came: the state held at some moment
    in between, so a deferred span is taken from the *answer* of its first sample to the *request* of its
    last one, a span that never reaches beyond the real deferral (the overlap measured is never inflated
    by the polling interval).
    """

    states: dict[tuple[str, int], list[tuple[float, float, str | None]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    triggerer_jobs: dict[int, dict[str, Any]] = field(default_factory=dict)

    def record(self, task_instances: list[dict[str, Any]], sent: float, received: float) -> None:
        for ti in task_instances:
            self.states[(ti["task_id"], ti["map_index"])].append((sent, received, ti["state"]))
            job = ti.get("triggerer_job")
            if ti["state"] == "deferred" and job:
                self.triggerer_jobs[job["id"]] = job

    def deferred_intervals(self, key: tuple[str, int]) -> list[tuple[float, float]]:
        """Spans (epoch s) of consecutive samples in state ``deferred`` (see the class's note)."""
        spans: list[tuple[float, float]] = []
        start: float | None = None
        last = 0.0
        for sent, received, state in self.states.get(key, []):
            if state == "deferred":
                start = received if start is None else start
                last = sent
            elif start is not None:
                spans.append((start, max(start, last)))
                start = None
        if start is not None:
            spans.append((start, max(start, last)))
        return spans


# -- what the Celery workers did, from their own logs ----------------------------------------------------

_CELERY_ID = re.compile(r"\[([0-9a-f-]{36})\]")
_TI_FIELDS = re.compile(r"task_id='([^']+)'.*?run_id='([^']+)'.*?map_index=(-?\d+)")


@dataclass
class WorkerExecution:
    """One Celery task on one worker: the workload of one task instance, from start to end (epoch s)."""

    worker: str
    task_id: str
    map_index: int
    run_id: str
    start: float
    end: float | None = None


def _epoch(timestamp: str) -> float:
    return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()


def worker_executions(log_path: Path, worker: str) -> list[WorkerExecution]:
    """Each Celery task a worker ran, from its JSON log: "Executing workload" (start) to "succeeded/failed"."""
    running: dict[str, WorkerExecution] = {}
    done: list[WorkerExecution] = []
    for line in log_path.read_text(errors="replace").splitlines():
        if not line.startswith("{"):
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        event = str(entry.get("event", ""))
        celery_id = _CELERY_ID.search(event)
        if celery_id is None or "timestamp" not in entry:
            continue
        if "Executing workload in Celery" in event:
            ti = _TI_FIELDS.search(event)
            if ti:
                running[celery_id.group(1)] = WorkerExecution(
                    worker, ti.group(1), int(ti.group(3)), ti.group(2), _epoch(entry["timestamp"])
                )
        elif celery_id.group(1) in running and re.search(r"\b(succeeded|failed|raised|ignored)\b", event):
            execution = running.pop(celery_id.group(1))
            execution.end = _epoch(entry["timestamp"])
            done.append(execution)
    return done + list(running.values())


def _overlap(a: tuple[float, float], b: tuple[float, float]) -> float:
    return max(0.0, min(a[1], b[1]) - max(a[0], b[0]))


@dataclass
class WaitFigures:
    """Seconds the waits spent deferred, on workers, and on workers *while* deferred (slots held)."""

    deferred_seconds: float
    wait_worker_seconds: float
    worker_seconds_while_deferred: float


def measure_waits(executions: list[WorkerExecution], samples: StateSamples, task_id: str = WAIT_TASK) -> WaitFigures:
    """Worker time of each wait task inside that task's deferred spans, summed over the waits."""
    keys = {k for k in samples.states if k[0] == task_id}
    deferred = sum(b - a for key in keys for a, b in samples.deferred_intervals(key))
    on_worker = held = 0.0
    for execution in executions:
        if execution.task_id != task_id:
            continue
        span = (execution.start, execution.end if execution.end is not None else time.time())
        on_worker += span[1] - span[0]
        held += sum(_overlap(span, d) for d in samples.deferred_intervals((task_id, execution.map_index)))
    return WaitFigures(deferred, on_worker, held)


# -- the test --------------------------------------------------------------------------------------------


def test_celery_run_on_s3_defers_waits_without_holding_workers(deployment: Deployment) -> None:
    cluster, s3, emulator = deployment.cluster, deployment.s3, deployment.emulator
    client = s3.client()
    rows = _rows(deployment.media_url, deployment.boxes)
    client.put_object(Bucket=BUCKET, Key="inputs/portraits.csv", Body=pd.DataFrame(rows).to_csv(index=False).encode())
    root = f"s3://{BUCKET}/distributed"
    conf = {
        "input_table": f"s3://{BUCKET}/inputs/portraits.csv",
        "output_root": root,
        "storage_conn_id": "aws_default",
        "poll_interval_seconds": 2,
    }
    run_started = time.monotonic()
    run = cluster.post(f"/dags/{DAG_ID}/dagRuns", {"logical_date": None, "conf": conf})
    run_id = run["dag_run_id"]
    samples = StateSamples()

    def poll() -> None:
        sent = time.time()
        task_instances = cluster.task_instances(DAG_ID, run_id)
        samples.record(task_instances, sent, time.time())

    state = cluster.wait_for_run(DAG_ID, run_id, seconds=RUN_TIMEOUT, on_poll=poll)
    run_wall = time.monotonic() - run_started
    final = cluster.task_instances(DAG_ID, run_id)
    assert state == "success", (
        f"run ended {state}: "
        + json.dumps({f"{t['task_id']}[{t['map_index']}]": t["state"] for t in final})
        + "\n"
        + cluster.all_logs()
    )

    # Every row's outcome, read back from the bucket.
    keys = {o["Key"]: o["Size"] for o in client.list_objects_v2(Bucket=BUCKET, Prefix="distributed/")["Contents"]}
    outcome_keys = [k for k in keys if k.startswith("distributed/outcomes/") and k.endswith(".csv")]
    assert len(outcome_keys) == 1, sorted(keys)
    outcomes = pd.read_csv(client.get_object(Bucket=BUCKET, Key=outcome_keys[0])["Body"]).set_index("row_id")
    assert outcomes["status"].to_dict() == {
        "square": "succeeded",
        "halfbody": "succeeded",
        "emoji": "succeeded",
        "face-pose": "failed",
        "invalid": "failed",
    }
    assert outcomes.loc["face-pose", "code"] == "InvalidFile.FacePose"  # the service's own verdict
    assert "field 'face_bbox'" in outcomes.loc["invalid", "message"]  # refused before any spend
    assert outcomes.loc["square", "video_ratio"] == "1:1" and outcomes.loc["halfbody", "video_ratio"] == "3:4"

    # Each video in the bucket is the service's video, byte for byte; each task billed once.
    billing = emulator.billing()
    assert sorted(b["task_id"] for b in billing) == sorted(outcomes.loc[["square", "halfbody", "emoji"], "task_id"])
    for row_id in ("square", "halfbody", "emoji"):
        line = outcomes.loc[row_id]
        key = f"distributed/videos/{row_id}.mp4"
        assert line["video_uri"] == f"{root}/videos/{row_id}.mp4"
        body = client.get_object(Bucket=BUCKET, Key=key)["Body"].read()
        served = _service_video(emulator, line["task_id"])
        assert keys[key] == len(body) == int(line["video_bytes"]) == len(served) > 1000, row_id
        assert hashlib.sha256(body).hexdigest() == line["video_sha256"] == hashlib.sha256(served).hexdigest()
        assert body[4:8] == b"ftyp"

    # The key is in no object of the bucket, nor in any component's or task's log (or other file).
    for name in keys:
        if not name.endswith(".mp4"):
            assert KEY.encode() not in client.get_object(Bucket=BUCKET, Key=name)["Body"].read(), name
    files = [p for p in cluster.home.rglob("*") if p.is_file()]
    assert len([p for p in files if "attempt=" in p.name]) >= 10  # task logs are among them
    leaked = [str(p) for p in files if KEY.encode() in p.read_bytes()]
    assert not leaked, f"the API key is written in {leaked}"

    # Every task instance ran on a Celery worker; every wait was deferred to the triggerer.
    def executions_of_run() -> list[WorkerExecution]:
        return [
            e for name in cluster.workers for e in worker_executions(cluster.log_path(name), name) if e.run_id == run_id
        ]

    # A worker logs a Celery task's end after the task instance's state is already final: let it finish.
    wait_until(
        lambda: all(e.end is not None for e in executions_of_run()),
        60,
        "the workers' Celery tasks of the run to end",
        cluster.check_alive,
    )
    executions = executions_of_run()
    ran = {(e.task_id, e.map_index) for e in executions}
    # (A row the service failed ends at its wait: its download is skipped by the scheduler, never run.)
    expected = {(t["task_id"], t["map_index"]) for t in final if t["state"] in ("success", "failed")}
    assert ran == expected, f"not run on a Celery worker: {expected - ran}; unknown: {ran - expected}"
    waits = sorted(k for k in expected if k[0] == WAIT_TASK)
    assert len(waits) == 4  # the four rows sent to the service (the invalid one never was)
    never_deferred = [w for w in waits if not samples.deferred_intervals(w)]
    assert not never_deferred, f"waits never seen deferred: {never_deferred}"
    assert samples.triggerer_jobs and {j["job_type"] for j in samples.triggerer_jobs.values()} == {"TriggererJob"}

    # No worker slot held while waiting: worker time of each wait inside its deferred spans.
    figures = measure_waits(executions, samples)
    per_worker = {name: sum(1 for e in executions if e.worker == name) for name in cluster.workers}
    wall = time.monotonic() - deployment.started
    where = " ".join(f"{name}=[{place}]" for name, place in deployment.where.items())
    triggerers = ",".join(f"{j['job_type']}#{j['id']}@{j['hostname']}" for j in samples.triggerer_jobs.values())
    print(
        f"\nDISTRIBUTED services: {where}\n"
        f"DISTRIBUTED wall={wall:.1f}s run={run_wall:.1f}s rows=5 waits={len(waits)} "
        f"deferred_seconds={figures.deferred_seconds:.1f} "
        f"worker_seconds_while_deferred={figures.worker_seconds_while_deferred:.2f} "
        f"wait_worker_seconds={figures.wait_worker_seconds:.1f} tasks_per_worker={per_worker} "
        f"triggerer={triggerers}"
    )
    # Four submits are queued at once and a worker reserves only as many tasks as it has processes (2).
    assert all(per_worker.values()), f"a Celery worker ran nothing: {per_worker}"
    # Four tasks of >= 13 s each (6.5 every day), one at a time per key: over 30 s deferred in all.
    assert figures.deferred_seconds > 30, "the waits should have spent the service's run time deferred"
    # A wait that held its worker slot would add its whole deferred time (ratio ~1). What remains is the
    # tail of the Celery task that deferred: its task process ends after the state is already `deferred`
    # (0 s on an idle machine; 2-4 s a wait, up to 10% of the time deferred, with other suites running).
    on_workers = [
        (e.worker, e.map_index, round(e.start, 1), round(e.end - e.start, 1))
        for e in executions
        if e.task_id == WAIT_TASK and e.end is not None
    ]
    deferred_spans = {k[1]: [(round(a, 1), round(b - a, 1)) for a, b in samples.deferred_intervals(k)] for k in waits}
    assert figures.worker_seconds_while_deferred < figures.deferred_seconds / 3, (
        f"workers ran wait tasks for {figures.worker_seconds_while_deferred:.2f}s while they were deferred "
        f"({figures.deferred_seconds:.1f}s deferred in all). Wait tasks on workers (worker, map index, "
        f"start, seconds): {on_workers}; deferred (map index: start, seconds): {deferred_spans}"
    )


def _service_video(emulator: EmulatorServer, task_id: str) -> bytes:
    """The video as the service serves it: its task's ``video_url`` (emo-v1 nests it in ``results``)."""
    answer = requests.get(
        f"{emulator.base_url}/api/v1/tasks/{task_id}", headers={"Authorization": f"Bearer {KEY}"}, timeout=30
    )
    answer.raise_for_status()
    output = answer.json()["output"]
    video = requests.get(output.get("results", {}).get("video_url") or output["video_url"], timeout=60)
    video.raise_for_status()
    return video.content


# -- the measure itself (no cluster: seconds) -------------------------------------------------------------


def _log_line(at: float, event: str) -> str:
    stamp = datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return json.dumps({"timestamp": stamp, "level": "info", "event": event, "logger": "celery.app.trace"})


def _worker_log(path: Path, runs: list[tuple[str, float, float]], run_id: str = "manual__r1") -> Path:
    """A worker log in the format ``airflow celery worker`` writes with ``[celery] json_logs``."""
    lines = []
    for n, (celery_id, start, end) in enumerate(runs):
        ti = (
            f"ti=TaskInstanceDTO(id=UUID('0000'), task_id='{WAIT_TASK}', dag_id='{DAG_ID}', run_id='{run_id}', "
            f"try_number=1, map_index={n % 2}, hostname='')"
        )
        lines += [
            _log_line(start - 0.01, f"Task execute_workload[{celery_id}] received"),
            _log_line(start, f"[{celery_id}] Executing workload in Celery: log_path='x' {ti} type='ExecuteTask'"),
            _log_line(end, f"Task execute_workload[{celery_id}] succeeded in {end - start}s: None"),
        ]
    path.write_text("\n".join(["plain text banner", *lines]) + "\n")
    return path


def test_measure_counts_worker_time_inside_a_deferral_and_nothing_outside(tmp_path: Path) -> None:
    """The figures the cluster test asserts on: a wait that kept its worker while deferred is caught."""
    t0 = 1_800_000_000.0
    ids = [f"{n:08d}-0000-0000-0000-000000000000" for n in range(3)]
    # map_index 0: defers (runs 0..2), resumes (runs 20..22); map_index 1: runs 0..15, i.e. holds its slot.
    log = _worker_log(tmp_path / "w.log", [(ids[0], t0, t0 + 2), (ids[1], t0, t0 + 15), (ids[2], t0 + 20, t0 + 22)])
    executions = worker_executions(log, "worker-1")
    assert [(e.map_index, e.end is not None and round(e.end - e.start, 3)) for e in executions] == [
        (0, 2.0),
        (1, 15.0),
        (0, 2.0),
    ]
    samples = StateSamples()
    for second in range(0, 24):
        state = "deferred" if 3 <= second <= 18 else "running"
        samples.record(
            [
                {"task_id": WAIT_TASK, "map_index": 0, "state": state},
                {"task_id": WAIT_TASK, "map_index": 1, "state": state},
            ],
            t0 + second,
            t0 + second + 0.1,
        )
    assert samples.deferred_intervals((WAIT_TASK, 0)) == [(t0 + 3.1, t0 + 18)]
    figures = measure_waits(executions, samples)
    assert figures.deferred_seconds == pytest.approx(2 * 14.9)
    assert figures.wait_worker_seconds == pytest.approx(19.0)
    assert figures.worker_seconds_while_deferred == pytest.approx(15 - 3.1)  # only map_index 1's held slot
