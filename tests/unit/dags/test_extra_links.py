"""The links the UI offers on talking_heads' tasks, as the api-server reads them: from the serialized DAG
(link name -> the XCom key the worker stores the URL under), and the provider registering its own."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[3]


def test_each_step_serializes_its_links(airflow_db: str) -> None:
    from tests.harness.airflow_compat import DagBag, DagSerialization

    dag = DagBag(str(REPO_ROOT / "dags")).get_dag("talking_heads")
    serialized = DagSerialization.to_dict(dag)["dag"]["tasks"]
    links = {t["__var"]["task_id"]: t["__var"].get("_operator_extra_links", {}) for t in serialized}
    assert links["generate.wait"] == {"DashScope task": "_link_DashScopeTaskLink"}
    assert links["generate.download"] == {"Stored video": "_link_StoredVideoLink"}
    assert links["record_outcomes"] == {
        "Outcome table": "_link_OutcomeTableLink",
        "Cost report": "_link_CostReportLink",
    }
    assert links["plan"] == {} and links["generate.submit"] == {}


def test_the_provider_registers_its_task_link() -> None:
    from airflow.providers_manager import ProvidersManager

    assert "dashscope_provider.links.DashScopeTaskLink" in ProvidersManager().extra_links_class_names
