"""Prints a batch's wall time against the service's own busy time, on real Airflow processes.

    .venv/bin/python benchmarks/bench_batch.py [--rows 50] [--keys 1] [--accounts K] [--speed 4] [--pool 4]
    .venv/bin/python benchmarks/bench_batch.py --side-by-side --rows 100 [--slow-rows 30]  # speeds 16, 4 and 1
    .venv/bin/python benchmarks/bench_batch.py --scaling [--speed 16]  # rows 200/1000/3000 x accounts 1/2/4
    .venv/bin/python benchmarks/bench_batch.py --scaling --scaling-rows 200 --scaling-accounts 1  # one line

Real api-server, scheduler (LocalExecutor), dag-processor and triggerer; the emulator with ``--keys``
keys at ``--speed`` (simulated seconds per wall second), grouped into ``--accounts`` Alibaba Cloud accounts
(default: one per key; the service counts its limits and runs one task at a time per account). One
``talking_heads`` run over ``--rows`` rows (emo-v1 and emoji-v1 mixed; with several keys, spread over them
by ``extra_dashscope_conn_ids``) is triggered through the REST API; the run's wall time (trigger -> stored
videos and outcomes) is set against the emulator's busy time for the same tasks: one task runs at a time
per account, so the floor for the batch is the busiest account's sum of RUNNING spans. A table over
``[core] max_map_length`` rows is processed by one trigger in several runs (parts); the wall time runs to
the end of the last part.

Also printed: how long the service sat idle between its first and last task (the pipeline failing to
keep its queue full), the lead (trigger -> first task running) and the tail (last task done -> run
end), and the worker-seconds Airflow's wait tasks ran for against the seconds they waited deferred
(holding no worker slot), the task processes per row, the worker-seconds per wait and Airflow's CPU
seconds per row by process. ``--scaling`` runs rows 200 / 1,000 / 3,000 x accounts 1 / 2 / 4 (one key
each), each on a fresh cluster, and prints a table (hours at speed 16 on 2 cores; ``--scaling-rows`` and
``--scaling-accounts`` pick lines).

Settings: ``--settings compose`` (the default) runs with what docker-compose.yaml ships (its ``AIRFLOW__*``
settings, Airflow's default heartbeats, the DAG's default 15-second poll, a 4-slot pool); ``--settings
harness`` with the test harness's 1-second heartbeats and a 1-second poll. The components' (scheduler,
api-server, dag-processor, triggerer) CPU-s per wall-second are measured idle before the trigger and over
the run.

The ``BATCH`` lines' fields keep their names and units (other tools read them); new fields are added at
the end of a line.
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
from typing import Any

import pandas as pd
import psutil
import requests
import yaml
from dashscope_emulator import EmulatorServer, make_samples, serve_directory

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from talking_heads.table.continuation import ROWS_PER_ACCOUNT_ENV

from tests.harness.cluster import AirflowCluster

REPO_ROOT = Path(__file__).resolve().parents[1]
KEY = "sk-bench-batch-0123456789"  # key i > 0 is f"{KEY}-{i}"
WORKLOAD = re.compile(r"Workload finished\s.*?duration=(?P<duration>[\d.]+).*?workload_id=(?P<id>[0-9a-f-]{36})")


#: The harness's fast-forward settings (1-second heartbeats, a 5-second DAG refresh), which a deployment
#: does not run: ``--settings compose`` drops them, so Airflow's defaults apply as in docker-compose.yaml.
HARNESS_ONLY = (
    "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC",
    "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL",
    "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC",
)
#: Compose settings that name its machines (executor, DB, broker, config file, URLs, the health check's
#: fixed port): this harness has its own.
COMPOSE_INFRASTRUCTURE = re.compile(
    r"EXECUTOR|SQL_ALCHEMY|CELERY|EXECUTION_API|AIRFLOW_CONFIG|SIMPLE_AUTH|HEALTH_CHECK|^AIRFLOW_CONN_"
)


def compose_settings() -> dict[str, str]:
    """The Airflow and pipeline settings ``docker-compose.yaml`` ships, without its machines' addresses."""
    compose = yaml.safe_load((REPO_ROOT / "docker-compose.yaml").read_text())
    environment = compose["x-airflow-common"]["environment"]
    return {
        name: str(value)
        for name, value in environment.items()
        if (name.startswith(("AIRFLOW", "TALKING_HEADS_")) and name != "TALKING_HEADS_OUTPUT_ROOT")
        and not COMPOSE_INFRASTRUCTURE.search(name)
    }


def _component_rates(cluster: AirflowCluster, seconds: float) -> dict[str, float]:
    """CPU-s per wall-second of each long-running component over ``seconds`` of the cluster as it is."""
    before = _cpu_by_role(cluster)
    time.sleep(seconds)
    after = _cpu_by_role(cluster)
    return {role: (after[role] - before.get(role, 0.0)) / seconds for role in after if role in COMPONENT_ROLES}


#: How often the benchmark asks the REST API whether the run ended: each ask costs the api-server CPU that
#: would count as the run's (asked every 0.5 s, as the tests do, those asks were most of what py-spy saw the
#: api-server do while a run waited).
POLL_RUN_SECONDS = 5.0
#: The long-running components whose cost grows with how long a run is alive (task processes do not).
COMPONENT_ROLES = ("scheduler", "api-server", "dag-processor", "triggerer")


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


def status_queries(requests: list[dict[str, Any]]) -> dict[str, int]:
    """The run's status queries in the emulator's request log: task-list pages and single-task reads.

    What a generated row costs the account's 20 QPS while it waits (``GET /api/v1/tasks/...``; submits and
    face detections are one each per row, and not counted here).
    """
    queries = [r for r in requests if r["method"] == "GET" and r["path"].startswith("/api/v1/tasks/")]
    pages = sum(r["path"] == "/api/v1/tasks/" for r in queries)
    return {"all": len(queries), "pages": pages, "reads": len(queries) - pages}


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


def _accounts(keys: list[str], accounts: int) -> dict[str, list[str]]:
    """Key i goes to account ``i % accounts``: the emulator's grouping and the connections' ``account`` extra."""
    grouped: dict[str, list[str]] = {}
    for i, key in enumerate(keys):
        grouped.setdefault(f"acct-{i % accounts}", []).append(key)
    return grouped


def _wait_for_parts(cluster: AirflowCluster, first: str, plans: Path, seconds: float) -> tuple[list[str], str]:
    """Wait for the trigger's runs: the first, then each follow-up part its plan file names.

    Returns the run ids and the worst state (``failed`` if any part failed).
    """
    run_ids, states = [first], []
    deadline = time.monotonic() + seconds
    while True:
        run_id = run_ids[-1]
        while True:
            try:
                states.append(
                    cluster.wait_for_run(
                        "talking_heads", run_id, seconds=max(1, deadline - time.monotonic()), interval=POLL_RUN_SECONDS
                    )
                )
                break
            except requests.HTTPError:  # a follow-up run not created yet: its part is triggered by the previous
                time.sleep(POLL_RUN_SECONDS)
        plan = plans / re.sub(r"[^A-Za-z0-9._-]+", "_", run_id).strip("_") / "plan.json"
        following = json.loads(plan.read_text()).get("continuation", {}).get("next_run_id") if plan.exists() else None
        if not following:
            return run_ids, ("failed" if "failed" in states else states[-1])
        run_ids.append(following)


def run_batch(
    rows: int,
    keys: int,
    speed: float,
    *,
    pool: int,
    accounts: int | None = None,
    settings: str = "compose",
    idle_seconds: float = 60,
    rows_per_account: int | None = None,
) -> dict[str, Any]:
    """One run on a fresh cluster and emulator; prints its ``BATCH`` lines and returns its figures.

    ``keys`` API keys (one connection each) grouped into ``accounts`` accounts (default: one per key).
    ``settings``: ``compose`` (what docker-compose.yaml ships: Airflow's default heartbeats and the DAG's
    default poll interval) or ``harness`` (the test harness's 1-second heartbeats and a 1-second poll).
    The components' CPU rate is measured idle for ``idle_seconds`` before the trigger, then over the run.
    ``rows_per_account``: the run's bound (``TALKING_HEADS_ROWS_PER_RUN_PER_ACCOUNT``) instead of the
    settings' (compose ships one; 0: no bound).
    """
    accounts = accounts or keys
    api_keys = [KEY] + [f"{KEY}-{i}" for i in range(1, keys)]
    conn_ids = ["dashscope_default"] + [f"dashscope_bench_{i}" for i in range(1, keys)]
    grouped = _accounts(api_keys, accounts)
    account_of = {key: name for name, members in grouped.items() for key in members}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_samples(root / "media")
        boxes = json.loads((root / "media" / "samples.json").read_text())
        with (
            serve_directory(root / "media") as media,
            EmulatorServer(port=0, speed=speed, accounts=grouped) as emulator,
        ):
            env = {
                f"AIRFLOW_CONN_{conn_id.upper()}": json.dumps(
                    {
                        "conn_type": "dashscope",
                        "host": emulator.base_url,
                        "password": key,
                        "extra": {"account": account_of[key]},
                    }
                )
                for conn_id, key in zip(conn_ids, api_keys, strict=True)
            }
            if settings == "compose":
                env.update(compose_settings())
            if rows_per_account is not None:
                env[ROWS_PER_ACCOUNT_ENV] = str(rows_per_account)
            bound = env.get(ROWS_PER_ACCOUNT_ENV, "0")
            cluster = AirflowCluster(root / "airflow", env, pool_slots=pool)
            if settings == "compose":
                for name in HARNESS_ONLY:
                    cluster.env.pop(name, None)
            cluster.start()
            try:
                cluster.wait_for_dag("talking_heads")
                # the run that unpausing starts (default params) out of the way, then the components idle
                cluster.wait_until_idle("talking_heads", seconds=600)
                idle_rates = _component_rates(cluster, idle_seconds)
                table = root / "batch.csv"
                pd.DataFrame(_rows(media, boxes, rows)).to_csv(table, index=False)
                conf = {
                    "input_table": str(table),
                    "output_root": str(root / "out"),
                    "extra_dashscope_conn_ids": conn_ids[1:],
                    # compose: the DAG's default poll interval (the reference's 15 s)
                    **({"poll_interval_seconds": 1} if settings == "harness" else {}),
                }
                cpu_before = _cpu_by_role(cluster)
                log_mark = len(emulator.request_log())
                started = time.monotonic()
                run = cluster.post("/dags/talking_heads/dagRuns", {"logical_date": None, "conf": conf})
                run_ids, state = _wait_for_parts(cluster, run["dag_run_id"], root / "out" / "runs", 12 * 3600)
                wall = time.monotonic() - started
                cpu_after = _cpu_by_role(cluster)
                tis = [ti for run_id in run_ids for ti in cluster.task_instances("talking_heads", run_id)]
                scheduler_log = (cluster.home / "scheduler.log").read_text(errors="replace")
            finally:
                cluster.stop()
            tasks = [t for t in emulator.tasks() if t["status"] == "SUCCEEDED"]
            queries = status_queries(emulator.request_log()[log_mark:])
        outcomes = pd.concat(pd.read_csv(p) for p in (root / "out" / "outcomes").glob("*.csv"))

    queries_per_row = queries["all"] / max(len(tasks), 1)

    def spans_by(field: str) -> dict[str, list[tuple[float, float]]]:
        spans: dict[str, list[tuple[float, float]]] = {}
        for t in tasks:
            spans.setdefault(t[field], []).append((_ts(t["scheduled_time"]), _ts(t["end_time"])))
        return spans

    def worst_idle(spans: dict[str, list[tuple[float, float]]]) -> float:
        # How long one key (account) sat idle between its own first and last task (the pipeline not keeping
        # its queue full); the worst is reported.
        return max((max(e for _, e in s) - min(b for b, _ in s)) / speed - busy(s) for s in spans.values())

    def busy(spans: list[tuple[float, float]]) -> float:
        return sum(end - start for start, end in spans) / speed

    per_key, per_account = spans_by("key_fingerprint"), spans_by("account")
    # One task runs at a time per account: the floor is the busiest account's busy time.
    floor = max(busy(s) for s in per_account.values())
    starts = [start for spans in per_key.values() for start, _ in spans]
    ends = [end for spans in per_key.values() for _, end in spans]
    service_span = (max(ends) - min(starts)) / speed
    idle, account_idle = worst_idle(per_key), worst_idle(per_account)
    run_ti_ids = {ti["id"] for ti in tis}
    wait_ids = {ti["id"] for ti in tis if ti["task_id"] == "generate.wait"}
    # Worker time is what the executor's supervisor reports per workload (the first check that defers, and
    # a resume if there is one); a TI's own duration would include the time spent deferred.
    workloads = [(m["id"], float(m["duration"])) for m in WORKLOAD.finditer(scheduler_log) if m["id"] in run_ti_ids]
    wait_workloads = [duration for ti_id, duration in workloads if ti_id in wait_ids]
    wait_running = sum(wait_workloads)
    on_service = sum((_ts(t["end_time"]) - _ts(t["submit_time"])) for t in tasks) / speed
    succeeded = int((outcomes["status"] == "succeeded").sum())
    print(
        f"BATCH rows={rows} keys={keys} speed={speed:g} pool={pool} run={state} succeeded={succeeded} "
        f"tasks={len(tasks)} tasks_per_key={sorted(len(s) for s in per_key.values())} wait_tis={len(wait_ids)} "
        f"accounts={accounts} runs={len(run_ids)} task_processes={len(workloads)} "
        f"task_processes_per_row={len(workloads) / rows:.2f}"
    )
    print(
        f"BATCH wall={wall:.1f}s emulator_busy_floor={floor:.1f}s ratio={wall / floor:.3f} (target <= 1.05) "
        f"worst_key_idle_between_tasks={idle:.1f}s lead+tail={wall - service_span:.1f}s "
        f"worst_account_idle_between_tasks={account_idle:.1f}s"
    )
    per_wait = wait_running / max(len(wait_ids), 1)
    print(
        f"BATCH wait_tasks_worker_seconds={wait_running:.1f}s for {on_service:.0f} task-seconds queued/running "
        f"on the service ({wait_running / max(on_service, 1e-9):.4f} worker-seconds per waited second) "
        f"worker_seconds_per_wait={per_wait:.2f}s wait_task_processes={len(wait_workloads)}",
        flush=True,
    )
    cpu = {role: cpu_after[role] - cpu_before.get(role, 0.0) for role in cpu_after}
    airflow_cpu = sum(seconds for role, seconds in cpu.items() if role != "emulator+bench")
    cores = psutil.cpu_count() or 1
    print(
        f"BATCH cpu_seconds {' '.join(f'{role}={seconds:.1f}' for role, seconds in cpu.items())} "
        f"total={sum(cpu.values()):.1f} of {cores} cores x wall = {cores * wall:.1f} "
        f"({sum(cpu.values()) / (cores * wall):.0%} busy) airflow={airflow_cpu:.1f}"
    )
    idle_rate = sum(idle_rates.values())
    alive_rates = {role: cpu.get(role, 0.0) / wall for role in COMPONENT_ROLES}
    alive_rate = sum(alive_rates.values())
    print(
        f"BATCH cpu_seconds_per_row {' '.join(f'{role}={seconds / rows:.2f}' for role, seconds in cpu.items())} "
        f"airflow={airflow_cpu / rows:.2f} settings={settings} "
        f"components_cpu_s_per_s_idle={idle_rate:.3f} components_cpu_s_per_s_alive={alive_rate:.3f} "
        f"{' '.join(f'{role}_idle={rate:.3f}' for role, rate in idle_rates.items())} "
        f"{' '.join(f'{role}_alive={rate:.3f}' for role, rate in alive_rates.items())} "
        f"status_queries={queries['all']} list_pages={queries['pages']} task_reads={queries['reads']} "
        f"queries_per_row={queries_per_row:.2f} rows_per_run_per_account={bound}",
        flush=True,
    )
    return {
        "rows": rows,
        "keys": keys,
        "accounts": accounts,
        "wall": wall,
        "floor": floor,
        "idle": idle,
        "account_idle": account_idle,
        "lead_tail": wall - service_span,
        "succeeded": succeeded,
        "scheduler_cpu_per_row": cpu["scheduler"] / rows,
        "tasks_cpu_per_row": cpu["task_processes"] / rows,
        "api_cpu_per_row": cpu.get("api-server", 0.0) / rows,
        "airflow_cpu_per_row": airflow_cpu / rows,
        "worker_s_per_wait": per_wait,
        "processes_per_row": len(workloads) / rows,
        "runs": len(run_ids),
        "speed": speed,
        "ratio": wall / floor,
        "idle_rate": idle_rate,
        "alive_rate": alive_rate,
        "idle_rates": idle_rates,
        "alive_rates": alive_rates,
        "cpu_per_row": {role: seconds / rows for role, seconds in cpu.items()},
        "queries_per_row": queries_per_row,
    }


def print_paces(results: list[dict[str, Any]]) -> None:
    """The side-by-side table: Airflow CPU per row by process, and the components' rate idle and alive."""
    header = (
        "| pace | rows | wall / floor | Airflow CPU-s per row | scheduler | api-server | dag-processor | triggerer "
        "| task processes | components CPU-s per wall-second, idle | ... while the run is alive "
        "| status queries per generated row |"
    )
    print("PACES " + header)
    print("PACES " + "|---" * 12 + "|")
    for r in results:
        per_row = r["cpu_per_row"]
        cells = [
            f"`--speed {r['speed']:g}`",
            str(r["rows"]),
            f"{r['ratio']:.2f}",
            f"{r['airflow_cpu_per_row']:.2f}",
            *(f"{per_row.get(role, 0.0):.2f}" for role in (*COMPONENT_ROLES, "task_processes")),
            f"{r['idle_rate']:.3f}",
            f"{r['alive_rate']:.3f}",
            f"{r['queries_per_row']:.2f}",
        ]
        print("PACES | " + " | ".join(cells) + " |", flush=True)


SCALING_ROWS = (200, 1000, 3000)
SCALING_ACCOUNTS = (1, 2, 4)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=50)
    parser.add_argument("--keys", type=int, default=1, help="API keys the rows are spread over")
    parser.add_argument("--accounts", type=int, default=None, help="accounts the keys belong to (default: one each)")
    parser.add_argument("--speed", type=float, default=4.0)
    parser.add_argument("--pool", type=int, default=4, help="slots of the dashscope pool (compose ships 4)")
    parser.add_argument("--settings", choices=("compose", "harness"), default="compose")
    parser.add_argument("--idle-seconds", type=float, default=60, help="components' idle CPU measured this long")
    parser.add_argument(
        "--rows-per-account",
        type=int,
        default=None,
        help=f"a run's bound ({ROWS_PER_ACCOUNT_ENV}) instead of what --settings ship (0: none)",
    )
    parser.add_argument(
        "--side-by-side",
        action="store_true",
        help="--rows at speeds 16 and 4, and --slow-rows at speed 1: the pace table of docs/benchmarks.md",
    )
    parser.add_argument("--slow-rows", type=int, default=30)
    parser.add_argument("--scaling", action="store_true", help="rows 200/1000/3000 x accounts 1/2/4")
    parser.add_argument("--scaling-rows", type=int, nargs="+", default=list(SCALING_ROWS))
    parser.add_argument("--scaling-accounts", type=int, nargs="+", default=list(SCALING_ACCOUNTS))
    args = parser.parse_args()
    # What every line of one invocation shares.
    common = {"settings": args.settings, "idle_seconds": args.idle_seconds, "rows_per_account": args.rows_per_account}
    if args.side_by_side:
        lines = [(args.rows, 16.0), (args.rows, 4.0), (args.slow_rows, 1.0)]
        results = [
            run_batch(rows, args.keys, speed, pool=args.pool, accounts=args.accounts, **common) for rows, speed in lines
        ]
        print_paces(results)
        return
    if not args.scaling:
        run_batch(args.rows, args.keys, args.speed, pool=args.pool, accounts=args.accounts, **common)
        return
    results = []
    for rows in args.scaling_rows:
        for accounts in args.scaling_accounts:
            # One key per account: the accounts' parallelism is what the line measures.
            pool = max(args.pool, 4 * accounts)
            results.append(run_batch(rows, accounts, args.speed, pool=pool, accounts=accounts, **common))
            print(
                "SCALING rows keys wall_s floor_s ratio s_per_row worst_key_idle_s lead+tail_s succeeded "
                "scheduler_cpu_s_per_row task_processes_cpu_s_per_row accounts worst_account_idle_s "
                "api_server_cpu_s_per_row airflow_cpu_s_per_row worker_s_per_wait task_processes_per_row runs"
            )
            for r in results:
                print(
                    f"SCALING {r['rows']:>4} {r['keys']:>4} {r['wall']:>7.1f} {r['floor']:>7.1f} "
                    f"{r['wall'] / r['floor']:>5.2f} {r['wall'] / r['rows']:>5.2f} {r['idle']:>7.1f} "
                    f"{r['lead_tail']:>6.1f} {r['succeeded']:>4}/{r['rows']} "
                    f"{r['scheduler_cpu_per_row']:>5.2f} {r['tasks_cpu_per_row']:>5.2f} {r['accounts']:>4} "
                    f"{r['account_idle']:>7.1f} {r['api_cpu_per_row']:>5.2f} {r['airflow_cpu_per_row']:>5.2f} "
                    f"{r['worker_s_per_wait']:>5.2f} {r['processes_per_row']:>5.2f} {r['runs']:>3}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
