"""get_provider_info(): what Airflow's ProvidersManager learns about the provider."""

from __future__ import annotations

from dashscope_provider import get_provider_info

from tests.harness.airflow_compat import AIRFLOW_V_3_3_PLUS


def test_provider_info_registers_the_connection_type() -> None:
    info = get_provider_info()
    [conn_type] = info["connection-types"]
    assert conn_type["hook-class-name"] == "dashscope_provider.hooks.dashscope.DashScopeHook"
    assert conn_type["connection-type"] == "dashscope"
    modules = {role: info[role][0]["python-modules"][0] for role in ("hooks", "operators", "sensors", "triggers")}
    assert modules == {role: f"dashscope_provider.{role}.dashscope" for role in modules}
    assert "dashscope_provider.hooks.dashscope_async" in info["hooks"][0]["python-modules"]
    [transfer] = info["transfers"]
    assert transfer["python-module"] == "dashscope_provider.transfers.dashscope_to_object_storage"
    assert (transfer["source-integration-name"], transfer["target-integration-name"]) == ("DashScope", "Common IO")
    from airflow.providers_manager import ProvidersManager

    from tests.harness.airflow_compat import ProvidersManagerTaskRuntime

    hook_info = ProvidersManagerTaskRuntime().hooks["dashscope"]
    assert hook_info is not None
    assert hook_info.hook_class_name == "dashscope_provider.hooks.dashscope.DashScopeHook"
    assert hook_info.connection_id_attribute_name == "dashscope_conn_id"
    if not AIRFLOW_V_3_3_PLUS:  # 3.1, 3.2 build the form from the hook (tests/unit/dags/test_dags.py checks it)
        return
    # The connection form, as the API server serves it (read from provider info, hook not imported).
    [ui] = [m for m in ProvidersManager().iter_connection_type_hook_ui_metadata() if m.connection_type == "dashscope"]
    assert ui.hook_name == "DashScope"
    assert ui.field_behaviour is not None
    assert ui.field_behaviour["relabeling"] == {"host": "Base URL", "password": "API key"}
    assert {"schema", "port", "login"} <= set(ui.field_behaviour["hidden_fields"])


def test_every_listed_module_imports_and_matches_the_schema() -> None:
    import importlib
    import json
    from importlib.resources import files

    import jsonschema

    info = get_provider_info()
    schema = json.loads(files("airflow").joinpath("provider_info.schema.json").read_text())
    jsonschema.validate(info, schema)
    listed = [
        m
        for role in ("hooks", "operators", "sensors", "triggers")
        for entry in info[role]
        for m in entry["python-modules"]
    ]
    listed += [t["python-module"] for t in info["transfers"]]
    for module in listed:
        importlib.import_module(module)
    hook_class = info["connection-types"][0]["hook-class-name"]
    module, _, name = hook_class.rpartition(".")
    assert getattr(importlib.import_module(module), name).conn_type == "dashscope"
