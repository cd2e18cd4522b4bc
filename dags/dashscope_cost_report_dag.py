"""``dashscope_cost_report``: per model and ``video_ratio``, what was generated and what it cost.

Reads every outcome table under an ``output_root`` and writes ``reports/`` there (CSV tables and one
self-contained HTML page with a chart). Runs after each ``talking_heads`` run (Asset schedule on its
outcomes, using the output root the run reported) and on demand.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pendulum
from airflow.sdk import Param, dag, get_current_context, task
from talking_heads.orchestration.assets import OUTCOMES

DEFAULT_OUTPUT_ROOT = os.environ.get("TALKING_HEADS_OUTPUT_ROOT", str(Path(__file__).resolve().parents[1] / "output"))


@dag(
    dag_id="dashscope_cost_report",
    description="Per-model, per-ratio usage and cost of talking_heads outputs, with a chart",
    schedule=[OUTCOMES],
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["dashscope", "costs"],
    params={
        "output_root": Param(
            DEFAULT_OUTPUT_ROOT,
            type="string",
            title="Output root",
            description="fsspec URL whose outcomes/ are read and where reports/ is written "
            "(when run by an asset event, the root that run wrote to).",
        ),
        "storage_conn_id": Param(
            None,
            type=["null", "string"],
            title="Storage connection",
            description="Airflow connection for the object store of output_root (e.g. aws_default).",
        ),
    },
    doc_md=__doc__,
)
def dashscope_cost_report() -> None:
    @task
    def report(params: dict[str, Any]) -> dict[str, Any]:
        from talking_heads.reporting.report import write_report  # pandas and matplotlib: kept out of DAG parsing

        context = get_current_context()
        roots = {
            (event.extra["output_root"], event.extra.get("storage_conn_id"))
            for events in context.get("triggering_asset_events", {}).values()
            for event in events
            if event.extra and event.extra.get("output_root")
        } or {(params["output_root"], params["storage_conn_id"])}
        results = [write_report(root, conn_id=conn_id) for root, conn_id in sorted(roots, key=str)]
        for result in results:
            print(
                f"Report written to {result['reports']}: {result['videos']} videos, "
                f"{result['seconds']:.2f} s, USD {result['cost_usd']:.4f}"
            )
        return {"reports": [r["reports"] for r in results]}

    report()


dashscope_cost_report()
