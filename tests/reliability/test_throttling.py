"""Two API keys (two accounts), each pushed past its emo-v1 submit limit (5/s) and its 20 query QPS: the
429s provoked, the hooks' count of them, and recovery.

Within one process the hook paces an account's submits below its limit, so the 429s come from what
shares no limiter: several processes. Each is played by a connection under its own host name (the same
service; ``a_`` and ``b_``): per key, 20 submissions from 4 threads over both (two pacers of 4.5/s
against the service's 5), then every task waited on by two "triggerers" at once (two query limiters of
15 QPS each), 30 QPS against the service's 20. Counted from the emulator's own request log, per key:
the 429 answers, that the hooks' ``throttled`` counters add up to them, and that every call recovered:
each submission made exactly one task, every wait ended with the task's final state, and no key's
throttling touched the other.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

KEYS = {"k1": "sk-throttle-one-0123456789", "k2": "sk-throttle-two-9876543210"}
SUBMITS_PER_KEY = 20
SUBMIT_THREADS = 4
SUBMIT_PATH = "/api/v1/services/aigc/image2video/video-synthesis"


@pytest.fixture(scope="module")
def emo_input(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    from dashscope_emulator import make_samples, serve_directory

    folder = tmp_path_factory.mktemp("throttle-media")
    make_samples(folder)
    boxes = json.loads((folder / "samples.json").read_text())["portrait_square.png"]
    with serve_directory(folder, port=0) as url:
        yield {
            "image_url": f"{url}/portrait_square.png",
            "audio_url": f"{url}/voice.wav",
            "face_bbox": boxes["face_bbox"],
            "ext_bbox": boxes["ext_bbox"],
        }


def _connections(emulator: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Per key, ``a_<k>`` and ``b_<k>``: the same service under two host names, so two rate limiters."""
    for name, key in KEYS.items():
        for conn, host in (("a", emulator.base_url), ("b", emulator.base_url.replace("127.0.0.1", "localhost"))):
            monkeypatch.setenv(
                f"AIRFLOW_CONN_{conn.upper()}_{name.upper()}",
                json.dumps({"conn_type": "dashscope", "host": host, "password": key}),
            )


def _submit_all(name: str, task_input: dict[str, Any]) -> tuple[list[str], int]:
    """Submit with 4 threads over both "processes" of the key; the task ids, and the 429s the hooks absorbed."""
    from dashscope_provider.hooks.dashscope import DashScopeHook

    def one_thread(index: int) -> tuple[list[str], int]:
        hook = DashScopeHook(f"{'ab'[index % 2]}_{name}", retry_initial=0.1, retry_max=1.0)
        ids = [hook.submit_task("emo-v1", task_input).task_id for _ in range(SUBMITS_PER_KEY // SUBMIT_THREADS)]
        return ids, hook.throttled

    with ThreadPoolExecutor(SUBMIT_THREADS) as pool:
        results = list(pool.map(one_thread, range(SUBMIT_THREADS)))
    return [task_id for ids, _ in results for task_id in ids], sum(throttled for _, throttled in results)


async def _wait_all(task_ids: dict[str, list[str]]) -> list[dict[str, Any]]:
    from dashscope_provider.triggers.dashscope import DashScopeTaskTrigger

    async def wait(conn_id: str, task_id: str) -> dict[str, Any]:
        # Each wait polls its own task (no account watcher): the point is to push queries past 20 QPS.
        async for event in DashScopeTaskTrigger(
            task_id, dashscope_conn_id=conn_id, poll_interval=0.05, timeout=240, watch_account=False
        ).run():
            return event.payload
        raise AssertionError("the trigger ended without an event")

    jobs = [wait(f"{side}_{name}", task_id) for name, ids in task_ids.items() for task_id in ids for side in "ab"]
    return await asyncio.gather(*jobs)


@pytest.mark.timeout(600)
def test_two_keys_over_their_limits_are_throttled_and_recover(
    airflow_db: str, emo_input: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from dashscope_emulator import EmulatorServer
    from dashscope_emulator.server import key_fingerprint

    started = time.monotonic()
    with EmulatorServer(api_keys=list(KEYS.values()), port=0, speed=50, cache_dir=tmp_path) as emulator:
        _connections(emulator, monkeypatch)
        with ThreadPoolExecutor(len(KEYS)) as pool:  # both keys at once
            results = dict(zip(KEYS, pool.map(lambda n: _submit_all(n, emo_input), KEYS), strict=True))
        submitted = {name: ids for name, (ids, _) in results.items()}
        events = asyncio.run(_wait_all(submitted))
        log, tasks, billing = emulator.request_log(), emulator.tasks(), emulator.billing()

    fingerprints = {key_fingerprint(key): name for name, key in KEYS.items()}
    submits = Counter((fingerprints[r["key_fingerprint"]], r["status"]) for r in log if r["path"] == SUBMIT_PATH)
    queries = Counter(
        (fingerprints[r["key_fingerprint"]], r["status"])
        for r in log
        if r["method"] == "GET" and r["path"].startswith("/api/v1/tasks/")
    )
    figures = {}
    for name in KEYS:
        own = [t for t in tasks if fingerprints[t["key_fingerprint"]] == name]
        # Recovered: every submit call got its task, exactly one each, nothing lost or doubled.
        assert sorted(t["task_id"] for t in own) == sorted(submitted[name])
        assert submits[(name, 200)] == SUBMITS_PER_KEY
        # Provoked: each key was pushed past both of its limits.
        assert submits[(name, 429)] > 0, f"{name}: no submit was throttled; the test did not push hard enough"
        assert results[name][1] == submits[(name, 429)]  # the hooks counted every 429 they absorbed
        assert queries[(name, 429)] > 0, f"{name}: no query was throttled; the test did not push hard enough"
        assert set(submits) | set(queries) <= {(k, s) for k in KEYS for s in (200, 429)}
        figures[name] = (
            f"submit_429={submits[(name, 429)]} query_429={queries[(name, 429)]} queries_200={queries[(name, 200)]}"
        )
    # Every wait (two per task) ended with the task's final state, none gave up on the 429s.
    assert len(events) == 2 * SUBMITS_PER_KEY * len(KEYS)
    assert Counter(e["status"] for e in events) == {"success": len(events)}
    assert {e["task"]["task_id"] for e in events} == {t["task_id"] for t in tasks}
    assert len(billing) == len(tasks) == SUBMITS_PER_KEY * len(KEYS)
    print(
        f"\nTHROTTLING keys={len(KEYS)} submits_per_key={SUBMITS_PER_KEY} (x{SUBMIT_THREADS} threads) "
        f"waits_per_task=2 "
        + " ".join(f"{n}: {f}" for n, f in figures.items())
        + f" recovered=all waits_ended={len(events)} double_submits=0 wall={time.monotonic() - started:.1f}s"
    )
