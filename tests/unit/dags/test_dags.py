"""The DAG files parse cleanly and say what the contract says; the connection type is registered."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.harness.airflow_compat import AIRFLOW_V_3_2_PLUS

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
    if AIRFLOW_V_3_2_PLUS:  # 3.1 fills field_behaviours only under the API server's wtforms mock (below)
        behaviour = ProvidersManager().field_behaviours.get("dashscope", {})
        assert behaviour.get("relabeling", {}).get("password")


def test_the_api_server_serves_the_dashscope_connection_form() -> None:
    """The form's fields as the API server sends them to the UI, on every Airflow line (3.1 builds them from
    the hook's get_ui_field_behaviour under a wtforms mock, 3.2+ from provider info). In a fresh interpreter,
    as an API server starts: on 3.1 a ProvidersManager that imported the hooks before (this session's other
    tests) keeps the form it found then, without wtforms none."""
    import json
    import subprocess
    import sys

    code = """if True:
        import json
        from airflow.api_fastapi.core_api.services.ui.connections import HookMetaService
        [meta] = [m for m in HookMetaService.hook_meta_data() if m.connection_type == "dashscope"]
        print("FORM", json.dumps({"hook_name": meta.hook_name, "fields": meta.standard_fields.model_dump()}))
    """
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    [line] = [line for line in done.stdout.splitlines() if line.startswith("FORM ")]
    form = json.loads(line.removeprefix("FORM "))
    assert form["hook_name"] == "DashScope"
    fields = form["fields"]
    assert (fields["host"]["title"], fields["host"]["hidden"]) == ("Base URL", False)
    assert (fields["password"]["title"], fields["password"]["hidden"]) == ("API key", False)
    assert fields["login"]["hidden"] and fields["port"]["hidden"] and fields["url_schema"]["hidden"]


#: The params a user may leave empty in the trigger form: the form marks a param required (a red asterisk)
#: unless its schema's type admits ``null``.
OPTIONAL_PARAMS = ("extra_dashscope_conn_ids", "storage_conn_id", "max_cost_usd", "notify_email")


def test_optional_params_are_not_marked_required_in_the_form(dagbag) -> None:  # type: ignore[no-untyped-def]
    params = dagbag.get_dag("talking_heads").params
    for key in OPTIONAL_PARAMS:
        kind = params.get_param(key).schema["type"]
        assert "null" in (kind if isinstance(kind, list) else [kind]), f"{key} is marked required: {kind}"
    # Every param whose default is empty is one of them.
    empty = {key for key, value in params.dump().items() if value in (None, [], "")}
    assert empty <= set(OPTIONAL_PARAMS), empty - set(OPTIONAL_PARAMS)
