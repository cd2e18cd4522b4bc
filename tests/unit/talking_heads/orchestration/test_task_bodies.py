"""The bodies of talking_heads' Python tasks (talking_heads.orchestration.task_bodies): the plan step reads a
(templated) table, keeps its plan file and hands out at most ``max_map_length`` rows, a follow-up run takes
the next ones from that file; the outcome step writes one line per row, the outlets' events and the run
note; the plan log names connections of one account.

A real task context needs a running DAG (``tests/integration`` drive these through ``dag.test()``); here the
context is a dict of the keys each body reads, holding real Airflow objects (an operator that renders the
templates, the outlet event accessors, a DAG)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pandas as pd
import pytest
from airflow.sdk import DAG
from airflow.sdk.bases.operator import BaseOperator
from airflow.sdk.execution_time.context import OutletEventAccessors
from dashscope_provider.compat import AirflowFailException
from talking_heads.orchestration.assets import OUTCOMES
from talking_heads.orchestration.task_bodies import PlanSettings, log_shared_accounts, plan_rows, record_outcomes
from talking_heads.row.ledger import RowLedger
from talking_heads.row.states import RowRecord
from talking_heads.table.continuation import CONF_KEY, ROWS_PER_ACCOUNT_ENV

from tests.unit.conftest import CONN_ID
from tests.unit.talking_heads.helpers import ROW, table_frame

RUN = "manual__2026-12-01T00:00:00+00:00"


def _context(run_id: str = RUN, conf: dict[str, Any] | None = None) -> dict[str, Any]:
    """The keys the task bodies read; ``dag_run`` carries only the ``conf`` a follow-up run is triggered with."""
    dag = DAG("talking_heads_test", schedule=None)
    task = BaseOperator(task_id="plan", dag=dag)
    return {
        "run_id": run_id,
        "ds": "2026-12-01",
        "task": task,
        "dag": dag,
        "dag_run": SimpleNamespace(conf=conf or {}),
        "outlet_events": OutletEventAccessors(),
    }


def _table(folder: Path, *ids: str) -> None:
    """``{folder}/2026-12-01.csv``: valid rows with these ids, and one row the validation refuses."""
    frame = pd.concat([table_frame(*ids), pd.DataFrame([{"row_id": "bad", **ROW, "model": "nope"}])])
    frame.to_csv(folder / "2026-12-01.csv", index=False)


def _settings(tmp_path: Path, **changes: Any) -> PlanSettings:
    settings = {"conn_ids": [CONN_ID, "dashscope_two"], **changes}
    return PlanSettings(
        input_table=str(tmp_path / "{{ ds }}.csv"), output_root=str(tmp_path / "out"), preflight=False, **settings
    )


def test_the_plan_renders_the_table_url_and_keeps_its_plan_file(tmp_path: Path) -> None:
    _table(tmp_path, "a", "b", "c")
    work = plan_rows(_context(), _settings(tmp_path))  # type: ignore[arg-type]
    assert [(w["request"]["row_id"], w["conn_id"]) for w in work] == [
        ("a", CONN_ID),
        ("b", "dashscope_two"),
        ("c", CONN_ID),
    ]
    plan = json.loads((tmp_path / "out" / "runs" / "manual__2026-12-01T00_00_00_00_00" / "plan.json").read_text())
    assert plan["input_table"] == str(tmp_path / "2026-12-01.csv")  # the template rendered with the run's context
    assert [row["row_id"] for row in plan["rows"]] == ["a", "b", "c", "bad"]
    assert plan["rows"][3]["outcome"]["code"] == "InvalidInput"
    assert (plan["continuation"]["parts"], plan["continuation"]["next_run_id"]) == (1, None)
    dry = plan_rows(_context("dry"), _settings(tmp_path, dry_run=True))  # type: ignore[arg-type]
    assert dry == []


def test_a_table_over_the_map_limit_is_handed_out_over_follow_up_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW__CORE__MAX_MAP_LENGTH", "2")
    _table(tmp_path, "a", "b", "c")
    first = plan_rows(_context(), _settings(tmp_path))  # type: ignore[arg-type]
    assert [w["request"]["row_id"] for w in first] == ["a", "b"]
    # The follow-up run reads part 1's plan file, not the table (gone by now).
    (tmp_path / "2026-12-01.csv").unlink()
    follow_up = _context(f"{RUN}__part2", conf={CONF_KEY: {"run_id": RUN}})
    second = plan_rows(follow_up, _settings(tmp_path))  # type: ignore[arg-type]
    assert [w["request"]["row_id"] for w in second] == ["c"]


def test_a_table_that_cannot_be_read_fails_the_plan_without_retries(tmp_path: Path) -> None:
    with pytest.raises(AirflowFailException, match=r"2026-12-01\.csv"):
        plan_rows(_context(), _settings(tmp_path))  # type: ignore[arg-type]


def test_the_outcome_step_writes_a_line_per_row_the_outlet_events_and_the_run_note(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW__CORE__MAX_MAP_LENGTH", "2")
    _table(tmp_path, "a", "b", "c")
    context = _context()
    plan_rows(context, _settings(tmp_path))  # type: ignore[arg-type]
    ledger = RowLedger(str(tmp_path / "out"))
    ledger.put(RowRecord("a", "succeeded", model="emo-v1", task_id="t1", video_uri="file:///v/a.mp4", run_id=RUN))
    caplog.set_level(logging.INFO, logger="talking_heads.orchestration.task_bodies")
    output_root = str(tmp_path / "out")
    summary = record_outcomes(context, output_root=output_root, assets=[OUTCOMES])  # type: ignore[arg-type]

    assert (summary["rows"], summary["succeeded"], summary["failed"], summary["skipped"]) == (4, 1, 2, 1)
    assert summary["report"] == f"file://{tmp_path}/out/reports/cost_report.html"
    table = pd.read_csv(summary["outcomes"].removeprefix("file://"))
    assert table["row_id"].tolist() == ["a", "b", "c", "bad"]
    assert table.set_index("row_id").loc["c", "message"] == f"part 1 of 2: continues in run {RUN}__part2"
    assert context["outlet_events"][OUTCOMES].extra == {
        "output_root": output_root,
        "run_id": RUN,
        "storage_conn_id": None,
    }
    [note] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("RUN NOTE ")]
    assert note.endswith(f" · part 1 of 2, continues in run {RUN}__part2 with 1 rows")


def test_the_plan_log_names_connections_of_one_account(monkeypatch: pytest.MonkeyPatch) -> None:
    def conn(key: str, account: str | None = None) -> str:
        extra = {"account": account} if account else {}
        return json.dumps({"conn_type": "dashscope", "host": "http://127.0.0.1:1", "password": key, "extra": extra})

    monkeypatch.setenv("AIRFLOW_CONN_DS_A1", conn("sk-one", "acct-1"))
    monkeypatch.setenv("AIRFLOW_CONN_DS_A1_BIS", conn("sk-two", "acct-1"))
    monkeypatch.setenv("AIRFLOW_CONN_DS_SAME_KEY", conn("sk-three"))
    monkeypatch.setenv("AIRFLOW_CONN_DS_SAME_KEY_BIS", conn("sk-three"))  # no account named: the key's
    monkeypatch.setenv("AIRFLOW_CONN_DS_OTHER", conn("sk-four", "acct-2"))
    lines: list[str] = []
    ids = ["ds_a1", "ds_a1_bis", "ds_same_key", "ds_same_key_bis", "ds_other", "ds_missing"]
    shared = log_shared_accounts(ids, lines.append)
    assert shared["acct-1"] == ["ds_a1", "ds_a1_bis"]
    assert [v for k, v in shared.items() if k.startswith("key-")] == [["ds_same_key", "ds_same_key_bis"]]
    assert len(shared) == 2
    assert "Connections ds_a1, ds_a1_bis belong to one Alibaba Cloud account (acct-1)" in lines[0]
    assert "add no parallelism" in lines[0]
    assert "sk-three" not in "\n".join(lines)  # the key is never logged, only its fingerprint
    assert lines[-1] == "Rows are spread over 6 connections of 3 account(s)"

    lines.clear()
    assert log_shared_accounts(["ds_a1", "ds_other"], lines.append) == {}
    assert lines == ["Rows are spread over 2 connections of 2 account(s)"]


def test_a_run_holds_at_most_the_deployments_rows_per_account(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """TALKING_HEADS_ROWS_PER_RUN_PER_ACCOUNT bounds a part below max_map_length, per account of the run."""

    def conn(key: str, account: str) -> str:
        extra = {"account": account}
        return json.dumps({"conn_type": "dashscope", "host": "http://127.0.0.1:1", "password": key, "extra": extra})

    monkeypatch.setenv("AIRFLOW_CONN_DS_ONE", conn("sk-one", "acct-1"))
    monkeypatch.setenv("AIRFLOW_CONN_DS_ONE_BIS", conn("sk-one-bis", "acct-1"))
    monkeypatch.setenv("AIRFLOW_CONN_DS_TWO", conn("sk-two", "acct-2"))
    monkeypatch.setenv(ROWS_PER_ACCOUNT_ENV, "2")
    _table(tmp_path, "a", "b", "c", "d", "e", "f")
    one_account = plan_rows(_context(), _settings(tmp_path, conn_ids=["ds_one", "ds_one_bis"]))  # type: ignore[arg-type]
    assert [w["request"]["row_id"] for w in one_account] == ["a", "b"]  # two keys of one account: 2 rows
    two_accounts = plan_rows(_context("r2"), _settings(tmp_path, conn_ids=["ds_one", "ds_two"]))  # type: ignore[arg-type]
    assert [w["request"]["row_id"] for w in two_accounts] == ["a", "b", "c", "d"]
    plan = json.loads((tmp_path / "out" / "runs" / "r2" / "plan.json").read_text())
    assert (plan["continuation"]["parts"], plan["continuation"]["later"]) == (2, ["e", "f"])
