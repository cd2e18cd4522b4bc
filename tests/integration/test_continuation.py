"""A table larger than ``max_map_length`` from one trigger, on real Airflow processes against the emulator.

The cluster is the session's shared one (``shared_cluster`` in ``tests/conftest.py``; the browser tests use it
too), its ``[core] max_map_length`` lowered to 20, and a 50-row table is triggered once through
the REST API: the run maps 20 rows and continues in two follow-up runs (20 and 10 rows; every day 14 rows at a
limit of 6: 6, 6 and 2). Checked: every
row ends with one outcome (``succeeded`` in the part that generated it), each row's task was created once
(the emulator's own log), the run notes say which part each run is, and each wait ran one task process
at most. A second test, on a slow emulator (waits that must defer), checks that the trigger ends the wait
(no resume on a worker) and that the download step gets its result.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from urllib.parse import quote

import pandas as pd
import pytest
import requests

from tests.conftest import SHARED_MAP_LIMIT, SharedCluster, tier_size

pytestmark = pytest.mark.integration
ROWS = tier_size(50, 14)
MAP_LIMIT = SHARED_MAP_LIMIT
#: The rows each of the three parts generates, in order.
PART_ROWS = (MAP_LIMIT, MAP_LIMIT, ROWS - 2 * MAP_LIMIT)
WORKLOAD = re.compile(r"Workload finished\s.*?workload_id=(?P<id>[0-9a-f-]{36})")


@pytest.fixture(scope="module")
def world(shared_cluster: SharedCluster, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The session's shared cluster (``[core] max_map_length`` :data:`MAP_LIMIT`), with this module's folder."""
    return {
        "root": tmp_path_factory.mktemp("continuation"),
        "media": shared_cluster.media,
        "boxes": shared_cluster.boxes,
        "emu": shared_cluster.emulators["dashscope_cont"],
        "slow": shared_cluster.emulators["dashscope_slow"],
        "cluster": shared_cluster.cluster,
    }


def _rows(media: str, boxes: dict, count: int = ROWS) -> list[dict]:
    rows = []
    for i in range(count):
        emoji = i % 5 == 4
        name = "portrait_emoji.png" if emoji else "portrait_square.png"
        extra = {"driven_id": "mengwa_kaixin"} if emoji else {"audio_url": f"{media}/voice.wav"}
        rows.append(
            {
                "row_id": f"c{i:02d}",
                "model": "emoji-v1" if emoji else "emo-v1",
                "image_url": f"{media}/{name}",
                "face_bbox": json.dumps(boxes[name]["face_bbox"]),
                "ext_bbox": json.dumps(boxes[name]["ext_bbox"]),
                **extra,
            }
        )
    return rows


@pytest.mark.timeout(600)  # the parts are awaited up to 400 s on a loaded machine
def test_a_table_over_max_map_length_completes_from_one_trigger(world: dict) -> None:
    cluster, emulator, root = world["cluster"], world["emu"], world["root"]
    table = root / "big.csv"
    pd.DataFrame(_rows(world["media"], world["boxes"])).to_csv(table, index=False)
    conf = {
        "input_table": str(table),
        "output_root": str(root / "out"),
        "dashscope_conn_id": "dashscope_cont",
        "poll_interval_seconds": 0.5,
    }
    started = time.monotonic()
    first = cluster.post("/dags/talking_heads/dagRuns", {"logical_date": None, "conf": conf})["dag_run_id"]
    parts = [first, f"{first}__part2", f"{first}__part3"]
    runs = cluster.wait_for_runs("talking_heads", parts, seconds=400)
    print(f"3 parts of {ROWS} rows in {time.monotonic() - started:.1f}s")
    assert [runs[r]["state"] for r in parts] == ["success"] * 3, cluster.logs("scheduler")

    # Each row's task was created once, by the part that took it; nothing more was submitted.
    tasks = emulator.tasks()
    assert len(tasks) == ROWS and all(t["status"] == "SUCCEEDED" for t in tasks)
    assert len(emulator.billing()) == ROWS

    # Every row has exactly one outcome that is not "continues in a later run": succeeded, in its part.
    tables = {p.stem: pd.read_csv(p) for p in (root / "out" / "outcomes").glob("*.csv")}
    assert len(tables) == 3 and all(len(t) == ROWS for t in tables.values())
    final = Counter()
    for frame in tables.values():
        final.update(frame.loc[frame["status"] == "succeeded", "row_id"])
        continuing = frame[frame["message"].fillna("").str.contains("continues in run")]
        assert (continuing["status"] == "skipped").all()
    assert final == Counter({f"c{i:02d}": 1 for i in range(ROWS)})
    per_part = sorted(int((t["status"] == "succeeded").sum()) for t in tables.values())
    assert per_part == sorted(PART_ROWS)

    # The notes say which part each run is and where it continues.
    assert "part 1 of 3" in runs[first]["note"] and f"continues in run {parts[1]}" in runs[first]["note"]
    assert "part 3 of 3" in runs[parts[2]]["note"]

    # One mapped entry per row, named by row_id, in each part; each wait ran one task process at most.
    workloads = Counter(m["id"] for m in WORKLOAD.finditer((cluster.home / "scheduler.log").read_text()))
    for run_id, rows in zip(parts, PART_ROWS, strict=True):
        tis = cluster.task_instances("talking_heads", run_id)
        waits = [ti for ti in tis if ti["task_id"] == "generate.wait"]
        assert len(waits) == rows and all(ti["state"] == "success" for ti in waits)
        assert len({ti["rendered_map_index"] for ti in waits}) == rows
        assert all(workloads[ti["id"]] <= 1 for ti in waits), [workloads[ti["id"]] for ti in waits]
        [cont] = [ti for ti in tis if ti["task_id"] == "continue_run"]
        assert cont["state"] == "success"
    # The last part had nothing left to continue with.
    fourth = f"{cluster.api}/dags/talking_heads/dagRuns/{quote(f'{first}__part4', safe='')}"
    assert requests.get(fourth, timeout=30).status_code == 404


def test_waits_end_in_the_triggerer_and_downloads_get_their_result(world: dict) -> None:
    cluster, slow, root = world["cluster"], world["slow"], world["root"]
    table = root / "slow.csv"
    pd.DataFrame(_rows(world["media"], world["boxes"], 3)).to_csv(table, index=False)
    conf = {
        "input_table": str(table),
        "output_root": str(root / "slow-out"),
        "dashscope_conn_id": "dashscope_slow",
        "poll_interval_seconds": 1,
    }
    run_id = cluster.post("/dags/talking_heads/dagRuns", {"logical_date": None, "conf": conf})["dag_run_id"]
    seen: set[str] = set()

    def watch() -> None:
        seen.update(
            ti["state"] for ti in cluster.task_instances("talking_heads", run_id) if ti["task_id"] == "generate.wait"
        )

    assert cluster.wait_for_run("talking_heads", run_id, seconds=240, on_poll=watch) == "success"
    assert "deferred" in seen
    workloads = Counter(m["id"] for m in WORKLOAD.finditer((cluster.home / "scheduler.log").read_text()))
    waits = [ti for ti in cluster.task_instances("talking_heads", run_id) if ti["task_id"] == "generate.wait"]
    assert [workloads[ti["id"]] for ti in waits] == [1, 1, 1]  # the first check only: no resume on a worker
    assert all(ti["state"] == "success" for ti in waits)
    outcomes = pd.read_csv(next((root / "slow-out" / "outcomes").glob("*.csv")))
    assert outcomes["status"].tolist() == ["succeeded"] * 3  # downloaded from the trigger's XCom
    assert len(slow.tasks()) == 3
