"""Prints a batch's wall time against the service's own busy time, on real Airflow processes.

    .venv/bin/python benchmarks/bench_batch.py [--rows 50] [--keys 1] [--speed 4] [--pool 8]
    .venv/bin/python benchmarks/bench_batch.py --scaling [--speed 16]  # rows 50/200/1000, keys 1/2/4

Real api-server, scheduler (LocalExecutor), dag-processor and triggerer; the emulator with ``--keys``
keys at ``--speed`` (simulated seconds per wall second). One ``talking_heads`` run over ``--rows`` rows
(emo-v1 and emoji-v1 mixed; with several keys, spread over them by ``extra_dashscope_conn_ids``) is
triggered through the REST API; the run's wall time (trigger -> stored videos and outcomes) is set
against the emulator's busy time for the same tasks: one task runs at a time per key, so the floor for
the batch is the busiest key's sum of RUNNING spans.

Also printed: how long the service sat idle between its first and last task (the pipeline failing to
keep its queue full), the lead (trigger -> first task running) and the tail (last task done -> run
end), and the worker-seconds Airflow's wait tasks ran for against the seconds they waited deferred
(holding no worker slot). ``--scaling`` runs the batch at 50, 200 and 1,000 rows on one key and at 200
rows on 2 and 4 keys, each on a fresh cluster, and prints a table (about 70 minutes at speed 16 on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import pandas as pd
import psutil
from dashscope_emulator import EmulatorServer, make_samples, serve_directory

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.harness.cluster import AirflowCluster

KEY = "sk-bench-batch-0123456789"  # key i > 0 is f"{KEY}-{i}"
WORKLOAD = re.compile(r"Workload finished\s.*?duration=(?P<duration>[\d.]+).*?workload_id=(?P<id>[0-9a-f-]{36})")


def _cpu_seconds(pid: int) -> tuple[float, float]:
    """CPU seconds (user + system) of a process itself and of all its descendants, reaped ones included.

    A task process's time reaches its LocalExecutor worker's ``children_*`` once the worker reaps it, so
    the scheduler's descendants cover every task process the run started.
    """
    try:
        root = psutil.Process(pid)
        own = root.cpu_times()
        descendants = root.children(recursive=True)
    except psutil.NoSuchProcess:
        return 0.0, 0.0
    below = own.children_user + own.children_system
    for process in descendants:
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:  # exited between the listing and the read: counted once reaped
            continue
        below += times.user + times.system + times.children_user + times.children_system
    return own.user + own.system, below


def _cpu_by_role(cluster: AirflowCluster) -> dict[str, float]:
    """CPU seconds so far of each Airflow process and of this process (the emulator and media server)."""
    cpu: dict[str, float] = {}
    for name, process in cluster.processes.items():
        own, below = _cpu_seconds(process.pid)
        if name == "scheduler":  # its descendants are the executor's workers and the task processes
            cpu["scheduler"], cpu["task_processes"] = own, below
        else:
            cpu[name] = own + below
    me = psutil.Process().cpu_times()
    cpu["emulator+bench"] = me.user + me.system
    return cpu


def _rows(media: str, boxes: dict, count: int) -> list[dict]:
    rows = []
    for i in range(count):
        if i % 3 == 2:
            name, extra, model = "portrait_emoji.png", {"driven_id": "mengwa_kaixin"}, "emoji-v1"
        else:
            name = "portrait_square.png" if i % 3 == 0 else "portrait_halfbody.jpg"
            extra, model = {"audio_url": f"{media}/voice.wav"}, "emo-v1"
        rows.append(
            {
                "row_id": f"b{i:04d}",
                "model": model,
                "image_url": f"{media}/{name}",
                "face_bbox": json.dumps(boxes[name]["face_bbox"]),
                "ext_bbox": json.dumps(boxes[name]["ext_bbox"]),
                **extra,
            }
        )
    return rows


def _ts(text: str) -> float:
    """Emulator task times (``YYYY-MM-DD HH:MM:SS.mmm``, UTC+8) as simulated epoch seconds."""
    return datetime.strptime(text, "%Y-%m-%d %H:%M:%S.%f").timestamp()


def run_batch(rows: int, keys: int, speed: float, pool: int) -> dict[str, float]:
    """One run on a fresh cluster and emulator; prints its ``BATCH`` lines and returns its figures."""
    api_keys = [KEY] + [f"{KEY}-{i}" for i in range(1, keys)]
    conn_ids = ["dashscope_default"] + [f"dashscope_bench_{i}" for i in range(1, keys)]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_samples(root / "media")
        boxes = json.loads((root / "media" / "samples.json").read_text())
        with (
            serve_directory(root / "media") as media,
            EmulatorServer(api_keys=api_keys, port=0, speed=speed) as emulator,
        ):
            env = {
                f"AIRFLOW_CONN_{conn_id.upper()}": json.dumps(
                    {"conn_type": "dashscope", "host": emulator.base_url, "password": key}
                )
                for conn_id, key in zip(conn_ids, api_keys, strict=True)
            }
            cluster = AirflowCluster(root / "airflow", env).start()
            try:
                cluster.airflow("pools", "set", "dashscope", str(pool), "bench", "--include-deferred")
                cluster.wait_for_dag("talking_heads")
                time.sleep(5)  # let the run that unpausing starts (default params) get out of the way
                table = root / "batch.csv"
                pd.DataFrame(_rows(media, boxes, rows)).to_csv(table, index=False)
                conf = {
                    "input_table": str(table),
                    "output_root": str(root / "out"),
                    "poll_interval_seconds": 1,
                    "extra_dashscope_conn_ids": conn_ids[1:],
                }
                cpu_before = _cpu_by_role(cluster)
                started = time.monotonic()
                run = cluster.post("/dags/talking_heads/dagRuns", {"logical_date": None, "conf": conf})
                state = cluster.wait_for_run("talking_heads", run["dag_run_id"], seconds=6 * 3600)
                wall = time.monotonic() - started
                cpu_after = _cpu_by_role(cluster)
                tis = cluster.task_instances("talking_heads", run["dag_run_id"])
                scheduler_log = (cluster.home / "scheduler.log").read_text(errors="replace")
            finally:
                cluster.stop()
            tasks = [t for t in emulator.tasks() if t["status"] == "SUCCEEDED"]
        outcomes = pd.concat(pd.read_csv(p) for p in (root / "out" / "outcomes").glob("*.csv"))

    per_key: dict[str, list[tuple[float, float]]] = {}
    for t in tasks:
        per_key.setdefault(t["key_fingerprint"], []).append((_ts(t["scheduled_time"]), _ts(t["end_time"])))
    busy_by_key = {k: sum(end - start for start, end in spans) / speed for k, spans in per_key.items()}
    floor = max(busy_by_key.values())
    starts = [start for spans in per_key.values() for start, _ in spans]
    ends = [end for spans in per_key.values() for _, end in spans]
    service_span = (max(ends) - min(starts)) / speed
    # Per key: how long it sat idle between its own first and last task (the pipeline not keeping its
    # queue full); the worst key is reported.
    idle = max((max(e for _, e in s) - min(b for b, _ in s)) / speed - busy_by_key[k] for k, s in per_key.items())
    wait_ids = {ti["id"] for ti in tis if ti["task_id"] == "generate.wait"}
    # Worker time is what the executor's supervisor reports per workload (one for the first check that
    # defers, one for the resume); a TI's own duration would include the time spent deferred.
    wait_running = sum(float(m["duration"]) for m in WORKLOAD.finditer(scheduler_log) if m["id"] in wait_ids)
    on_service = sum((_ts(t["end_time"]) - _ts(t["submit_time"])) for t in tasks) / speed
    succeeded = int((outcomes["status"] == "succeeded").sum())
    print(
        f"BATCH rows={rows} keys={keys} speed={speed:g} pool={pool} run={state} succeeded={succeeded} "
        f"tasks={len(tasks)} tasks_per_key={sorted(len(s) for s in per_key.values())} wait_tis={len(wait_ids)}"
    )
    print(
        f"BATCH wall={wall:.1f}s emulator_busy_floor={floor:.1f}s ratio={wall / floor:.3f} (target <= 1.05) "
        f"worst_key_idle_between_tasks={idle:.1f}s lead+tail={wall - service_span:.1f}s"
    )
    print(
        f"BATCH wait_tasks_worker_seconds={wait_running:.1f}s for {on_service:.0f} task-seconds queued/running "
        f"on the service ({wait_running / max(on_service, 1e-9):.4f} worker-seconds per waited second)",
        flush=True,
    )
    cpu = {role: cpu_after[role] - cpu_before.get(role, 0.0) for role in cpu_after}
    cores = psutil.cpu_count() or 1
    print(
        f"BATCH cpu_seconds {' '.join(f'{role}={seconds:.1f}' for role, seconds in cpu.items())} "
        f"total={sum(cpu.values()):.1f} of {cores} cores x wall = {cores * wall:.1f} "
        f"({sum(cpu.values()) / (cores * wall):.0%} busy)"
    )
    print(
        f"BATCH cpu_seconds_per_row {' '.join(f'{role}={seconds / rows:.2f}' for role, seconds in cpu.items())}",
        flush=True,
    )
    return {
        "rows": rows,
        "keys": keys,
        "wall": wall,
        "floor": floor,
        "idle": idle,
        "lead_tail": wall - service_span,
        "succeeded": succeeded,
        "scheduler_cpu_per_row": cpu["scheduler"] / rows,
        "tasks_cpu_per_row": cpu["task_processes"] / rows,
    }


SCALING = [(50, 1), (200, 1), (200, 2), (200, 4), (1000, 1)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=50)
    parser.add_argument("--keys", type=int, default=1, help="API keys the rows are spread over")
    parser.add_argument("--speed", type=float, default=4.0)
    parser.add_argument("--pool", type=int, default=8, help="slots of the dashscope pool (tasks in flight)")
    parser.add_argument("--scaling", action="store_true", help="rows 50/200/1000 on 1 key, 200 rows on 2 and 4")
    args = parser.parse_args()
    if not args.scaling:
        run_batch(args.rows, args.keys, args.speed, args.pool)
        return
    results = []
    for rows, keys in SCALING:
        results.append(run_batch(rows, keys, args.speed, max(args.pool, 4 * keys)))
        print(
            "SCALING rows keys wall_s floor_s ratio s_per_row worst_key_idle_s lead+tail_s succeeded "
            "scheduler_cpu_s_per_row task_processes_cpu_s_per_row"
        )
        for r in results:
            print(
                f"SCALING {r['rows']:>4} {r['keys']:>4} {r['wall']:>7.1f} {r['floor']:>7.1f} "
                f"{r['wall'] / r['floor']:>5.2f} {r['wall'] / r['rows']:>5.2f} {r['idle']:>7.1f} "
                f"{r['lead_tail']:>6.1f} {r['succeeded']:>4}/{r['rows']} "
                f"{r['scheduler_cpu_per_row']:>5.2f} {r['tasks_cpu_per_row']:>5.2f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
