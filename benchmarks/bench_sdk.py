"""Worker-slot seconds held while DashScope tasks are queued/running: ``talking_heads`` vs the SDK's call.

    .venv/bin/python benchmarks/bench_sdk.py [--rows 20] [--speed 4] [--pool 8]

Needs ``benchmarks/requirements.txt`` (the ``dashscope`` SDK; ``benchmarks/run.sh`` installs it).
Real api-server, scheduler (LocalExecutor), dag-processor and triggerer, with a DAGs folder holding
``talking_heads`` and the benchmark-only ``sdk_blocking_baseline`` (``benchmarks/dags/``), one emulator
key at ``--speed``, and the ``dashscope`` pool at ``--pool`` slots for both. Over the same ``--rows``
rows (``bench_batch._rows``), one after the other on the same emulator:

1. ``talking_heads``: submit, then a deferred wait (the triggerer polls), then download;
2. ``sdk_blocking_baseline``: one task per row blocking in ``dashscope.VideoSynthesis.call``.

Per side: the seconds the service held that side's tasks queued + running (submit -> end), the
worker-slot seconds spent waiting on them (the executor supervisor's ``Workload finished ...
duration=`` of the ``generate.wait`` task instances, resp. of the SDK call task instances, whose slot
is held for the whole call; earlier tries by their recorded duration), their ratio, the run's wall time
(trigger -> run end) and the emulator's busy time (sum of RUNNING spans).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from bench_batch import WORKLOAD, _rows, _ts
from dashscope_emulator import EmulatorServer, make_samples, serve_directory

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.harness.cluster import REPO_ROOT, AirflowCluster

KEY = "sk-bench-sdk-0123456789"
#: The benchmark's DAGs folder: the project's main DAG and the baseline (the cost report DAG stays out).
DAG_FILES = (
    REPO_ROOT / "dags" / "talking_heads_dag.py",
    REPO_ROOT / "benchmarks" / "dags" / "sdk_blocking_baseline.py",
)


@dataclass
class Side:
    """One DAG run over the table: what Airflow and the emulator saw of it."""

    dag_id: str
    waiting_task: str  # the task whose worker time is the time spent waiting on the service
    state: str
    wall: float
    tis: list[dict[str, Any]]
    earlier_tries: dict[str, float]  # task_id -> seconds run by tries before each TI's current one
    tasks: list[dict[str, Any]]  # the emulator tasks this run submitted
    refused_submits: int  # submits the emulator answered 429 during the run
    returns: list[dict[str, Any]]  # the waiting task's return values (the SDK side: call_seconds)


def _ti_path(dag_id: str, run_id: str, ti: dict[str, Any]) -> str:
    return f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{ti['task_id']}"


def _earlier_tries(cluster: AirflowCluster, dag_id: str, run_id: str, tis: list[dict[str, Any]]) -> dict[str, float]:
    """Seconds run by retried TIs' earlier tries (a new try gets a new TI id, so no workload line matches)."""
    seconds: dict[str, float] = {}
    for ti in tis:
        if ti["try_number"] <= 1:
            continue
        path = _ti_path(dag_id, run_id, ti) + (f"/{ti['map_index']}/tries" if ti["map_index"] >= 0 else "/tries")
        tries = cluster.get(path)["task_instances"]
        earlier = sum(t["duration"] or 0.0 for t in tries if t["try_number"] < ti["try_number"])
        seconds[ti["task_id"]] = seconds.get(ti["task_id"], 0.0) + earlier
    return seconds


def _returns(cluster: AirflowCluster, dag_id: str, run_id: str, tis: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The return values (XCom) of the given successful TIs."""
    values = []
    for ti in tis:
        if ti["state"] == "success":
            entry = cluster.get(_ti_path(dag_id, run_id, ti) + "/xcomEntries/return_value", map_index=ti["map_index"])
            value = entry["value"]
            values.append(json.loads(value) if isinstance(value, str) else value)
    return values


def _await_workload_lines(cluster: AirflowCluster, tis: list[dict[str, Any]], seconds: float = 60) -> None:
    """Waits until every TI that ran has its ``Workload finished`` line: the supervisor writes it after the
    task process exits, which can be after the run is marked done (the last TIs of the run)."""
    ran = {ti["id"] for ti in tis if ti["state"] in ("success", "failed")}
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        logged = {m["id"] for m in WORKLOAD.finditer((cluster.home / "scheduler.log").read_text(errors="replace"))}
        if ran <= logged:
            return
        time.sleep(0.5)
    raise TimeoutError(f"no 'Workload finished' line for {len(ran - logged)} TIs after {seconds}s")


def _run(
    cluster: AirflowCluster, emulator: EmulatorServer, dag_id: str, waiting_task: str, conf: dict[str, Any]
) -> Side:
    """Triggers one run through the REST API, waits for it; returns its TIs and the tasks it submitted."""
    before = {t["task_id"] for t in emulator.tasks()}
    since = time.time()
    started = time.monotonic()
    run = cluster.post(f"/dags/{dag_id}/dagRuns", {"logical_date": None, "conf": conf})
    run_id = run["dag_run_id"]
    state = cluster.wait_for_run(dag_id, run_id, seconds=6 * 3600)
    wall = time.monotonic() - started
    tis = cluster.task_instances(dag_id, run_id)
    _await_workload_lines(cluster, tis)
    tasks = [t for t in emulator.tasks() if t["task_id"] not in before]
    refused = sum(
        r["time"] >= since and r["method"] == "POST" and r["path"].endswith("/video-synthesis") and r["status"] == 429
        for r in emulator.request_log()
    )
    returns = _returns(cluster, dag_id, run_id, [ti for ti in tis if ti["task_id"] == waiting_task])
    earlier = _earlier_tries(cluster, dag_id, run_id, tis)
    return Side(dag_id, waiting_task, state, wall, tis, earlier, tasks, refused, returns)


def _workloads(side: Side, task_id: str, scheduler_log: str) -> list[float]:
    """Supervisor-reported durations (worker seconds) of the workloads of one task's TIs (current tries)."""
    ids = {ti["id"] for ti in side.tis if ti["task_id"] == task_id}
    return [float(m["duration"]) for m in WORKLOAD.finditer(scheduler_log) if m["id"] in ids]


def _report(side: Side, speed: float, scheduler_log: str) -> float:
    """Prints the side's ``SDK`` lines; returns its worker seconds per waited second."""
    done = [t for t in side.tasks if t["end_time"]]
    on_service = sum(_ts(t["end_time"]) - _ts(t["submit_time"]) for t in done) / speed
    busy = sum(_ts(t["end_time"]) - _ts(t["scheduled_time"]) for t in done if t["scheduled_time"]) / speed
    workloads = _workloads(side, side.waiting_task, scheduler_log)
    retried_seconds = side.earlier_tries.get(side.waiting_task, 0.0)
    held = sum(workloads) + retried_seconds
    ratio = held / max(on_service, 1e-9)
    waiting = [ti for ti in side.tis if ti["task_id"] == side.waiting_task]
    retries = sum(ti["try_number"] - 1 for ti in waiting)
    succeeded = sum(t["status"] == "SUCCEEDED" for t in side.tasks)
    print(
        f"SDK {side.dag_id}: run={side.state} wall={side.wall:.1f}s emulator_busy={busy:.1f}s "
        f"tasks={len(side.tasks)} succeeded={succeeded} task_seconds_queued_running={on_service:.1f}s "
        f"worker_seconds_held={held:.1f}s ratio={ratio:.3f} worker-seconds per waited second"
    )
    mean = sum(workloads) / max(len(workloads), 1)
    if side.returns and all("call_seconds" in r for r in side.returns):
        in_call = sum(r["call_seconds"] for r in side.returns)
        print(
            f"SDK {side.dag_id}: held = {on_service:.1f}s the tasks were queued/running "
            f"+ {in_call - on_service:.1f}s in the call before the submit landed and after the task ended until "
            f"the SDK's next poll (1..5 s apart) + {sum(workloads) - in_call:.1f}s starting and ending the task "
            f"processes ({len(workloads)} workloads, {(sum(workloads) - in_call) / max(len(workloads), 1):.1f}s "
            f"each outside the call) + {retried_seconds:.1f}s "
            f"of {retries} retried tries ({side.refused_submits} submits refused 429)"
        )
    else:
        print(
            f"SDK {side.dag_id}: held = {len(workloads)} {side.waiting_task} workloads for {len(waiting)} TIs (the "
            f"first check, that defers, and the resume), {mean:.1f}s each (max {max(workloads, default=0):.1f}s), "
            f"+ {retried_seconds:.1f}s of {retries} retried tries ({side.refused_submits} submits refused 429)"
        )
    return ratio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20)
    parser.add_argument("--speed", type=float, default=4.0)
    parser.add_argument("--pool", type=int, default=8, help="slots of the dashscope pool (tasks in flight)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_samples(root / "media")
        boxes = json.loads((root / "media" / "samples.json").read_text())
        dags = root / "dags"
        dags.mkdir()
        for path in DAG_FILES:
            (dags / path.name).symlink_to(path)
        with (
            serve_directory(root / "media") as media,
            EmulatorServer(api_keys=[KEY], port=0, speed=args.speed) as emulator,
        ):
            env = {
                "AIRFLOW_CONN_DASHSCOPE_DEFAULT": json.dumps(
                    {"conn_type": "dashscope", "host": emulator.base_url, "password": KEY}
                ),
                "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
            }
            cluster = AirflowCluster(root / "airflow", env, pool_slots=args.pool).start()
            try:
                cluster.wait_for_dag("talking_heads")
                cluster.wait_for_dag("sdk_blocking_baseline")
                time.sleep(5)  # the run that unpausing talking_heads starts (default params): let it end
                cluster.wait_until_idle("talking_heads", 600)
                table = root / "batch.csv"
                pd.DataFrame(_rows(media, boxes, args.rows)).to_csv(table, index=False)
                ours = _run(
                    cluster,
                    emulator,
                    "talking_heads",
                    "generate.wait",
                    {"input_table": str(table), "output_root": str(root / "out"), "poll_interval_seconds": 1},
                )
                sdk = _run(cluster, emulator, "sdk_blocking_baseline", "call", {"input_table": str(table)})
                scheduler_log = (cluster.home / "scheduler.log").read_text(errors="replace")
            finally:
                cluster.stop()

    print(
        f"SDK rows={args.rows} speed={args.speed:g} pool={args.pool} (same rows, same emulator key, one run "
        f"after the other)"
    )
    ours_ratio = _report(ours, args.speed, scheduler_log)
    submit_seconds = sum(_workloads(ours, "generate.submit", scheduler_log))
    sdk_ratio = _report(sdk, args.speed, scheduler_log)
    print(
        f"SDK worker-slot seconds per second a task is queued/running: talking_heads={ours_ratio:.3f} "
        f"(target 0) vs dashscope SDK VideoSynthesis.call={sdk_ratio:.3f} (= busy time); "
        f"talking_heads' submits took {submit_seconds:.1f} worker-seconds more"
    )


if __name__ == "__main__":
    main()
