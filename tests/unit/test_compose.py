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
    assert {"postgres", "redis", "minio", "minio-init", "airflow-apiserver", "airflow-scheduler",
            "airflow-dag-processor", "airflow-triggerer", "airflow-worker", "airflow-init",
            "dashscope-emulator"} <= set(services)  # fmt: skip
    assert services["dashscope-emulator"]["profiles"] == ["emulator"]
    assert services["airflow-triggerer"]["command"] == "triggerer"
    assert "talking-heads" in " ".join(services["minio-init"]["entrypoint"].split())


def test_airflow_environment_and_mounts() -> None:
    worker = _compose()["services"]["airflow-worker"]
    env = worker["environment"]
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql")
    assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://")
    conn = json.loads(env["AIRFLOW_CONN_DASHSCOPE_DEFAULT"].replace("${DASHSCOPE_BASE_URL:-", "").replace(
        "${DASHSCOPE_API_KEY:-sk-emulator}", "KEY").replace("}\"", "\""))
    assert conn["conn_type"] == "dashscope" and conn["password"] == "KEY"
    mounts = {m.split(":")[1] for m in worker["volumes"] if m.startswith("./")}
    assert mounts == {"/opt/airflow/dags", "/opt/airflow/plugins", "/opt/airflow/include"}


def test_no_secret_is_written_into_the_deployment() -> None:
    text = (REPO_ROOT / "docker-compose.yaml").read_text()
    assert "sk-" not in text.replace("sk-emulator", "")
    example = (REPO_ROOT / ".env.example").read_text()
    assert "DASHSCOPE_API_KEY=\n" in example
