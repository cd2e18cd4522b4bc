"""The bodies of ``talking_heads``' Python tasks; the DAG file only wires them.

``plan_rows`` reads the table and settles every row it can before any spend; ``record_outcomes`` writes
the run's outcome table from the plan and the ledger. pandas is imported here, not at DAG parse time.
Neither reads the DAG's params: the DAG file maps its form to :class:`PlanSettings` and explicit arguments.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from airflow.configuration import conf
from airflow.sdk import Asset, BaseHook, Context
from dashscope_provider.compat import AirflowFailException, AirflowNotFoundException
from dashscope_provider.connection import account_from_connection, base_url_from_connection

from talking_heads.reporting.outcome_table import build_outcomes, summarize, write_outcomes
from talking_heads.reporting.run_summary import notify, set_run_note, summary_line
from talking_heads.row.ledger import RowLedger
from talking_heads.row.media import resolve_relative, service_is_public
from talking_heads.row.payloads import PlanEntry
from talking_heads.storage import plain_url
from talking_heads.table.continuation import (
    CONF_KEY,
    Part,
    own_entries,
    rows_per_run,
    split_first,
    split_next,
)
from talking_heads.table.plan import InputTableError, assign_connections, plan_run, read_input_table

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PlanSettings:
    """What the plan step is asked to do (the DAG file fills it from its params).

    :param input_table: the table's URL; may itself be a template (``s3://bucket/{{ ds }}.csv``).
    :param conn_ids: the run's DashScope connections, the default first.
    """

    input_table: str
    output_root: str
    storage_conn_id: str | None = None
    conn_ids: list[str] = field(default_factory=lambda: ["dashscope_default"])
    dry_run: bool = False
    resubmit_uncertain: bool = False
    preflight: bool = True
    max_cost_usd: float | None = None


def plan_rows(context: Context, settings: PlanSettings) -> list[dict[str, Any]]:
    """Read and validate the table, decide per row, keep the plan under ``runs/{run}/plan.json``.

    Returns the work items (one per row to generate, spread over the run's connections) for the
    mapped generate steps: at most Airflow's ``max_map_length`` of them, and at most
    :func:`~talking_heads.table.continuation.rows_per_run` (a deployment's bound). The rest of a larger table is
    deferred to follow-up runs of this trigger (see :mod:`talking_heads.table.continuation`); a follow-up run
    (``dag_run.conf`` carries :data:`~talking_heads.table.continuation.CONF_KEY`) takes its rows from the
    previous part's plan instead of reading the table again.
    """
    run_id, storage, conn_ids = context["run_id"], settings.storage_conn_id, settings.conn_ids
    ledger = RowLedger(settings.output_root, storage)
    by_account = accounts_of(conn_ids)  # each connection looked up once, for the log and the bound
    log_shared_accounts(conn_ids, by_account=by_account)
    limit = rows_per_run(conf.getint("core", "max_map_length"), len(by_account))
    continues = ((context.get("dag_run") and context["dag_run"].conf) or {}).get(CONF_KEY)
    if continues:
        previous = json.loads(ledger.layout.plan(str(continues["run_id"])).read_text())
        table_url = previous["input_table"]
        entries, part = split_next(previous, limit)
    else:
        # The param may itself be a template (s3://bucket/{{ ds }}.csv): Jinja renders one level, so the
        # value is rendered again here, with the run's context, for scheduled runs and backfills.
        table_url = context["task"].render_template(settings.input_table, context)
        try:
            frame = resolve_relative(read_input_table(table_url, storage), table_url)
        except InputTableError as error:
            raise AirflowFailException(str(error)) from None  # the same table fails the same way on retry
        entries = plan_run(
            frame,
            ledger,
            dry_run=settings.dry_run,
            resubmit_uncertain=settings.resubmit_uncertain,
            preflight=settings.preflight,
            max_cost_usd=settings.max_cost_usd,
            public_service=any(_is_public(conn_id) for conn_id in conn_ids if conn_id),
            storage_conn_id=storage,
        )
        entries, part = split_first(entries, limit, run_id)
    plan_path = ledger.layout.plan(run_id)
    plan_path.parent.mkdir(parents=True, exist_ok=True)
    document = {"input_table": table_url, "rows": [e.to_dict() for e in entries], "continuation": part.to_dict()}
    plan_path.write_text(json.dumps(document))
    work = assign_connections(own_entries(entries, part), conn_ids)
    log.info(
        "Planned %d rows from %s: %d to generate in this run, %d in follow-up runs, %d settled before any "
        "spend or in earlier parts%s",
        len(entries),
        table_url,
        len(work),
        len(part.later),
        len(entries) - len(work) - len(part.later),
        f" ({part.note()})" if part.note() else "",
    )
    return [item.to_dict() for item in work]


def accounts_of(conn_ids: list[str]) -> dict[str, list[str]]:
    """Alibaba Cloud account -> the run's connection ids of it (a connection that does not resolve is left out)."""
    by_account: dict[str, list[str]] = {}
    for conn_id in dict.fromkeys(c.strip() for c in conn_ids if c and c.strip()):
        try:
            account = account_from_connection(BaseHook.get_connection(conn_id))
        except Exception:
            continue
        by_account.setdefault(account, []).append(conn_id)
    return by_account


def log_shared_accounts(
    conn_ids: list[str],
    say: Callable[[str], None] = log.info,
    by_account: dict[str, list[str]] | None = None,
) -> dict[str, list[str]]:
    """Say which of the run's connections share an Alibaba Cloud account (they add no parallelism).

    The service's limits and its one-task-at-a-time rule count per account (connection extra
    ``account``, else the key's fingerprint: see :func:`dashscope_provider.connection.account_from_connection`),
    so rows spread over two connections of one account run no faster than on one. Returns account ->
    connection ids, for the accounts with more than one. ``by_account``: :func:`accounts_of` already
    computed by the caller.
    """
    by_account = accounts_of(conn_ids) if by_account is None else by_account
    shared = {account: ids for account, ids in by_account.items() if len(ids) > 1}
    for account, ids in shared.items():
        say(
            f"Connections {', '.join(ids)} belong to one Alibaba Cloud account ({account}): the service's "
            "rate limits and its one running task at a time count per account, so together they add no "
            "parallelism over one of them"
        )
    if len(by_account) > 1 or shared:
        say(f"Rows are spread over {len(conn_ids)} connections of {len(by_account)} account(s)")
    return shared


def _is_public(conn_id: str) -> bool:
    """Whether the connection points at the real service, which fetches media from the internet."""
    try:
        connection = BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        return False  # the submit step reports the missing connection, naming it
    return service_is_public(base_url_from_connection(connection))


def record_outcomes(
    context: Context,
    *,
    output_root: str,
    storage_conn_id: str | None = None,
    notify_email: str | None = None,
    assets: Iterable[Asset] = (),
) -> dict[str, Any]:
    """Write one outcome line per input row, whatever happened to its tasks; return the run's summary.

    Each of ``assets`` (the task's outlets) gets an event whose ``extra`` says where this run's outputs are;
    the summary is mailed to ``notify_email`` when given.
    """
    run_id = context["run_id"]
    ledger = RowLedger(output_root, storage_conn_id)
    plan_doc = json.loads(ledger.layout.plan(run_id).read_text())
    frame = build_outcomes([PlanEntry.from_dict(row) for row in plan_doc["rows"]], ledger, run_id)
    written = write_outcomes(frame, ledger.layout, run_id)
    summary = summarize(frame, ledger.layout, written["csv"])
    # Written by the dashscope_cost_report DAG, which this task's outlets (the outcomes Asset) start.
    summary["report"] = plain_url(ledger.layout.root / "reports" / "cost_report.html")
    for asset in assets:
        context["outlet_events"][asset].extra = {
            "output_root": output_root,
            "run_id": run_id,
            "storage_conn_id": storage_conn_id,
        }
    log.info("OUTCOME SUMMARY %s", json.dumps(summary))
    line = summary_line(summary)
    if note := Part.from_dict(plan_doc.get("continuation") or {}).note():
        line = f"{line} · {note}"
    log.info("RUN NOTE %s", line)
    set_run_note(context["dag"].dag_id, run_id, line)
    if notify_email:
        notify(context, summary, notify_email)
    return summary
