"""docker-compose.yaml (no Docker engine here): it parses and matches what the package needs."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]


def _compose() -> dict:
    return yaml.safe_load((REPO_ROOT / "docker-compose.yaml").read_text())


def test_services_of_the_celery_deployment() -> None:
    services = _compose()["services"]
    assert {
        "postgres",
        "redis",
        "minio",
        "minio-init",
        "airflow-apiserver",
        "airflow-scheduler",
        "airflow-dag-processor",
        "airflow-triggerer",
        "airflow-worker",
        "airflow-init",
        "dashscope-emulator",
    } <= set(services)
    assert services["dashscope-emulator"]["profiles"] == ["emulator"]
    assert services["airflow-triggerer"]["command"] == "triggerer"
    assert "talking-heads" in " ".join(services["minio-init"]["entrypoint"].split())


def test_airflow_environment_and_mounts() -> None:
    worker = _compose()["services"]["airflow-worker"]
    env = worker["environment"]
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql")
    assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://")
    conn = json.loads(
        env["AIRFLOW_CONN_DASHSCOPE_DEFAULT"]
        .replace("${DASHSCOPE_BASE_URL:-", "")
        .replace("${DASHSCOPE_API_KEY:-sk-emulator}", "KEY")
        .replace('}"', '"')
    )
    assert conn["conn_type"] == "dashscope" and conn["password"] == "KEY"
    mounts = {m.split(":")[1] for m in worker["volumes"] if m.startswith("./")}
    assert mounts == {"/opt/airflow/dags", "/opt/airflow/plugins", "/opt/airflow/include"}


def test_no_secret_is_written_into_the_deployment() -> None:
    text = (REPO_ROOT / "docker-compose.yaml").read_text()
    assert "sk-" not in text.replace("sk-emulator", "")
    example = (REPO_ROOT / ".env.example").read_text()
    assert "DASHSCOPE_API_KEY=\n" in example


def test_every_airflow_component_reads_one_shared_config() -> None:
    """The api-server checks task tokens the scheduler signed: all components need the same JWT secret.

    Each container would otherwise write its own airflow.cfg with its own random secret, and every task
    fails with "Signature verification failed" (tests/integration/test_distributed.py runs each component
    with its own AIRFLOW_HOME and this one shared AIRFLOW_CONFIG, as compose does).
    """
    compose = _compose()
    airflow = {name: s for name, s in compose["services"].items() if name.startswith("airflow-")}
    assert len(airflow) == 6
    for name, service in airflow.items():
        config = service["environment"]["AIRFLOW_CONFIG"]
        mounts = dict(reversed(volume.split(":")[:2]) for volume in service["volumes"])
        assert mounts[str(Path(config).parent)] == "airflow-config", name
    assert "airflow-config" in compose["volumes"]
    init = " ".join(compose["services"]["airflow-init"]["command"])
    assert "airflow db migrate" in init and "/opt/airflow/config" in init.split("chown", 1)[1]
