"""``sdk_blocking_baseline``: the benchmark's baseline, the ``dashscope`` SDK's blocking call per row.

Benchmark-only (``benchmarks/bench_sdk.py`` loads it beside ``talking_heads``; it is not in ``dags/``).
It reads the same input table and, for each row, runs one mapped task that does what SDK users do:
``dashscope.VideoSynthesis.call(...)``, which submits the task and then polls until it ends (1 s, then
2, 4, up to 5 s between queries) inside the task, so the task holds its worker slot for all the time
the DashScope task is queued and running. No download, no ledger, no outcomes: only the call.

Needs ``benchmarks/requirements.txt`` (the SDK is not a dependency of the project).
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import Param, dag, task

#: The same pool as ``talking_heads`` (``TALKING_HEADS_POOL``), so both DAGs get the same slots.
DASHSCOPE_POOL = os.environ.get("TALKING_HEADS_POOL", "default_pool")


@dag(
    dag_id="sdk_blocking_baseline",
    description="Benchmark baseline: one blocking dashscope.VideoSynthesis.call per input row",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["dashscope", "benchmark"],
    params={
        "input_table": Param(type="string", title="Input table", description="Path of a .csv or .parquet table."),
        "dashscope_conn_id": Param(
            "dashscope_default",
            type="string",
            title="DashScope connection",
            description="Connection of type dashscope: host = base URL, password = API key.",
        ),
    },
)
def sdk_blocking_baseline() -> None:
    @task
    def rows(params: dict[str, Any]) -> list[dict[str, Any]]:
        """The table's rows as dicts (missing cells as None)."""
        import pandas as pd  # not at parse time

        url = params["input_table"]
        frame = pd.read_parquet(url) if url.endswith(".parquet") else pd.read_csv(url)
        return frame.astype(object).where(frame.notna(), None).to_dict(orient="records")

    # A refused submit (429 at 5 submits/s) raises in the SDK; a retry sends the row again, as a user's
    # retry would. The benchmark counts submits per row, so a double submit would show.
    @task(pool=DASHSCOPE_POOL, retries=3, retry_delay=timedelta(seconds=2))
    def call(row: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        """Submit the row with the SDK and block until its task ends; returns the task id, status, and
        how long the call blocked (the benchmark splits the slot's time into the call and around it)."""
        import json
        import time
        from http import HTTPStatus

        import dashscope
        from airflow.sdk import BaseHook

        connection = BaseHook.get_connection(params["dashscope_conn_id"])
        dashscope.base_http_api_url = f"{(connection.host or '').rstrip('/')}/api/v1"
        extra_input: dict[str, Any] = {
            "image_url": row["image_url"],
            "face_bbox": json.loads(row["face_bbox"]),
            "ext_bbox": json.loads(row["ext_bbox"]),
        }
        parameters: dict[str, Any] = {}
        if row["model"] == "emoji-v1":
            extra_input["driven_id"] = row["driven_id"]
        elif row.get("style_level"):
            parameters["style_level"] = row["style_level"]
        started = time.monotonic()
        response = dashscope.VideoSynthesis.call(
            model=row["model"],
            task="image2video",
            extra_input=extra_input,
            audio_url=row.get("audio_url"),
            api_key=connection.password,
            **parameters,
        )
        call_seconds = time.monotonic() - started
        if response.status_code != HTTPStatus.OK or response.output is None:
            raise RuntimeError(f"row {row['row_id']}: HTTP {response.status_code} {response.code}: {response.message}")
        print(f"row {row['row_id']}: task {response.output.task_id} {response.output.task_status}")
        return {
            "task_id": response.output.task_id,
            "status": response.output.task_status,
            "call_seconds": round(call_seconds, 3),
        }

    call.expand(row=rows())


sdk_blocking_baseline()
