"""What a person reads of a run (talking_heads.reporting.run_summary): the one-line summary, with the 429s
the submits waited out, and the run note sent to the REST API."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from talking_heads.reporting.outcome_table import build_outcomes, summarize
from talking_heads.reporting.run_summary import set_run_note, summary_line
from talking_heads.row.ledger import RowLedger
from talking_heads.row.payloads import PlanEntry
from talking_heads.row.states import RowRecord

from tests.harness.services import QuietHandler, send_json, serve_http


def test_summary_line() -> None:
    summary = {"rows": 4, "succeeded": 2, "failed": 1, "skipped": 1, "seconds": 10.3, "cost_usd": 0.060786}
    line = summary_line({**summary, "cost_unknown_rows": 1, "report": "s3://b/reports/cost_report.html"})
    assert line == (
        "2 succeeded, 1 failed, 1 skipped of 4 rows · 10.3 s billed · USD 0.0608 (+1 row with no known price)"
        " · report: s3://b/reports/cost_report.html"
    )
    assert "nan" not in summary_line({"rows": 0, "seconds": None, "cost_usd": None, "report": "x"})


def test_the_summary_counts_the_429s_the_submits_waited_out(tmp_path: Path) -> None:
    ledger = RowLedger(str(tmp_path))
    ledger.put(RowRecord("a", "submitted", task_id="t1", throttled=3))
    ledger.put(RowRecord("b", "submitted", task_id="t2", throttled=2))
    plan = [PlanEntry(row_id=r, model="emo-v1", plan="generate") for r in ("a", "b")]
    frame = build_outcomes(plan, ledger, "run-1")
    summary = summarize(frame, ledger.layout, "file:///o.csv")
    assert summary["throttled"] == 5
    assert "5 throttled (429) answers waited out" in summary_line({**summary, "report": "x"})


class _Api(QuietHandler):
    calls: list[tuple[str, str, dict[str, Any], str | None]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.calls.append(("POST", self.path, body, None))
        ok = body == {"username": "robot", "password": "pw"}
        send_json(self, 201 if ok else 401, {"access_token": "jwt-1"} if ok else {"detail": "no"})

    def do_PATCH(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.calls.append(("PATCH", self.path, body, self.headers.get("Authorization")))
        send_json(self, 200, {"note": body["note"]})


@pytest.fixture
def api() -> Iterator[str]:
    _Api.calls = []
    with serve_http(_Api) as url:
        yield url


def _api_connection(monkeypatch: pytest.MonkeyPatch, host: str, login: str, password: str) -> None:
    connection = {"conn_type": "http", "host": host, "login": login, "password": password}
    monkeypatch.setenv("AIRFLOW_CONN_AIRFLOW_API", json.dumps(connection))


def test_run_note_through_the_rest_api_with_a_token(api: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_AIRFLOW_API", json.dumps({"conn_type": "http", "host": api, "login": "robot", "password": "pw"})
    )
    assert set_run_note("talking_heads", "manual__2026-11-29T10:00:00+00:00", "2 succeeded") is True
    (post, patch) = _Api.calls
    assert post[:2] == ("POST", "/auth/token")
    assert patch[1] == "/api/v2/dags/talking_heads/dagRuns/manual__2026-11-29T10%3A00%3A00%2B00%3A00?update_mask=note"
    assert patch[2] == {"note": "2 succeeded"} and patch[3] == "Bearer jwt-1"


def test_run_note_is_skipped_without_an_api_and_never_raises(api: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIRFLOW_CONN_AIRFLOW_API", raising=False)
    assert set_run_note("talking_heads", "r", "note") is False  # no connection, no [api] base_url
    monkeypatch.setenv(
        "AIRFLOW_CONN_AIRFLOW_API", json.dumps({"conn_type": "http", "host": api, "login": "x", "password": "y"})
    )
    assert set_run_note("talking_heads", "r", "note") is False  # refused credentials: logged, not raised
