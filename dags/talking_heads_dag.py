"""``talking_heads``: a table of portraits and voice clips -> talking-head videos, every row accounted for.

    plan (read table, validate, consult the ledger)
      -> generate[row] (mapped task group: submit -> wait (deferred, ended by the trigger) -> download;
         with TALKING_HEADS_ROWS_PER_TASK=k > 1, mapped over chunks of k rows instead)
      -> record_outcomes (one line per input row, whatever happened)
    plan -> continue_run (a table over [core] max_map_length rows: the rest in follow-up runs)

Rows are the unit of money: each one's progress is kept under ``{output_root}/state/`` so retries,
reruns, clears and backfills never pay twice for a row (see ``talking_heads.row``).
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import pendulum
from airflow.sdk import Param, TriggerRule, dag, get_current_context, task, task_group
from talking_heads.orchestration.assets import INPUT_TABLE, OUTCOMES, VIDEOS
from talking_heads.orchestration.chunks import (
    DownloadChunkOperator,
    SubmitChunkOperator,
    WaitChunkOperator,
    chunk_label,
    chunk_rows,
    rows_per_task,
)
from talking_heads.orchestration.operators import (
    ContinueRunOperator,
    DownloadRowOperator,
    RecordOutcomesOperator,
    SubmitRowOperator,
    WaitRowOperator,
)
from talking_heads.row.media import DEFAULT_MEDIA_URL_TTL_SECONDS

REPO_ROOT = Path(__file__).resolve().parents[1]
SAMPLE_TABLE = str(REPO_ROOT / "include" / "sample" / "talking_heads_sample.csv")
DEFAULT_OUTPUT_ROOT = os.environ.get("TALKING_HEADS_OUTPUT_ROOT", str(REPO_ROOT / "output"))

#: The pool that bounds DashScope tasks in flight: create it with ``--include-deferred`` so waiting tasks
#: hold their slot (``airflow pools set dashscope 4 "..." --include-deferred``). Without it, the
#: default pool applies and nothing bounds the service-side queue.
DASHSCOPE_POOL = os.environ.get("TALKING_HEADS_POOL", "default_pool")
#: Waits outrank submits for pool slots, so a slot freed by a finished task goes to a task already
#: paid for before a new one is submitted.
WAIT_PRIORITY = 1000

#: First pause before a failed task is tried again (doubling per try); a deployment may shorten it.
RETRY_DELAY = timedelta(seconds=float(os.environ.get("TALKING_HEADS_RETRY_DELAY_SECONDS", "30")))

OUTPUT_ROOT = "{{ params.output_root }}"
CONN_ID = "{{ params.dashscope_conn_id }}"
STORAGE_CONN_ID = "{{ params.storage_conn_id or '' }}"

#: Rows per submit/wait/download task instance (``TALKING_HEADS_ROWS_PER_TASK``, see
#: :mod:`talking_heads.orchestration.chunks`): 1 maps the generate group per row; k > 1 per chunk of k rows.
ROWS_PER_TASK = rows_per_task()


def plan_settings(params: Any) -> Any:
    """The plan step's settings from this DAG's params (the only place that knows their names)."""
    from talking_heads.orchestration.task_bodies import PlanSettings

    return PlanSettings(
        input_table=params["input_table"],
        output_root=params["output_root"],
        storage_conn_id=params["storage_conn_id"],
        conn_ids=[params["dashscope_conn_id"], *(params["extra_dashscope_conn_ids"] or [])],
        dry_run=bool(params["dry_run"]),
        resubmit_uncertain=bool(params["resubmit_uncertain"]),
        preflight=bool(params["preflight_checks"]),
        max_cost_usd=params["max_cost_usd"],
    )


@task(inlets=[INPUT_TABLE])
def plan() -> list[Any]:
    """Read and validate the table; decide per row: generate, skip, or fail before any spend.

    Returns the rows to generate, or with ``ROWS_PER_TASK`` > 1 those rows in chunks."""
    from talking_heads.orchestration.task_bodies import plan_rows  # pandas: not at parse time

    context = get_current_context()
    work = plan_rows(context, plan_settings(context["params"]))
    return work if ROWS_PER_TASK == 1 else chunk_rows(work, ROWS_PER_TASK)


@task_group(group_id="generate")
def generate(row: dict[str, Any]) -> None:
    """One row: submit -> wait (deferred; the trigger ends it) -> download."""
    submit = SubmitRowOperator(
        task_id="submit",
        row=row,
        map_index_template="{{ task.row.row_id }}",  # the grid lists each row by its row_id
        output_root=OUTPUT_ROOT,
        dashscope_conn_id=CONN_ID,
        resubmit_uncertain="{{ params.resubmit_uncertain }}",
        media_url_ttl="{{ params.media_url_ttl_seconds }}",
        pool=DASHSCOPE_POOL,
        storage_conn_id=STORAGE_CONN_ID,
    )
    wait = WaitRowOperator(
        task_id="wait",
        submission=submit.output,
        map_index_template="{{ task.submission.row_id }}",
        output_root=OUTPUT_ROOT,
        dashscope_conn_id=CONN_ID,
        storage_conn_id=STORAGE_CONN_ID,
        poll_interval="{{ params.poll_interval_seconds }}",
        deferrable=True,
        timeout=timedelta(hours=23).total_seconds(),
        pool=DASHSCOPE_POOL,
        priority_weight=WAIT_PRIORITY,
        weight_rule="absolute",
    )
    DownloadRowOperator(
        task_id="download",
        result=wait.output,
        map_index_template="{{ task.result.row_id }}",
        output_root=OUTPUT_ROOT,
        storage_conn_id=STORAGE_CONN_ID,
    )


@task_group(group_id="generate")
def generate_chunk(rows: list[dict[str, Any]]) -> None:
    """The same three steps, each over a chunk of rows (talking_heads.orchestration.chunks)."""
    submit = SubmitChunkOperator(
        task_id="submit",
        rows=rows,
        map_index_template=chunk_label("rows", "no rows"),  # the grid lists each chunk by its rows' ids
        output_root=OUTPUT_ROOT,
        dashscope_conn_id=CONN_ID,
        resubmit_uncertain="{{ params.resubmit_uncertain }}",
        media_url_ttl="{{ params.media_url_ttl_seconds }}",
        pool=DASHSCOPE_POOL,
        storage_conn_id=STORAGE_CONN_ID,
    )
    wait = WaitChunkOperator(
        task_id="wait",
        submissions=submit.output,
        map_index_template=chunk_label("submissions", "no row sent"),
        output_root=OUTPUT_ROOT,
        dashscope_conn_id=CONN_ID,
        storage_conn_id=STORAGE_CONN_ID,
        poll_interval="{{ params.poll_interval_seconds }}",
        timeout=timedelta(hours=23).total_seconds(),
        pool=DASHSCOPE_POOL,
        priority_weight=WAIT_PRIORITY,
        weight_rule="absolute",
    )
    DownloadChunkOperator(
        task_id="download",
        results=wait.output,
        map_index_template=chunk_label("results", "no video to store"),
        output_root=OUTPUT_ROOT,
        storage_conn_id=STORAGE_CONN_ID,
    )


@dag(
    dag_id="talking_heads",
    description="Portraits + voice clips -> DashScope talking-head videos, with per-row outcomes and usage",
    schedule="@daily",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 2, "retry_delay": RETRY_DELAY, "retry_exponential_backoff": True},
    tags=["dashscope", "video"],
    params={
        "input_table": Param(
            SAMPLE_TABLE,
            type="string",
            title="Input table",
            description="Path or fsspec URL of a .csv or .parquet table (may be a template, e.g. "
            "s3://bucket/inputs/{{ ds }}.csv).",
        ),
        "output_root": Param(
            DEFAULT_OUTPUT_ROOT,
            type="string",
            title="Output root",
            description="fsspec URL (file://, s3://, oss://, ...) where videos/, outcomes/ and state/ go.",
        ),
        "dashscope_conn_id": Param(
            "dashscope_default",
            type="string",
            title="DashScope connection",
            description="Connection of type dashscope: host = base URL, password = API key.",
        ),
        "extra_dashscope_conn_ids": Param(
            [],
            type=["null", "array"],  # optional: without "null" the form marks it required
            items={"type": "string"},
            title="More DashScope connections",
            description="Further connections, one API key each, to spread the rows over together with "
            "dashscope_conn_id. The service runs one task at a time per Alibaba Cloud account (all its keys "
            "together), so only keys of k different accounts give up to k times the throughput; name the "
            "account in each connection's extra 'account'. A row in flight keeps the key it was submitted with.",
        ),
        "storage_conn_id": Param(
            None,
            type=["null", "string"],
            title="Storage connection",
            description="Airflow connection for the object store of input_table and output_root (e.g. "
            "aws_default for s3://); empty: the store's own default credentials.",
        ),
        "max_cost_usd": Param(
            None,
            type=["null", "number"],
            minimum=0,
            title="Budget cap (USD)",
            description="Refuse to submit rows whose estimated cost would pass this cap.",
        ),
        "dry_run": Param(
            False,
            type="boolean",
            title="Dry run",
            description="Validate and estimate only; submit nothing.",
        ),
        "resubmit_uncertain": Param(
            False,
            type="boolean",
            title="Resubmit uncertain rows",
            description="Submit again rows whose earlier submission answer was lost. A task may already "
            "exist for them, so this can pay twice: only after checking the console.",
        ),
        "preflight_checks": Param(
            True,
            type="boolean",
            title="Pre-flight media checks",
            description="Fetch each image's header and each voice clip before submitting, to fail rows the "
            "service would refuse (format, 400..7000 px, WAV/MP3 <= 15 MB and 60 s). Turn off "
            "for stores that refuse range requests.",
        ),
        "media_url_ttl_seconds": Param(
            DEFAULT_MEDIA_URL_TTL_SECONDS,
            type="integer",
            minimum=60,
            maximum=7 * 24 * 3600,
            title="Presigned media URL lifetime (s)",
            description="How long the presigned URLs of s3://, oss:// and local media stay valid. They are made "
            "just before each call; the service fetches the media when the task leaves the account's queue, "
            "so the default (24 h) covers a long queue. S3 allows at most 7 days.",
        ),
        "poll_interval_seconds": Param(
            15,
            type="number",
            minimum=0.1,
            title="Poll interval (s)",
            description="Seconds between status queries of one task (the reference suggests 15).",
        ),
        "fail_run_on_row_failures": Param(
            False,
            type="boolean",
            title="Fail the run when rows fail",
            description="Mark the run failed when any row ended failed (after its outcome table, note and mail "
            "are written), so it shows where operators look. Off: a scheduled table with a few refused rows "
            "still ends success, and the note and the outcome table carry the counts.",
        ),
        "notify_email": Param(
            None,
            type=["null", "string"],
            title="Mail the summary to",
            description="Comma-separated addresses that get the run's one-line summary when it ends, through "
            "the SMTP connection ([email] email_conn_id, smtp_default). Empty: no mail.",
        ),
    },
    render_template_as_native_obj=False,
    doc_md=__doc__,
)
def talking_heads() -> None:
    planned = plan()
    generated = generate.expand(row=planned) if ROWS_PER_TASK == 1 else generate_chunk.expand(rows=planned)
    # One outcome line per input row, whatever happened to its tasks; the run's note; links to the results.
    outcomes = RecordOutcomesOperator(
        task_id="record_outcomes",
        trigger_rule=TriggerRule.ALL_DONE,
        outlets=[OUTCOMES, VIDEOS],
        output_root=OUTPUT_ROOT,
        storage_conn_id=STORAGE_CONN_ID,
        notify_email="{{ params.notify_email or '' }}",
        fail_run_on_row_failures="{{ params.fail_run_on_row_failures }}",
    )
    generated >> outcomes
    planned >> outcomes
    # A table larger than one run maps ([core] max_map_length rows): the rest in follow-up runs of this
    # trigger, queued behind this one by max_active_runs=1 (talking_heads.table.continuation).
    planned >> ContinueRunOperator(task_id="continue_run", output_root=OUTPUT_ROOT, storage_conn_id=STORAGE_CONN_ID)


talking_heads()
