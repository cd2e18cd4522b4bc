"""The bodies of ``talking_heads``' Python tasks; the DAG file only wires them.

``plan_rows`` reads the table and settles every row it can before any spend; ``record_outcomes`` writes
the run's outcome table from the plan and the ledger. pandas is imported here, not at DAG parse time.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from airflow.configuration import conf
from airflow.sdk import Asset, BaseHook, Context
from airflow.sdk.exceptions import AirflowFailException, AirflowNotFoundException
from dashscope_provider.connection import base_url_from_connection

from talking_heads.ledger import RowLedger
from talking_heads.media import resolve_relative, service_is_public
from talking_heads.outcomes import build_outcomes, summarize, write_outcomes
from talking_heads.payloads import PlanEntry
from talking_heads.plan import InputTableError, assign_connections, cap_generation, plan_run, read_input_table
from talking_heads.run_summary import notify, set_run_note, summary_line
from talking_heads.storage import plain_url


def plan_rows(context: Context) -> list[dict[str, Any]]:
    """Read and validate the table, decide per row, keep the plan under ``runs/{run}/plan.json``.

    Returns the work items (one per row to generate, spread over the run's connections) for the
    mapped generate steps; at most Airflow's ``max_map_length`` of them (the rest end ``skipped``).
    """
    params, run_id = context["params"], context["run_id"]
    # The param may itself be a template (s3://bucket/{{ ds }}.csv): Jinja renders one level, so the
    # value is rendered again here, with the run's context, for scheduled runs and backfills.
    table_url = context["task"].render_template(params["input_table"], context)
    storage = params["storage_conn_id"]
    ledger = RowLedger(params["output_root"], storage)
    try:
        frame = resolve_relative(read_input_table(table_url, storage), table_url)
    except InputTableError as error:
        raise AirflowFailException(str(error)) from None  # the same table fails the same way on retry
    conn_ids = [params["dashscope_conn_id"], *(params["extra_dashscope_conn_ids"] or [])]
    entries = plan_run(
        frame,
        ledger,
        dry_run=bool(params["dry_run"]),
        resubmit_uncertain=bool(params["resubmit_uncertain"]),
        preflight=bool(params["preflight_checks"]),
        max_cost_usd=params["max_cost_usd"],
        public_service=any(_is_public(conn_id) for conn_id in conn_ids if conn_id),
        storage_conn_id=storage,
    )
    cap_generation(entries, conf.getint("core", "max_map_length"))
    plan_path = ledger.layout.plan(run_id)
    plan_path.parent.mkdir(parents=True, exist_ok=True)
    plan_path.write_text(json.dumps({"input_table": table_url, "rows": [e.to_dict() for e in entries]}))
    work = assign_connections(entries, conn_ids)
    print(
        f"Planned {len(entries)} rows from {table_url}: {len(work)} to generate, "
        f"{len(entries) - len(work)} settled before any spend"
    )
    return [item.to_dict() for item in work]


def _is_public(conn_id: str) -> bool:
    """Whether the connection points at the real service, which fetches media from the internet."""
    try:
        connection = BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        return False  # the submit step reports the missing connection, naming it
    return service_is_public(base_url_from_connection(connection))


def record_outcomes(context: Context, assets: Iterable[Asset] = ()) -> dict[str, Any]:
    """Write one outcome line per input row, whatever happened to its tasks; return the run's summary.

    Each of ``assets`` (the task's outlets) gets an event whose ``extra`` says where this run's outputs are.
    """
    params, run_id = context["params"], context["run_id"]
    ledger = RowLedger(params["output_root"], params["storage_conn_id"])
    plan_doc = json.loads(ledger.layout.plan(run_id).read_text())
    frame = build_outcomes([PlanEntry.from_dict(row) for row in plan_doc["rows"]], ledger, run_id)
    written = write_outcomes(frame, ledger.layout, run_id)
    summary = summarize(frame, ledger.layout, written["csv"])
    # Written by the dashscope_cost_report DAG, which this task's outlets (the outcomes Asset) start.
    summary["report"] = plain_url(ledger.layout.root / "reports" / "cost_report.html")
    for asset in assets:
        context["outlet_events"][asset].extra = {
            "output_root": params["output_root"],
            "run_id": run_id,
            "storage_conn_id": params["storage_conn_id"],
        }
    print("OUTCOME SUMMARY " + json.dumps(summary))
    line = summary_line(summary)
    print(f"RUN NOTE {line}")
    set_run_note(context["dag"].dag_id, run_id, line)
    if params.get("notify_email"):
        notify(context, summary, params["notify_email"])
    return summary
