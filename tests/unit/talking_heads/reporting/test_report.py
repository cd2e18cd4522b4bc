"""The cost report (talking_heads.reporting.report) counts each billed task once, prices it by ratio, never
invents a price, keeps the seconds as precise as the service reported them, and counts reconciled rows and
rows still uncertain with their candidate tasks."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from talking_heads.reporting.report import build_report, read_outcomes, seconds_decimals, write_report

from tests.unit.conftest import CONN_ID


def _outcomes(root: Path, run: str, rows: list[dict]) -> None:
    (root / "outcomes").mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).assign(run_id=run).to_csv(root / "outcomes" / f"{run}.csv", index=False)


def test_report_totals(tmp_path: Path) -> None:
    _outcomes(
        tmp_path,
        "manual__2026-11-01T00:00:00",
        [
            {
                "row_id": "a",
                "model": "emo-v1",
                "status": "succeeded",
                "task_id": "t1",
                "video_duration": 10.0,
                "video_ratio": "1:1",
            },
            {
                "row_id": "b",
                "model": "emo-v1",
                "status": "succeeded",
                "task_id": "t2",
                "video_duration": 4.5,
                "video_ratio": "3:4",
            },
            {
                "row_id": "c",
                "model": "emoji-v1",
                "status": "succeeded",
                "task_id": "t3",
                "video_duration": 3,
                "video_ratio": "standard",
            },
            {"row_id": "d", "model": "emo-v1", "status": "failed", "code": "InvalidURL"},
        ],
    )
    _outcomes(
        tmp_path,
        "scheduled__2026-11-02T00:00:00",
        [
            {
                "row_id": "a",
                "model": "emo-v1",
                "status": "skipped",
                "task_id": "t1",
                "video_duration": 10.0,
                "video_ratio": "1:1",
            },
            {
                "row_id": "e",
                "model": "emo-v1",
                "status": "succeeded",
                "task_id": "t4",
                "video_duration": 2.0,
                "video_ratio": "1:1",
            },
        ],
    )
    report = build_report(read_outcomes(str(tmp_path)))
    table = report.by_model_ratio.set_index(["model", "video_ratio"])
    assert table.loc[("emo-v1", "1:1"), "videos"] == 2
    assert table.loc[("emo-v1", "1:1"), "seconds"] == pytest.approx(12.0)
    assert table.loc[("emo-v1", "1:1"), "cost_usd"] == pytest.approx(12 * 0.011469)
    assert table.loc[("emo-v1", "3:4"), "cost_cny"] == pytest.approx(4.5 * 0.16)
    assert pd.isna(table.loc[("emoji-v1", "standard"), "cost_usd"])
    quota = report.free_quota.set_index("model")
    assert quota.loc["emo-v1", "left_seconds"] == pytest.approx(1800 - 16.5)
    assert report.failures.to_dict("records") == [{"model": "emo-v1", "code": "InvalidURL", "rows": 1}]
    assert sorted(report.by_day["day"].unique()) == ["2026-11-01", "2026-11-02"]

    result = write_report(str(tmp_path))
    page = (tmp_path / "reports" / "cost_report.html").read_text()
    assert "data:image/png;base64," in page and "19.5 s billed" in page  # as precise as the service reported (4.5 s)
    assert (tmp_path / "reports" / "by_model_ratio.csv").exists()
    assert result["videos"] == 4


def test_empty_root_gives_an_empty_report(tmp_path: Path) -> None:
    result = write_report(str(tmp_path))
    assert result["videos"] == 0
    assert "no billed videos yet" not in (tmp_path / "reports" / "by_model_ratio.csv").read_text()


# -- user prices: environment, Airflow Variable, file --------------------------------------------------


@pytest.mark.parametrize("source", ["env-json", "env-file", "variable-json", "variable-file"])
def test_user_prices_from_env_variable_or_file(source: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from talking_heads.reporting.costs import PRICE_OVERRIDE_ENV, cost_of, load_prices

    text = '{"emoji-v1/standard": [0.01, 0.07]}'
    price_file = tmp_path / "prices.json"
    price_file.write_text(text)
    value = text if source.endswith("json") else str(price_file)
    monkeypatch.delenv(PRICE_OVERRIDE_ENV, raising=False)
    # The Variable is read through Airflow's own lookup, whose first backend is AIRFLOW_VAR_* variables.
    monkeypatch.setenv(PRICE_OVERRIDE_ENV if source.startswith("env") else "AIRFLOW_VAR_DASHSCOPE_PRICES", value)
    prices = load_prices()
    assert prices[("emoji-v1", "standard")] == (0.01, 0.07)
    assert prices[("emo-v1", "1:1")] == (0.011469, 0.08)  # the reference prices stay
    cost = cost_of("emoji-v1", "standard", 3, prices)
    assert (cost.usd, cost.cny) == (0.03, 0.21)


def test_no_user_price_leaves_emoji_cost_unknown(monkeypatch: pytest.MonkeyPatch) -> None:
    from talking_heads.reporting.costs import PRICE_OVERRIDE_ENV, cost_of, load_prices

    monkeypatch.delenv(PRICE_OVERRIDE_ENV, raising=False)
    monkeypatch.delenv("AIRFLOW_VAR_DASHSCOPE_PRICES", raising=False)
    cost = cost_of("emoji-v1", "standard", 3, load_prices())
    assert (cost.usd, cost.cny) == (None, None)


def test_seconds_keep_the_service_precision() -> None:
    assert seconds_decimals([5.3, 10.0]) == 1
    assert seconds_decimals([60, 24]) == 0
    assert seconds_decimals([5.312, None, float("nan")]) == 3


def test_the_cost_report_counts_reconciled_rows_and_rows_still_uncertain_with_their_candidates(
    tmp_path: Path,
) -> None:
    common = {"model": "emo-v1", "video_ratio": "1:1", "dashscope_conn_id": CONN_ID}
    run_1 = [
        {"row_id": "a", "status": "failed", "code": "SubmissionUncertain", "candidates": "t-a t-x", **common},
        {"row_id": "b", "status": "failed", "code": "SubmissionUncertain", "candidates": "t-b t-y", **common},
        {"row_id": "c", "status": "succeeded", "task_id": "t-c", "video_duration": 2.0, **common},
    ]
    run_2 = [  # a later run found a's task; b is still ambiguous; c is skipped
        {"row_id": "a", "status": "succeeded", "task_id": "t-a", "video_duration": 3.0, "reconciled": True, **common},
        {"row_id": "b", "status": "failed", "code": "SubmissionUncertain", "candidates": "t-b t-y", **common},
        {"row_id": "c", "status": "skipped", "task_id": "t-c", "video_duration": 2.0, **common},
    ]
    for run, lines in (("manual__2026-11-01", run_1), ("manual__2026-11-02", run_2)):
        (tmp_path / "outcomes").mkdir(exist_ok=True)
        pd.DataFrame([{**line, "run_id": run} for line in lines]).to_csv(tmp_path / "outcomes" / f"{run}.csv")
    written = write_report(str(tmp_path))
    assert (written["reconciled"], written["uncertain"]) == (1, 1)
    uncertain = pd.read_csv(tmp_path / "reports" / "uncertain.csv")
    assert uncertain[["row_id", "candidates"]].to_dict("records") == [{"row_id": "b", "candidates": "t-b t-y"}]
    page = (tmp_path / "reports" / "cost_report.html").read_text()
    assert "Lost submit answers" in page and "t-b t-y" in page
    assert build_report(pd.DataFrame()).uncertain.empty
