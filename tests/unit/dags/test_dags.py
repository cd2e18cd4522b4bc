"""The DAG files parse cleanly and say what the contract says; the connection type is registered."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def dagbag(airflow_db: str):  # type: ignore[no-untyped-def]
    from tests.harness.airflow_compat import DagBag

    return DagBag(str(REPO_ROOT / "dags"))


def test_no_import_errors(dagbag) -> None:  # type: ignore[no-untyped-def]
    assert dagbag.import_errors == {}
    assert {"talking_heads", "dashscope_cost_report"} <= set(dagbag.dag_ids)


def test_talking_heads_params_and_schedule(dagbag) -> None:  # type: ignore[no-untyped-def]
    dag = dagbag.get_dag("talking_heads")
    params = dag.params.dump()
    for key in ("input_table", "output_root", "dashscope_conn_id", "max_cost_usd", "dry_run"):
        assert key in params
    assert params["dashscope_conn_id"] == "dashscope_default"
    assert params["max_cost_usd"] is None and params["dry_run"] is False
    assert Path(params["input_table"]).exists()
    assert dag.catchup is False
    assert {t.task_id for t in dag.tasks} >= {
        "plan",
        "generate.submit",
        "generate.wait",
        "generate.download",
        "record_outcomes",
    }
    wait = dag.get_task("generate.wait")
    assert wait.deferrable is True
    # Assets: the input table it reads; the outcomes and videos it produces (the cost report's schedule).
    assert [a.name for a in dag.get_task("plan").inlets] == ["talking_heads_input_table"]
    assert sorted(a.name for a in dag.get_task("record_outcomes").outlets) == [
        "talking_heads_outcomes",
        "talking_heads_videos",
    ]
    report = dagbag.get_dag("dashscope_cost_report")
    assert "talking_heads_outcomes" in str(report.timetable.asset_condition)


def test_dashscope_connection_type_has_a_form() -> None:
    from airflow.providers_manager import ProvidersManager

    hooks = ProvidersManager().hooks
    assert "dashscope" in hooks
    info = hooks["dashscope"]
    assert info is not None and info.hook_class_name.endswith("DashScopeHook")
    behaviour = ProvidersManager().field_behaviours.get("dashscope", {})
    assert behaviour.get("relabeling", {}).get("password")
