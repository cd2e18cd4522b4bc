"""Prints a batch's wall time against the service's own busy time, on real Airflow processes.

    .venv/bin/python benchmarks/bench_batch.py [--rows 50] [--speed 4] [--pool 8]

Real api-server, scheduler (LocalExecutor), dag-processor and triggerer; the emulator with one key at
``--speed`` (simulated seconds per wall second). One ``talking_heads`` run over ``--rows`` rows (emo-v1
and emoji-v1 mixed) is triggered through the REST API; the run's wall time (trigger -> stored videos and
outcomes) is set against the emulator's busy time for the same tasks (the sum of their RUNNING
spans: one task runs at a time per key, so that is the floor for the batch).

Also printed: how long the service sat idle between its first and last task (the pipeline failing to
keep its queue full), the lead (trigger -> first task running) and the tail (last task done -> run
end), and the worker-seconds Airflow's wait tasks ran for against the seconds they waited deferred
(holding no worker slot). The DAG runs one API key per run (``max_active_runs=1``), so scaling with
keys is not measured here.
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
from dashscope_emulator import EmulatorServer, make_samples, serve_directory

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.integration.airflow_cluster import AirflowCluster

KEY = "sk-bench-batch-0123456789"
WORKLOAD = re.compile(r"Workload finished\s.*?duration=(?P<duration>[\d.]+).*?workload_id=(?P<id>[0-9a-f-]{36})")


def _rows(media: str, boxes: dict, count: int) -> list[dict]:
    rows = []
    for i in range(count):
        if i % 3 == 2:
            name, extra, model = "portrait_emoji.png", {"driven_id": "mengwa_kaixin"}, "emoji-v1"
        else:
            name = "portrait_square.png" if i % 3 == 0 else "portrait_halfbody.jpg"
            extra, model = {"audio_url": f"{media}/voice.wav"}, "emo-v1"
        rows.append({"row_id": f"b{i:04d}", "model": model, "image_url": f"{media}/{name}",
                     "face_bbox": json.dumps(boxes[name]["face_bbox"]),
                     "ext_bbox": json.dumps(boxes[name]["ext_bbox"]), **extra})  # fmt: skip
    return rows


def _ts(text: str) -> float:
    """Emulator task times (``YYYY-MM-DD HH:MM:SS.mmm``, UTC+8) as simulated epoch seconds."""
    return datetime.strptime(text, "%Y-%m-%d %H:%M:%S.%f").timestamp()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=50)
    parser.add_argument("--speed", type=float, default=4.0)
    parser.add_argument("--pool", type=int, default=8, help="slots of the dashscope pool (tasks in flight)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_samples(root / "media")
        boxes = json.loads((root / "media" / "samples.json").read_text())
        with (
            serve_directory(root / "media") as media,
            EmulatorServer(api_keys=[KEY], port=0, speed=args.speed) as emulator,
        ):
            env = {"AIRFLOW_CONN_DASHSCOPE_DEFAULT": json.dumps(
                {"conn_type": "dashscope", "host": emulator.base_url, "password": KEY})}  # fmt: skip
            cluster = AirflowCluster(root / "airflow", env).start()
            try:
                cluster.airflow("pools", "set", "dashscope", str(args.pool), "bench", "--include-deferred")
                cluster.wait_for_dag("talking_heads")
                time.sleep(5)  # let the run that unpausing starts (default params) get out of the way
                table = root / "batch.csv"
                pd.DataFrame(_rows(media, boxes, args.rows)).to_csv(table, index=False)
                conf = {"input_table": str(table), "output_root": str(root / "out"), "poll_interval_seconds": 1}
                started = time.monotonic()
                run = cluster.post("/dags/talking_heads/dagRuns", {"logical_date": None, "conf": conf})
                state = cluster.wait_for_run("talking_heads", run["dag_run_id"], seconds=6 * 3600)
                wall = time.monotonic() - started
                tis = cluster.task_instances("talking_heads", run["dag_run_id"])
                scheduler_log = (cluster.home / "scheduler.log").read_text(errors="replace")
            finally:
                cluster.stop()
            tasks = [t for t in emulator.tasks() if t["status"] == "SUCCEEDED"]
        outcomes = pd.concat(pd.read_csv(p) for p in (root / "out" / "outcomes").glob("*.csv"))

    spans = sorted((_ts(t["scheduled_time"]), _ts(t["end_time"])) for t in tasks)
    busy = sum(end - start for start, end in spans) / args.speed
    service_span = (spans[-1][1] - spans[0][0]) / args.speed
    wait_ids = {ti["id"] for ti in tis if ti["task_id"] == "generate.wait"}
    # Worker time is what the executor's supervisor reports per workload (one for the first check that
    # defers, one for the resume); a TI's own duration would include the time spent deferred.
    wait_running = sum(float(m["duration"]) for m in WORKLOAD.finditer(scheduler_log) if m["id"] in wait_ids)
    on_service = sum((_ts(t["end_time"]) - _ts(t["submit_time"])) for t in tasks) / args.speed
    print(f"BATCH rows={args.rows} speed={args.speed:g} pool={args.pool} run={state} "
          f"succeeded={(outcomes['status'] == 'succeeded').sum()} tasks={len(tasks)}")
    print(f"BATCH wall={wall:.1f}s emulator_busy={busy:.1f}s ratio={wall / busy:.3f} (target <= 1.05) "
          f"service_idle_between_tasks={service_span - busy:.1f}s lead+tail={wall - service_span:.1f}s")
    print(f"BATCH wait_tasks_worker_seconds={wait_running:.1f}s for {on_service:.0f} task-seconds queued/running "
          f"on the service ({wait_running / max(on_service, 1e-9):.3f} worker-seconds per waited second; "
          f"a blocking SDK call loop holds one worker for all {on_service:.0f}s)")


if __name__ == "__main__":
    main()
