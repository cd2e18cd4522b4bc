"""The cost report: every outcome table under an ``output_root`` -> ``reports/`` (CSV + one HTML page).

Billed usage is counted once per DashScope task: a row generated in one run shows as ``skipped`` in
later runs and is not counted again; a row regenerated on purpose is a second task and is.
"""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from talking_heads.reporting.costs import FREE_QUOTA_IMAGES, FREE_QUOTA_SECONDS, Prices, cost_of, load_prices
from talking_heads.storage import as_storage_path, plain_url


@dataclass
class CostReport:
    """Aggregates of one ``output_root``; each frame is also written as a CSV under ``reports/``."""

    by_model_ratio: pd.DataFrame
    by_day: pd.DataFrame
    free_quota: pd.DataFrame
    failures: pd.DataFrame
    billed: pd.DataFrame
    #: Face detections, on a line of their own per model: images billed, CNY, the free quota.
    detections: pd.DataFrame = field(default_factory=pd.DataFrame)
    #: Lost submit answers: rows whose task was found in the task list (``reconciled``), and rows whose
    #: latest outcome is still ``SubmissionUncertain``, each with its candidate task ids.
    lost_answers: pd.DataFrame = field(default_factory=pd.DataFrame)
    uncertain: pd.DataFrame = field(default_factory=pd.DataFrame)


def read_outcomes(output_root: str, conn_id: str | None = None) -> pd.DataFrame:
    """All outcome tables under ``output_root/outcomes/`` (Parquet preferred, CSV when alone)."""
    folder = as_storage_path(output_root, conn_id) / "outcomes"
    if not folder.exists():
        return pd.DataFrame()
    files = {p.stem: p for p in folder.iterdir() if p.suffix == ".csv"}
    files |= {p.stem: p for p in folder.iterdir() if p.suffix == ".parquet"}
    frames = []
    for stem, path in sorted(files.items()):
        with path.open("rb") as handle:
            frame = pd.read_parquet(handle) if path.suffix == ".parquet" else pd.read_csv(handle)
        frames.append(frame.assign(outcome_file=stem))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _day_of(frame: pd.DataFrame) -> pd.Series:
    # Runs are named with their logical date (manual__2026-11-23T..., scheduled__..., backfill__...).
    text = (frame["run_id"] if "run_id" in frame else frame["outcome_file"]).astype(str)
    return text.str.extract(r"(\d{4}-\d{2}-\d{2})", expand=False).fillna("unknown")


def build_report(outcomes: pd.DataFrame, prices_json: str | None = None) -> CostReport:
    """Per model and ratio: videos, seconds billed, USD, CNY; per day; free quota; failures by code."""
    prices = load_prices(prices_json)
    empty = pd.DataFrame(columns=["model", "video_ratio", "videos", "seconds", "cost_usd", "cost_cny"])
    if outcomes.empty:
        return CostReport(empty, empty.assign(day=[]), pd.DataFrame(), pd.DataFrame(), outcomes)
    # Billed = every task the service reported usage for: stored videos, and results paid for but lost
    # (e.g. their URL expired). Later runs list a stored row as skipped; each task counts once.
    has_usage = outcomes["video_duration"].notna() if "video_duration" in outcomes else False
    billed = outcomes[(outcomes["status"] != "skipped") & has_usage].drop_duplicates("task_id").copy()
    billed["video_duration"] = billed["video_duration"].astype(float)
    costs = [
        cost_of(m, r, d, prices)
        for m, r, d in zip(billed["model"], billed["video_ratio"], billed["video_duration"], strict=True)
    ]
    billed["cost_usd"] = [c.usd for c in costs]
    billed["cost_cny"] = [c.cny for c in costs]
    billed["day"] = _day_of(billed)

    def aggregate(keys: list[str]) -> pd.DataFrame:
        grouped = billed.groupby(keys, dropna=False)
        table = grouped.agg(videos=("task_id", "count"), seconds=("video_duration", "sum")).reset_index()
        # min_count=1 keeps "no known price" as empty instead of 0.
        for column in ("cost_usd", "cost_cny"):
            table[column] = grouped[column].sum(min_count=1).values
        return table

    quota = []
    for model, seconds in billed.groupby("model")["video_duration"].sum().items():
        free = FREE_QUOTA_SECONDS.get(str(model))
        if free is not None:
            quota.append(
                {
                    "model": model,
                    "free_seconds": free,
                    "used_seconds": round(seconds, 3),
                    "left_seconds": round(max(free - seconds, 0.0), 3),
                }
            )
    failed = outcomes[outcomes["status"] == "failed"]
    failures = (
        failed.groupby(["model", "code"], dropna=False).size().reset_index(name="rows")
        if not failed.empty
        else pd.DataFrame(columns=["model", "code", "rows"])
    )
    return CostReport(
        aggregate(["model", "video_ratio"]),
        aggregate(["day", "model", "video_ratio"]),
        pd.DataFrame(quota),
        failures,
        billed,
        _detections(outcomes, prices),
        *_lost_answers(outcomes),
    )


UNCERTAIN_COLUMNS = ["row_id", "model", "dashscope_conn_id", "candidates", "run_id"]


def _lost_answers(outcomes: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Rows whose submit answer was lost: how many were reconciled (each task once), and the rows whose
    latest outcome is still uncertain, with the candidate tasks a person has to decide between."""
    flag = outcomes["reconciled"] if "reconciled" in outcomes else pd.Series(False, index=outcomes.index)
    adopted = outcomes[flag.astype(str).str.lower().eq("true") & (outcomes["status"] != "skipped")]
    latest = outcomes.drop_duplicates("row_id", keep="last")
    uncertain = latest[latest.get("code", pd.Series(index=latest.index, dtype=object)) == "SubmissionUncertain"]
    uncertain = uncertain.reindex(columns=UNCERTAIN_COLUMNS)
    counts = pd.DataFrame(
        [
            {"rows": "reconciled (task found in the task list)", "count": adopted["task_id"].nunique()},
            {"rows": "still uncertain (may be billed: see candidates)", "count": len(uncertain)},
        ]
    )
    return counts, uncertain.reset_index(drop=True)


DETECTION_COLUMNS = ["detection_model", "images", "cost_cny", "free_images", "left_free_images"]


def _detections(outcomes: pd.DataFrame, prices: Prices) -> pd.DataFrame:
    """Images billed per detection model (each counted once: in the run and row that paid it)."""
    if "detection_images" not in outcomes:
        return pd.DataFrame(columns=DETECTION_COLUMNS)
    paid = outcomes[pd.to_numeric(outcomes["detection_images"], errors="coerce").fillna(0) > 0]
    lines = []
    for model, images in paid.groupby("detection_model")["detection_images"].sum().items():
        count = int(images)
        free = FREE_QUOTA_IMAGES.get(str(model))
        lines.append(
            {
                "detection_model": model,
                "images": count,
                "cost_cny": cost_of(str(model), "image", count, prices).cny,
                "free_images": free,
                "left_free_images": None if free is None else max(free - count, 0),
            }
        )
    return pd.DataFrame(lines, columns=DETECTION_COLUMNS)


def _chart_png(report: CostReport) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.6), dpi=110)
    by_day = report.by_day.assign(series=report.by_day["model"] + " " + report.by_day["video_ratio"].astype(str))
    pivot = by_day.pivot_table(index="day", columns="series", values="cost_usd", aggfunc="sum").fillna(0)
    if pivot.empty:
        ax.text(0.5, 0.5, "no billed videos yet", ha="center", va="center", transform=ax.transAxes)
    else:
        pivot.plot.bar(stacked=True, ax=ax, rot=0, width=0.7)
        ax.set_ylabel("USD")
        ax.legend(title="model / ratio", fontsize=8)
    ax.set_title("Cost per day, stacked by model and video ratio")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


SECONDS_COLUMNS = ("seconds", "free_seconds", "used_seconds", "left_seconds")


def seconds_decimals(durations: Any) -> int:
    """The decimals the service reported its ``video_duration`` with (at most 6): seconds are shown so."""
    most = 0
    for value in durations:
        if value is None or pd.isna(value):
            continue
        text = f"{float(value):.6f}".rstrip("0")
        most = max(most, len(text.split(".")[1]))
    return most


def render_html(report: CostReport, title: str) -> str:
    """One self-contained page (the chart is an inline PNG): totals first, then the tables."""
    usd = report.by_model_ratio["cost_usd"].sum(min_count=1)
    cny = report.by_model_ratio["cost_cny"].sum(min_count=1)
    seconds = report.by_model_ratio["seconds"].sum()
    unknown = report.billed["cost_usd"].isna().sum() if not report.billed.empty else 0

    decimals = seconds_decimals(report.billed["video_duration"]) if not report.billed.empty else 0

    def in_seconds(value: Any) -> str:
        return "unknown" if value is None or pd.isna(value) else f"{float(value):,.{decimals}f}"

    def table(frame: pd.DataFrame) -> str:
        formatters = {c: in_seconds for c in SECONDS_COLUMNS if c in frame.columns}
        return frame.to_html(
            index=False, na_rep="unknown", float_format=lambda v: f"{v:,.4f}", formatters=formatters, border=0
        )

    chart = base64.b64encode(_chart_png(report)).decode()
    note = (
        f"({unknown} video{' has' if unknown == 1 else 's have'} no known unit price: not in the cost totals; "
        "set one in the dashscope_prices Variable)"
        if unknown
        else ""
    )
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;color:#222}}
table{{border-collapse:collapse;margin:.5em 0 1.5em}}
td,th{{padding:.25em .8em;border-bottom:1px solid #ddd;text-align:right}}th{{background:#f4f4f4}}
.big{{font-size:1.6em;font-weight:600}}</style></head><body>
<h1>{html.escape(title)}</h1>
<p class="big">{len(report.billed)} videos · {in_seconds(seconds)} s billed · USD {0 if pd.isna(usd) else usd:,.4f}
 · CNY {0 if pd.isna(cny) else cny:,.2f}</p><p>{html.escape(note)}</p>
<img alt="cost per day by ratio" src="data:image/png;base64,{chart}">
<h2>By model and video ratio</h2>{table(report.by_model_ratio)}
<h2>Free quota</h2>{table(report.free_quota)}
<h2>Face detections (billed per image)</h2>{table(report.detections)}
<h2>By day</h2>{table(report.by_day)}
<h2>Failures by API code</h2>{table(report.failures)}
<h2>Lost submit answers</h2>{table(report.lost_answers)}{table(report.uncertain) if len(report.uncertain) else ""}
<p>Seconds are the service's <code>usage.video_duration</code>, counted once per task; prices are the
reference's unit prices per second of output video.</p></body></html>"""


def write_report(output_root: str, prices_json: str | None = None, conn_id: str | None = None) -> dict[str, Any]:
    """Build the report for ``output_root`` and write ``reports/*.csv`` and ``reports/cost_report.html``."""
    report = build_report(read_outcomes(output_root, conn_id), prices_json)
    folder = as_storage_path(output_root, conn_id) / "reports"
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("by_model_ratio", "by_day", "free_quota", "failures", "detections", "lost_answers", "uncertain"):
        (folder / f"{name}.csv").write_text(getattr(report, name).to_csv(index=False))
    (folder / "cost_report.html").write_text(render_html(report, "DashScope cost report"))
    return {
        "reports": plain_url(folder),
        "videos": len(report.billed),
        "seconds": float(report.by_model_ratio["seconds"].sum()),
        "cost_usd": float(report.by_model_ratio["cost_usd"].sum(min_count=1) or 0),
        "detections": int(report.detections["images"].sum()) if not report.detections.empty else 0,
        "reconciled": int(report.lost_answers["count"].iloc[0]) if not report.lost_answers.empty else 0,
        "uncertain": len(report.uncertain),
    }
