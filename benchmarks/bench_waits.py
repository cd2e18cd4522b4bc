"""Prints the query rate one account sees while 1,000 deferred waits poll it from one triggerer.

    .venv/bin/python benchmarks/bench_waits.py [--waits 1000] [--window 90] [--poll-interval 15] [--connections 2]
        [--no-watch]

``--no-watch``: each trigger polls its own task (``watch_account=False``), as before the account's watcher;
by default the triggers share their account's watcher (one task list per round, a read per ended task).

``--connections N``: the waits are spread over N connections, N API keys of one Alibaba Cloud account
(connection extra ``account``), each wait polling through the key that submitted its task; the service
counts the account's queries together, so the limit is still 20 QPS for all of them.

Setup: the emulator on real time with one key; ``--waits`` tasks are submitted (the emulator's submit
limit is raised for this setup only, so that 1,000 tasks exist within seconds; the query limit stays the
documented 20 QPS). One task runs at a time per key, so all the others stay PENDING and every wait keeps
polling. Then ``--waits`` :class:`DashScopeTaskTrigger` instances run in one asyncio event loop, as the
triggerer runs them, for ``--window`` seconds. The emulator's own request log gives the figures: peak
queries in any 1 s window (limit 20), throttled (429) answers (target 0), and how often each wait got
to poll; at the end of the last line, the list pages and single-task reads among the queries, the
queries per wait and per task that ended in the window (what a generated row costs the account).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import resource
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from dashscope_emulator import EmulatorServer, make_samples, serve_directory

KEY = "sk-bench-waits-0123456789"


def submit_tasks(count: int, media_url: str, boxes: dict[str, Any], conn_ids: list[str]) -> list[tuple[str, str]]:
    """``count`` tasks, spread round robin over ``conn_ids``: (task id, the connection that submitted it)."""
    from dashscope_provider.hooks.dashscope import DashScopeHook

    hooks = [DashScopeHook(dashscope_conn_id=c, submit_qps={"emoji-v1": 100_000.0}) for c in conn_ids]
    task_input = {
        "image_url": f"{media_url}/portrait_emoji.png",
        "driven_id": "mengwa_kaixin",
        "face_bbox": boxes["portrait_emoji.png"]["face_bbox"],
        "ext_bbox": boxes["portrait_emoji.png"]["ext_bbox"],
    }
    return [
        (hooks[i % len(hooks)].submit_task("emoji-v1", task_input).task_id, conn_ids[i % len(hooks)])
        for i in range(count)
    ]


async def wait_all(tasks: list[tuple[str, str]], window: float, poll_interval: float, watch: bool) -> int:
    """Run one trigger per task for ``window`` seconds; returns how many fired an event meanwhile."""
    from dashscope_provider.triggers.dashscope import DashScopeTaskTrigger

    fired = 0

    async def wait(task_id: str, conn_id: str) -> None:
        nonlocal fired
        trigger = DashScopeTaskTrigger(task_id, conn_id, poll_interval=poll_interval, watch_account=watch)
        async for _ in trigger.run():
            fired += 1

    jobs = [asyncio.create_task(wait(t, c)) for t, c in tasks]
    await asyncio.sleep(window)
    for job in jobs:
        job.cancel()
    await asyncio.gather(*jobs, return_exceptions=True)
    return fired


def peak_per_second(times: list[float]) -> int:
    """The most requests within any 1 s window (sliding, as the service counts)."""
    times = sorted(times)
    peak, start = 0, 0
    for end, t in enumerate(times):
        while t - times[start] >= 1.0:
            start += 1
        peak = max(peak, end - start + 1)
    return peak


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--waits", type=int, default=1000)
    parser.add_argument("--window", type=float, default=90.0)
    parser.add_argument("--poll-interval", type=float, default=15.0)
    parser.add_argument("--connections", type=int, default=1, help="connections (keys) of one account")
    parser.add_argument("--no-watch", action="store_true", help="each trigger polls its own task (no watcher)")
    args = parser.parse_args()
    keys = [KEY] + [f"{KEY}-{i}" for i in range(1, args.connections)]
    conn_ids = ["dashscope_default"] + [f"dashscope_bench_{i}" for i in range(1, args.connections)]
    logging.getLogger("dashscope_provider").setLevel(logging.WARNING)  # one "still PENDING" line per poll

    with tempfile.TemporaryDirectory() as tmp:
        make_samples(tmp)
        boxes = json.loads((Path(tmp) / "samples.json").read_text())
        with (
            serve_directory(tmp) as media_url,
            EmulatorServer(accounts={"bench": keys}, port=0, speed=1, submit_qps=100_000) as emulator,
        ):
            for conn_id, key in zip(conn_ids, keys, strict=True):
                os.environ[f"AIRFLOW_CONN_{conn_id.upper()}"] = json.dumps(
                    {
                        "conn_type": "dashscope",
                        "host": emulator.base_url,
                        "password": key,
                        "extra": {"account": "bench"},
                    }
                )
            started = time.monotonic()
            task_ids = submit_tasks(args.waits, media_url, boxes, conn_ids)
            setup = time.monotonic() - started
            mark = len(emulator.request_log())
            began = time.time()
            fired = asyncio.run(wait_all(task_ids, args.window, args.poll_interval, not args.no_watch))
            queries = [
                r
                for r in emulator.request_log()[mark:]
                if r["method"] == "GET" and r["path"].startswith("/api/v1/tasks/")
            ]
            statuses = Counter(r["status"] for r in queries)
            polls_per_task = Counter(r["task_id"] for r in queries if r["task_id"])
            pages = sum(r["path"] == "/api/v1/tasks/" for r in queries)
            pending = sum(t["status"] == "PENDING" for t in emulator.tasks())

    spent = max(r["time"] for r in queries) - began if queries else 0.0
    polled = len(polls_per_task)
    answered = sum(n for s, n in statuses.items() if s == 200)
    print(
        f"WAITS waits={args.waits} key={args.connections} triggerer=1 poll_interval={args.poll_interval:g}s "
        f"window={args.window:g}s "
        f"(setup: {len(task_ids)} tasks submitted in {setup:.1f}s, {pending} still PENDING at the end)"
    )
    print(
        f"WAITS queries={len(queries)} answered_200={answered} throttled_429={statuses.get(429, 0)} "
        f"other={sum(n for s, n in statuses.items() if s not in (200, 429))} "
        f"peak_qps_1s={peak_per_second([r['time'] for r in queries])} (limit 20) "
        f"mean_qps={len(queries) / max(spent, 1e-9):.1f}"
    )
    print(
        f"WAITS waits_polled={polled}/{args.waits} polls_per_wait_min={min(polls_per_task.values(), default=0)} "
        f"max={max(polls_per_task.values(), default=0)} "
        f"effective_poll_interval={args.window * args.waits / max(len(queries), 1):.1f}s "
        f"events_fired={fired} peak_rss={resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f}MB "
        f"connections={args.connections} accounts=1 "
        f"watch_account={int(not args.no_watch)} list_pages={pages} reads={len(queries) - pages} "
        f"queries_per_wait={len(queries) / max(args.waits, 1):.2f} finished={fired} "
        f"queries_per_finished_task={len(queries) / max(fired, 1):.1f}"
    )


if __name__ == "__main__":
    main()
