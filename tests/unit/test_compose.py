"""docker-compose.yaml and the Dockerfile (no Docker engine here): they parse and match what the package needs."""

from __future__ import annotations

import json
import re
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
    assert mounts == {"/opt/airflow/dags", "/opt/airflow/plugins", "/opt/airflow/include/sample"}


def test_a_run_holds_what_the_accounts_can_work_through_not_the_table() -> None:
    """The scheduler's CPU per second grows with what a running run holds (issue 24): the deployment bounds
    runs per account and leaves Airflow's max_map_length alone (it shipped 10,000: 30,000 task instances)."""
    from talking_heads.table.continuation import ROWS_PER_ACCOUNT_ENV, rows_per_run

    env = _compose()["services"]["airflow-scheduler"]["environment"]
    assert "AIRFLOW__CORE__MAX_MAP_LENGTH" not in env
    bound = rows_per_run(1024, 1, environ={k: str(v) for k, v in env.items()})
    assert bound == int(env[ROWS_PER_ACCOUNT_ENV])
    # At least the dashscope pool's slots, so a part keeps its account's queue full; at most 20: the
    # scheduler's checks grow with what a part holds (at --speed 1, 1.31 scheduler CPU-s a row in parts of
    # 10, 2.20 in one part of 30), while each boundary between parts idles the service about 45 s.
    compose_text = (REPO_ROOT / "docker-compose.yaml").read_text()
    pool = int(re.search(r"airflow pools set dashscope (\d+)", compose_text).group(1))
    assert pool <= bound <= 20


def test_an_unchanged_dag_file_is_not_reparsed_every_30_seconds() -> None:
    """Most of the dag-processor's idle CPU is re-parsing the unchanged DAG file every 30 s (issue 24):
    compose parses it every 10 minutes. That is safe only while Airflow re-parses a file whose mtime changed
    at once, which it does in the modified_time sort mode (its default): compose must not change it."""
    from airflow.configuration import conf

    env = _compose()["services"]["airflow-dag-processor"]["environment"]
    assert int(env["AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL"]) >= 300
    assert "AIRFLOW__DAG_PROCESSOR__FILE_PARSING_SORT_MODE" not in env
    assert conf.get_default_value("dag_processor", "file_parsing_sort_mode") == "modified_time"


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


def _stages() -> dict[str, str]:
    """The Dockerfile's build stages: name -> the stage's text (FROM line included)."""
    text = (REPO_ROOT / "Dockerfile").read_text()
    parts = re.split(r"^(?=FROM )", text, flags=re.MULTILINE)[1:]
    return {re.match(r"FROM \S+ AS (\S+)", part).group(1): part for part in parts}


def test_airflow_services_build_the_runtime_image() -> None:
    """Every Airflow service runs the `airflow` target: the official image, the provider and the pipeline
    with their runtime dependencies pinned by the lock; no test tools, no emulator."""
    compose = _compose()
    stages = _stages()
    assert list(stages)[-1] == "airflow", "the default target (the last stage) must be the production image"
    for name, service in compose["services"].items():
        if name.startswith("airflow-"):
            assert service["build"] == {"context": ".", "target": "airflow"}, name
    airflow = stages["airflow"]
    assert airflow.startswith("FROM apache/airflow:3.3.2-python3.11 ")
    assert "-c /opt/talking-heads/requirements.txt" in airflow
    install = " ".join(line for line in airflow.splitlines() if not line.startswith("#"))
    for tool in ("pytest", "moto", "ruff", "include", "dashscope_emulator", "dashscope-emulator"):
        assert tool not in install, tool
    assert "-r " not in install, "the lock holds the test tools: only as constraints (-c), never installed (-r)"


def test_the_emulator_service_builds_the_emulator_target() -> None:
    """The optional emulator has its own image, built from include/ alone (its own distribution)."""
    emulator = _compose()["services"]["dashscope-emulator"]
    assert emulator["build"] == {"context": ".", "target": "emulator"}
    assert emulator["image"] != _compose()["x-airflow-common"]["image"]
    assert emulator["command"][:4] == ["--host", "0.0.0.0", "--port", "8000"]
    stage = _stages()["emulator"]
    assert "apache/airflow" not in stage and "plugins" not in stage
    assert "/opt/talking-heads/include" in stage
    assert 'ENTRYPOINT ["python", "-m", "dashscope_emulator"]' in stage


def _with_defaults(text: str) -> str:
    """``${VAR:-default}`` as compose renders it with an empty .env (``$$`` is a literal ``$``)."""
    return re.sub(r"\$\$?\{[A-Z_]+:-([^}]*)\}", r"\1", text)


def test_runs_in_the_deployment_write_their_note_through_the_api_server() -> None:
    """The outcome step sets each run's note through the REST API as the ``airflow_api`` connection
    (talking_heads.reporting.run_summary); compose gives it the api-server and the UI's own user."""
    from talking_heads.reporting.run_summary import AIRFLOW_API_CONN_ID

    compose = _compose()
    env = compose["services"]["airflow-worker"]["environment"]
    connection = json.loads(_with_defaults(env[f"AIRFLOW_CONN_{AIRFLOW_API_CONN_ID.upper()}"]))
    port = compose["services"]["airflow-apiserver"]["ports"][0].split(":")[-1]
    assert connection["host"] == f"http://airflow-apiserver:{port}"
    user, role = _with_defaults(env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"]).split(":")
    assert (connection["login"], role) == (user, "admin")  # may PATCH a run's note
    # airflow-init writes that user's password where the auth manager reads it, from the same .env variable.
    init = compose["services"]["airflow-init"]
    script = _with_defaults(" ".join(init["command"]))
    passwords_file = env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"]
    assert f"> {passwords_file}" in script and f'"{user}" "{connection["password"]}"' in script
    assert init["environment"]["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"] == passwords_file
    assert passwords_file.startswith("/opt/airflow/config/")  # the volume every container mounts
