"""Real Airflow components as separate processes, for integration tests.

api-server, scheduler (LocalExecutor), dag-processor and triggerer share one SQLite metadata DB in a
temporary AIRFLOW_HOME and this repo's dags/ and plugins/. Tests drive it through the REST API.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import requests

REPO_ROOT = Path(__file__).resolve().parents[2]
COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class AirflowCluster:
    """Starts and stops the components; ``api`` is the REST API base URL (v2)."""

    def __init__(self, home: Path, extra_env: dict[str, str] | None = None) -> None:
        self.home = home
        self.port = free_port()
        self.api = f"http://127.0.0.1:{self.port}/api/v2"
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")},
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO_ROOT / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": "8",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__API__PORT": str(self.port),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{self.port}/execution/",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "1",
            # Unpausing starts the latest @daily run with default params: keep its output in the test's home.
            "TALKING_HEADS_OUTPUT_ROOT": str(home / "default-output"),
            "TALKING_HEADS_POOL": "dashscope",
            **(extra_env or {}),
        }
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def airflow(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "airflow", *args], env=self.env, check=True,
                              capture_output=True, text=True)

    def start(self) -> AirflowCluster:
        self.home.mkdir(parents=True, exist_ok=True)
        self.airflow("db", "migrate")
        self.airflow("pools", "set", "dashscope", "2", "DashScope tasks in flight", "--include-deferred")
        for name in COMPONENTS:
            extra = ["--port", str(self.port)] if name == "api-server" else []
            log = (self.home / f"{name}.log").open("wb")
            self.processes[name] = subprocess.Popen(
                [sys.executable, "-m", "airflow", name, *extra], env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        self._wait(lambda: requests.get(f"{self.api}/version", timeout=2).ok, 90, "api-server")
        return self

    def stop(self) -> None:
        for process in self.processes.values():
            process.terminate()
        for process in self.processes.values():
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()

    def logs(self, name: str, tail: int = 4000) -> str:
        return (self.home / f"{name}.log").read_text(errors="replace")[-tail:]

    @staticmethod
    def _wait(ready: Any, seconds: float, what: str) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                if ready():
                    return
            except requests.RequestException:
                pass
            time.sleep(0.5)
        raise TimeoutError(f"{what} not ready after {seconds}s")

    def get(self, path: str, **params: Any) -> Any:
        response = requests.get(f"{self.api}{path}", params=params, timeout=30)
        response.raise_for_status()
        return response.json()

    def post(self, path: str, body: dict[str, Any], method: str = "POST") -> Any:
        response = requests.request(method, f"{self.api}{path}", json=body, timeout=30)
        if not response.ok:
            raise AssertionError(f"{method} {path}: {response.status_code} {response.text[:500]}")
        return response.json()

    def wait_for_dag(self, dag_id: str, seconds: float = 120) -> None:
        self._wait(lambda: requests.get(f"{self.api}/dags/{dag_id}", timeout=5).ok, seconds, f"DAG {dag_id}")
        self.post(f"/dags/{dag_id}", {"is_paused": False}, method="PATCH")

    def wait_for_run(self, dag_id: str, run_id: str, seconds: float = 300, on_poll: Any = None) -> str:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            state = self.get(f"/dags/{dag_id}/dagRuns/{run_id}")["state"]
            if on_poll is not None:
                on_poll()
            if state in ("success", "failed"):
                return state
            time.sleep(0.5)
        raise TimeoutError(f"run {run_id} of {dag_id} not finished after {seconds}s")

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        return self.get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances", limit=1000)["task_instances"]

    def cleanup(self) -> None:
        shutil.rmtree(self.home, ignore_errors=True)
