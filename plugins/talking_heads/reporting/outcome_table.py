"""The outcome table: one line per input row, whatever happened to it.

It joins the run's plan (rejected and skipped rows, the original columns) with the ledger (what
happened to each submitted row) and writes ``outcomes/{run}.csv`` and ``.parquet``.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from talking_heads.reporting.costs import cost_of, load_prices
from talking_heads.row.ledger import RowLedger
from talking_heads.row.outcome import outcome_of
from talking_heads.row.payloads import PlanEntry
from talking_heads.storage import OutputLayout, plain_url

#: The contract's columns, in order; the input's extra columns follow them.
OUTCOME_COLUMNS = [
    "row_id",
    "model",
    "status",
    "task_id",
    "code",
    "message",
    "video_uri",
    "video_duration",
    "video_ratio",
    "cost_usd",
    "cost_cny",
    "estimated_cost_usd",
    "video_bytes",
    "video_sha256",
    "run_id",
    "dashscope_conn_id",
    "detection_model",
    "detection_images",
    "detection_cost_cny",
]


def build_outcomes(plan: list[PlanEntry], ledger: RowLedger, run_id: str) -> pd.DataFrame:
    """One outcome line per planned row, in input order, extra input columns carried through.

    A row settled by the plan keeps the plan's outcome; a row handed to the generate steps gets the
    outcome of its final ledger state (:func:`talking_heads.row.outcome.outcome_of`).
    """
    prices = load_prices()
    lines = []
    throttled = 0
    for entry in plan:
        line: dict[str, Any] = {
            "row_id": entry.row_id,
            "model": entry.model,
            "run_id": run_id,
            "estimated_cost_usd": entry.estimated_cost_usd,
        }
        if entry.plan == "generate":
            state = ledger.get(entry.row_id or "")
            throttled += state.throttled if state is not None else 0
            line.update(outcome_of(state, run_id))
        else:
            line.update(entry.outcome or {})
        if line.get("code") is not None:
            line["code"] = str(line["code"])
        if line.get("status") != "skipped" and line.get("video_duration") is not None:
            cost = cost_of(line["model"], line.get("video_ratio"), line["video_duration"], prices)
            line["cost_usd"], line["cost_cny"] = cost.usd, cost.cny
        if line.get("detection_images"):
            line["detection_cost_cny"] = cost_of(line["detection_model"], "image", line["detection_images"], prices).cny
        extras = {k: v for k, v in entry.columns.items() if k not in line}
        lines.append({**line, **extras})
    frame = pd.DataFrame(lines)
    for column in OUTCOME_COLUMNS:
        if column not in frame.columns:
            frame[column] = None
    ordered = OUTCOME_COLUMNS + [c for c in frame.columns if c not in OUTCOME_COLUMNS]
    frame = frame[ordered]
    # Run-wide, not a column: the 429 answers the submit steps waited out (pacing in other processes).
    frame.attrs["throttled"] = throttled
    return frame


def write_outcomes(frame: pd.DataFrame, layout: OutputLayout, run_id: str) -> dict[str, str]:
    """Write the table as CSV and Parquet under ``outcomes/``; returns their URIs."""
    written = {}
    for suffix in ("csv", "parquet"):
        path = layout.outcomes(run_id, suffix)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as handle:
            if suffix == "csv":
                handle.write(frame.to_csv(index=False).encode())
            else:
                # Carried-through columns may mix types; Parquet needs one type per column.
                safe = frame.copy()
                for column in safe.columns:
                    if safe[column].dtype == object:
                        safe[column] = safe[column].map(lambda v: v if v is None else str(v))
                safe.to_parquet(handle, index=False)
        written[suffix] = plain_url(path)
    return written


def _present(value: Any) -> bool:
    """Whether a cell holds something (pandas reads an empty CSV cell back as ``nan``)."""
    return value is not None and not (isinstance(value, float) and pd.isna(value)) and str(value).strip() != ""


def outcome_detail(line: Any) -> str:
    """One outcome line for a person: the video of a succeeded row, else ``code: message`` with only the
    parts that are there (a skipped row has no code: never ``nan: ...``)."""
    if line.get("status") == "succeeded" and _present(line.get("video_uri")):
        return str(line["video_uri"])
    parts = [str(line.get(k)) for k in ("code", "message") if _present(line.get(k))]
    return ": ".join(parts)


def summarize(frame: pd.DataFrame, layout: OutputLayout, outcomes_uri: str) -> dict[str, Any]:
    """The run's one-line summary: rows per status, seconds and cost billed in this run, where things are."""
    counts = frame["status"].value_counts().to_dict()
    billed = frame[(frame["status"] != "skipped") & frame["video_duration"].notna()]
    return {
        "rows": len(frame),
        **{s: int(counts.get(s, 0)) for s in ("succeeded", "failed", "skipped")},
        "seconds": round(float(billed["video_duration"].astype(float).sum()), 2),
        "cost_usd": round(float(billed["cost_usd"].astype(float).fillna(0).sum()), 6),
        "cost_unknown_rows": int(billed["cost_usd"].isna().sum()),
        "throttled": int(frame.attrs.get("throttled", 0)),
        "videos": plain_url(layout.root / "videos"),
        "outcomes": outcomes_uri,
    }
