"""Reading the input table and deciding, per row, what this run does with it.

A row is *generated* (submitted, or waited on if a task is already in flight), *skipped* (already
generated under the same ``output_root``, a dry run, or the budget), or *failed*
before any spend (invalid, its media refused by the pre-flight checks, or a state that
:func:`talking_heads.row.decide.plan_row` says must not be generated again).
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pandas as pd

from talking_heads.progress import Progress
from talking_heads.reporting.costs import cost_of, load_prices
from talking_heads.row.decide import plan_row
from talking_heads.row.ledger import RowLedger
from talking_heads.row.media import MediaSigner, local_media_problem, private_address_problem
from talking_heads.row.payloads import PlanEntry, WorkItem
from talking_heads.row.states import OutcomeCode
from talking_heads.storage import as_storage_path
from talking_heads.table.preflight import MediaCheck, check_media, media_problem
from talking_heads.table.validation import KNOWN_COLUMNS, REQUIRED_COLUMNS, validate_frame


class InputTableError(ValueError):
    """The input table as a whole cannot be used (missing, unreadable, wrong columns)."""


def read_input_table(url: str, conn_id: str | None = None) -> pd.DataFrame:
    """Read a ``.csv`` or ``.parquet`` table from a path or any fsspec URL."""
    frame = _read(url, conn_id)
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise InputTableError(f"input table {url}: required column(s) missing: {', '.join(missing)}")
    return frame


def _read(url: str, conn_id: str | None) -> pd.DataFrame:
    path = as_storage_path(url, conn_id)
    suffix = path.name.lower()
    try:
        with path.open("rb") as handle:
            if suffix.endswith((".parquet", ".pq")):
                return pd.read_parquet(handle)
            if suffix.endswith((".csv", ".csv.gz")):
                # Keep ids and URLs as text; bboxes arrive as JSON strings and are parsed by validation.
                return pd.read_csv(
                    handle,
                    dtype=str,
                    keep_default_na=False,
                    na_values=[""],
                    compression="gzip" if suffix.endswith(".gz") else None,
                )
    except FileNotFoundError:
        raise InputTableError(f"input table {url}: not found") from None
    except Exception as error:
        raise InputTableError(f"input table {url}: cannot be read ({type(error).__name__}: {error})") from None
    raise InputTableError(f"input table {url}: unsupported format; use a .csv or .parquet file")


def _json_safe_records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    # pandas' JSON writer turns NaN into null and numpy scalars into plain numbers, as XCom needs.
    return json.loads(frame.to_json(orient="records", date_format="iso")) if len(frame) else []


def plan_run(
    frame: pd.DataFrame,
    ledger: RowLedger,
    *,
    dry_run: bool = False,
    resubmit_uncertain: bool = False,
    preflight: bool = False,
    max_cost_usd: float | None = None,
    public_service: bool = False,
    storage_conn_id: str | None = None,
) -> list[PlanEntry]:
    """One :class:`PlanEntry` per input row, in table order.

    With ``preflight``, the media of rows to generate are checked first (see :mod:`preflight`); with
    ``max_cost_usd``, rows are admitted in table order while the estimated total stays within it. With
    ``public_service`` (the connection is the real service), media on private addresses are refused.
    """
    try:
        valid, rejected = validate_frame(frame)
    except ValueError as error:
        raise InputTableError(str(error)) from None
    records = _json_safe_records(frame)
    extras = [{k: v for k, v in r.items() if k not in KNOWN_COLUMNS} for r in records]
    entries: dict[int, PlanEntry] = {}
    for rejection in rejected:
        outcome = {"status": "failed", "code": OutcomeCode.INVALID_INPUT, "message": rejection.message}
        model = records[rejection.index].get("model")
        entries[rejection.index] = PlanEntry(rejection.row_id, model, "done", outcome=outcome)
    states = ledger.get_many([request.row_id for _, request in valid])
    progress = Progress("plan: rows decided", len(valid))
    for index, request in valid:
        progress.step()
        problem = local_media_problem(request, ledger.layout.root) or (
            private_address_problem(request) if public_service else None
        )
        if problem:
            message = f"row {index} (row_id {request.row_id!r}): {problem}"
            outcome = {"status": "failed", "code": OutcomeCode.INVALID_INPUT, "message": message}
            entries[index] = PlanEntry(request.row_id, request.model, "done", outcome=outcome)
            continue
        outcome = plan_row(states.get(request.row_id), resubmit_uncertain=resubmit_uncertain)
        if outcome is None:
            entries[index] = PlanEntry(request.row_id, request.model, "generate", request=request)
        else:
            entries[index] = PlanEntry(request.row_id, request.model, "done", outcome=outcome)
    progress.finish()
    signer = MediaSigner(ledger.layout, storage_conn_id)
    _admit(entries, preflight=preflight, max_cost_usd=max_cost_usd, dry_run=dry_run, signer=signer)
    return [replace(entries[i], columns=extras[i]) for i in range(len(records))]


def assign_connections(entries: list[PlanEntry], conn_ids: list[str]) -> list[WorkItem]:
    """The rows to generate, spread over the connections (one API key each), round robin in table order.

    The service runs one task at a time per key, so this is what lets k keys work in parallel. Only new
    submissions follow it: a row whose task is already in flight keeps the key recorded in its ledger.
    """
    unique = list(dict.fromkeys(c.strip() for c in conn_ids if c and c.strip()))
    if not unique:
        raise ValueError("at least one DashScope connection id is needed")
    rows = [e for e in entries if e.plan == "generate" and e.request is not None]
    return [
        WorkItem(entry.request, unique[i % len(unique)], entry.audio_seconds)  # type: ignore[arg-type]
        for i, entry in enumerate(rows)
    ]


def _admit(
    entries: dict[int, PlanEntry], *, preflight: bool, max_cost_usd: float | None, dry_run: bool, signer: MediaSigner
) -> None:
    """Pre-flight checks, cost estimates, the budget cap and dry runs, over the rows to generate."""
    to_generate = [i for i in sorted(entries) if entries[i].request is not None]
    needs_audio = preflight or max_cost_usd is not None or dry_run
    checks: dict[str, MediaCheck] = {}
    if needs_audio and to_generate:
        checks = check_media(
            [entries[i].request for i in to_generate],  # type: ignore[misc]
            images=preflight,
            signer=signer,
        )
    prices = load_prices()
    committed = 0.0
    for i in to_generate:
        entry = entries[i]
        request = entry.request
        assert request is not None
        problem = media_problem(request, checks) if preflight else None
        if problem:
            message = f"row {i} (row_id {request.row_id!r}): {problem}"
            entries[i] = entry.settle({"status": "failed", "code": OutcomeCode.PREFLIGHT, "message": message})
            continue
        seconds = checks[request.audio_url].seconds if request.audio_url in checks else None
        estimate = cost_of(request.model, request.expected_ratio, seconds, prices).usd
        entry = entries[i] = replace(entry, estimated_cost_usd=estimate, audio_seconds=seconds)
        if dry_run:
            shown = "unknown" if estimate is None else f"USD {estimate:.4f}"
            entries[i] = entry.settle({"status": "skipped", "message": f"dry run: would submit ({shown})"})
        elif max_cost_usd is not None and estimate is not None and committed + estimate > max_cost_usd + 1e-9:
            message = (
                f"budget: estimated USD {estimate:.4f} would pass max_cost_usd {max_cost_usd:g} "
                f"(USD {committed:.4f} already committed in this run)"
            )
            entries[i] = entry.settle({"status": "skipped", "message": message})
        else:
            committed += estimate or 0.0
