"""Real Airflow components as separate processes, for integration tests.

:class:`AirflowCluster`: api-server, scheduler (LocalExecutor), dag-processor and triggerer sharing one
metadata DB (SQLite in a temporary AIRFLOW_HOME unless ``extra_env`` names another) and this repo's
dags/ and plugins/.
:class:`CeleryAirflowCluster`: docker-compose.yaml's topology: the same components plus Celery workers,
CeleryExecutor, a Postgres metadata DB and a Redis broker (``tests/harness/services.py``), each
component with its own AIRFLOW_HOME and one shared config file, as compose's containers have.
Tests drive either through the REST API.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psutil
import requests

from tests.harness.services import (
    PostgresServer,
    RedisServer,
    dies_with_parent,
    free_port,
    tail,
    wait_until,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
#: Seconds a stopped cluster's components get to exit before they (and what they started) are SIGKILLed.
STOP_GRACE_SECONDS = 5.0
#: What Airflow 3 titles a process that runs a task: ``airflow worker -- <task instance id>`` (not
#: ``airflow worker -- LocalExecutor: ...``, the executor's pool process).
TASK_PROCESS_TITLE = re.compile(r"airflow worker -- [0-9a-f]{8}-[0-9a-f]{4}-")
__all__ = [
    "COMPONENTS",
    "AirflowCluster",
    "CeleryAirflowCluster",
    "copy_sqlite",
    "free_port",
    "kill_tree",
    "migrated_home",
]


def copy_sqlite(source: Path, target: Path) -> None:
    """A consistent copy of a SQLite database (SQLite's backup API: a file copy could miss pages still in
    its write-ahead log)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(source) as original, sqlite3.connect(target) as copy:
        original.backup(copy)


def migrated_home(folder: Path) -> Path:
    """``folder/home``: an Airflow home as ``airflow db migrate`` leaves it (a migrated SQLite ``airflow.db`` and
    the ``airflow.cfg`` it wrote), made the first time it is asked for. Processes that share ``folder``
    (pytest-xdist workers) make it once between them, under a lock; each cluster then starts from a copy
    (``AirflowCluster(migrated_home=...)``) instead of a migration of its own, which is a Python process
    importing Airflow: several CPU-seconds on a busy machine."""
    folder.mkdir(parents=True, exist_ok=True)
    home = folder / "home"
    with (folder / "migrate.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not home.exists():
            partial = folder / "home.partial"
            shutil.rmtree(partial, ignore_errors=True)
            partial.mkdir()
            env = {
                **{k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")},
                "AIRFLOW_HOME": str(partial),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            }
            result = subprocess.run(
                [sys.executable, "-m", "airflow", "db", "migrate"], env=env, capture_output=True, text=True
            )
            if result.returncode != 0:
                raise RuntimeError(f"airflow db migrate failed ({result.returncode}):\n{result.stderr[-3000:]}")
            # The paths it wrote name the home it was made in: a copy names its own (see AirflowCluster).
            config = (partial / "airflow.cfg").read_text().replace(str(partial), str(home))
            (partial / "airflow.cfg").write_text(config)
            partial.rename(home)  # whole or absent: another worker never sees half of it
    return home


def kill_tree(pid: int) -> list[str]:
    """SIGKILL a process and everything under it (a machine going down); returns what was killed."""
    try:
        root = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return []
    victims = [*root.children(recursive=True), root]
    names = []
    for proc in victims:
        try:
            names.append(" ".join(proc.cmdline())[:60] or proc.name())
            proc.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(victims, timeout=10)
    return names


class AirflowCluster:
    """Starts and stops the components; ``api`` is the REST API base URL (v2).

    ``pool_slots``: size of the ``dashscope`` pool (created with ``--include-deferred``) that the DAG's
    submit and wait tasks share (``TALKING_HEADS_POOL``).
    ``scheduled_runs``: whether the scheduler makes runs on its own (``[scheduler] use_job_schedule``), as a
    deployment does: unpausing ``talking_heads`` (@daily) starts its latest interval's run over the sample
    table, and the runs the tests trigger queue behind it (``max_active_runs=1``). A cluster whose tests
    only trigger runs turns it off and spares that run's work.
    ``migrated_home``: a migrated Airflow home (:func:`migrated_home`) whose SQLite database and ``airflow.cfg``
    the cluster copies instead of running ``airflow db migrate`` (only for the default SQLite database). The
    copies share the config's generated secrets (the Fernet key, the JWT secret): throw-away clusters' only.
    """

    def __init__(
        self,
        home: Path,
        extra_env: dict[str, str] | None = None,
        pool_slots: int = 2,
        *,
        scheduled_runs: bool = True,
        migrated_home: Path | None = None,
    ) -> None:
        self.home = home
        self.port = free_port()
        self.pool_slots = pool_slots
        self.migrated_home = migrated_home
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
            # Log servers on free ports, not 8793/8794: other clusters (other tests, other checkouts) may run.
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
            # Unpausing starts the latest @daily run with default params: keep its output in the test's home.
            "TALKING_HEADS_OUTPUT_ROOT": str(home / "default-output"),
            "TALKING_HEADS_POOL": "dashscope",
            "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": str(scheduled_runs),
            **(extra_env or {}),
        }
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    # -- what runs where (subclasses change these) -------------------------------------------------------

    def components(self) -> dict[str, list[str]]:
        """Name -> ``airflow`` CLI arguments of each long-running component process."""
        return {name: [name, *(["--port", str(self.port)] if name == "api-server" else [])] for name in COMPONENTS}

    def component_env(self, name: str) -> dict[str, str]:
        """The environment of one component (or of ``init``, the one-off set-up commands)."""
        return self.env

    def log_path(self, name: str) -> Path:
        return self.home / f"{name}.log"

    # -- life cycle --------------------------------------------------------------------------------------

    def airflow(self, *args: str, component: str = "init") -> subprocess.CompletedProcess[str]:
        """Runs one ``airflow`` CLI command to completion; a failure carries the command's output tail."""
        env = self.component_env(component)
        Path(env["AIRFLOW_HOME"]).mkdir(parents=True, exist_ok=True)
        result = subprocess.run([sys.executable, "-m", "airflow", *args], env=env, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(
                f"airflow {' '.join(args[:2])} failed ({result.returncode}):\n"
                f"{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
            )
        return result

    def start(self) -> AirflowCluster:
        self.home.mkdir(parents=True, exist_ok=True)
        self._migrate()
        for name in self.components():
            self.log_path(name).unlink(missing_ok=True)
            self.launch(name)
        self._wait(lambda: requests.get(f"{self.api}/version", timeout=2).ok, 120, "api-server")
        # Through the REST API the api-server already serves, not a second ``airflow pools set`` process.
        # Nothing runs before it exists: the DAG stays paused until wait_for_dag (or the UI) unpauses it.
        pool = {"name": "dashscope", "slots": self.pool_slots, "description": "DashScope tasks in flight"}
        made = self.post("/pools", {**pool, "include_deferred": True})
        if (made["slots"], made["include_deferred"]) != (self.pool_slots, True):
            raise RuntimeError(f"the dashscope pool was made as {made}")  # a wait must hold its slot
        return self

    def _migrate(self) -> None:
        if self.migrated_home is None:
            self.airflow("db", "migrate")  # also writes the airflow.cfg every component then reads
            return
        database = self.env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
        if not database.startswith("sqlite:///"):
            raise ValueError(f"migrated_home's database is SQLite; this cluster's is {database.split(':')[0]}")
        copy_sqlite(self.migrated_home / "airflow.db", Path(database.removeprefix("sqlite:///")))
        # The config first, as ``db migrate`` leaves it: components started without one would each write
        # their own, with a JWT secret of its own, and the api-server would refuse the scheduler's task tokens.
        config = (self.migrated_home / "airflow.cfg").read_text()
        (self.home / "airflow.cfg").write_text(config.replace(str(self.migrated_home), str(self.home)))

    def launch(self, name: str) -> subprocess.Popen[bytes]:
        """Start one component's process (its log appended to); also how a killed component is restarted."""
        env = self.component_env(name)
        Path(env["AIRFLOW_HOME"]).mkdir(parents=True, exist_ok=True)
        with self.log_path(name).open("ab") as log:
            self.processes[name] = subprocess.Popen(
                dies_with_parent([sys.executable, "-m", "airflow", *self.components()[name]]),
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        return self.processes[name]

    def kill(self, name: str) -> list[str]:
        """SIGKILL a component with every process under it (for the scheduler: its executor's workers and
        the tasks they run); returns what was killed. :meth:`launch` starts it again."""
        return kill_tree(self.processes[name].pid)

    def running_task_process(self) -> psutil.Process | None:
        """A process under the scheduler running a task (:data:`TASK_PROCESS_TITLE`), if any."""
        try:
            scheduler = psutil.Process(self.processes["scheduler"].pid)
            for proc in scheduler.children(recursive=True):
                if TASK_PROCESS_TITLE.match(" ".join(proc.cmdline())):
                    return proc
        except psutil.NoSuchProcess:
            pass
        return None

    def check_alive(self) -> None:
        """Raises, with the tail of its log, if a component process has exited."""
        for name, process in self.processes.items():
            if process.poll() is not None:
                raise RuntimeError(
                    f"{name} exited with code {process.returncode}; log tail:\n{tail(self.log_path(name))}"
                )

    def stop(self) -> None:
        """Terminate every component, then SIGKILL whatever outlived it, its own children included (a
        scheduler that had to be killed leaves its log server and executor workers behind, still running)."""
        descendants = []
        for process in self.processes.values():
            with contextlib.suppress(psutil.NoSuchProcess):
                descendants += psutil.Process(process.pid).children(recursive=True)
            process.terminate()
        # A test's cluster has nothing to finish gracefully: a few seconds to exit, then SIGKILL (a
        # scheduler's executor otherwise waits out its running tasks: 33 s of one module's teardown).
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for process in self.processes.values():
            try:
                process.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        _, alive = psutil.wait_procs(descendants, timeout=max(deadline - time.monotonic(), 0.1))
        for leftover in alive:
            with contextlib.suppress(psutil.NoSuchProcess):
                leftover.kill()

    def logs(self, name: str, tail: int = 4000) -> str:
        return self.log_path(name).read_text(errors="replace")[-tail:]

    def all_logs(self, chars: int = 1500) -> str:
        """The tail of every component's log, for failure messages."""
        return "\n".join(
            f"----- {name} (last {chars} chars) -----\n{tail(self.log_path(name), chars)}" for name in self.processes
        )

    def _wait(self, ready: Callable[[], bool], seconds: float, what: str) -> None:
        try:
            wait_until(ready, seconds, what, self.check_alive)
        except TimeoutError as error:
            raise TimeoutError(f"{error}\n{self.all_logs()}") from None

    # -- REST API ----------------------------------------------------------------------------------------

    def get(self, path: str, **params: Any) -> Any:
        response = requests.get(f"{self.api}{path}", params=params, timeout=30)
        response.raise_for_status()
        return response.json()

    def post(self, path: str, body: dict[str, Any], method: str = "POST") -> Any:
        response = requests.request(method, f"{self.api}{path}", json=body, timeout=30)
        if not response.ok:
            raise AssertionError(f"{method} {path}: {response.status_code} {response.text[:500]}")
        return response.json()

    @contextmanager
    def running(self, dag_id: str, seconds: float = 120) -> Iterator[AirflowCluster]:
        """The components started and ``dag_id`` parsed and unpaused; all stopped on the way out."""
        try:
            self.start()
            self.wait_for_dag(dag_id, seconds)
            yield self
        finally:
            self.stop()

    def wait_for_dag(self, dag_id: str, seconds: float = 120) -> None:
        self._wait(lambda: requests.get(f"{self.api}/dags/{dag_id}", timeout=5).ok, seconds, f"DAG {dag_id}")
        self.post(f"/dags/{dag_id}", {"is_paused": False}, method="PATCH")

    def wait_for_run(
        self,
        dag_id: str,
        run_id: str,
        seconds: float = 300,
        on_poll: Callable[[], None] | None = None,
        interval: float = 0.5,
    ) -> str:
        """The run's end state, asked every ``interval`` seconds (each ask costs the api-server CPU: a benchmark
        measuring the api-server asks seldom)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.check_alive()
            state = self.get(f"/dags/{dag_id}/dagRuns/{run_id}")["state"]
            if on_poll is not None:
                on_poll()
            if state in ("success", "failed"):
                return state
            time.sleep(interval)
        raise TimeoutError(f"run {run_id} of {dag_id} not finished after {seconds}s\n{self.all_logs()}")

    def wait_until_idle(self, dag_id: str, seconds: float = 300) -> None:
        """Until no run of ``dag_id`` is queued or running (e.g. the scheduled run that unpausing starts)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            runs = self.get(f"/dags/{dag_id}/dagRuns", limit=100)["dag_runs"]
            if all(run["state"] in ("success", "failed") for run in runs):
                return
            time.sleep(1)
        raise TimeoutError(f"runs of {dag_id} still active after {seconds:.0f}s\n{self.all_logs()}")

    def wait_for_runs(self, dag_id: str, run_ids: list[str], seconds: float) -> dict[str, dict[str, Any]]:
        """Each run, once it exists and has finished (``success`` or ``failed``): run id -> the API's run."""
        deadline = time.monotonic() + seconds
        finished: dict[str, dict[str, Any]] = {}
        while time.monotonic() < deadline and len(finished) < len(run_ids):
            self.check_alive()
            for run_id in run_ids:
                if run_id in finished:
                    continue
                response = requests.get(f"{self.api}/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}", timeout=30)
                if response.ok and response.json()["state"] in ("success", "failed"):
                    finished[run_id] = response.json()
            time.sleep(1)
        missing = [r for r in run_ids if r not in finished]
        assert not missing, f"runs not finished after {seconds:.0f}s: {missing}\n{self.all_logs()}"
        return finished

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        """Every task instance of the run (the API answers at most ``[api] maximum_page_limit``, 100, a page)."""
        found: list[dict[str, Any]] = []
        while True:
            page = self.get(
                f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances", limit=100, offset=len(found), order_by="id"
            )
            found += page["task_instances"]
            if not page["task_instances"] or len(found) >= page["total_entries"]:
                return found

    def cleanup(self) -> None:
        shutil.rmtree(self.home, ignore_errors=True)


class CeleryAirflowCluster(AirflowCluster):
    """docker-compose.yaml's topology as processes on this machine (no container engine runs here).

    ================================  =================================================================
    compose service                   here
    ================================  =================================================================
    ``postgres``, ``redis``           :class:`PostgresServer`, :class:`RedisServer` (given, started)
    ``airflow-init``                  ``airflow db migrate``; the ``dashscope`` pool (REST API)
    ``airflow-apiserver``             ``airflow api-server``          } one process each, each with its
    ``airflow-scheduler``             ``airflow scheduler``           } own AIRFLOW_HOME (its "machine")
    ``airflow-dag-processor``         ``airflow dag-processor``       } and compose's environment:
    ``airflow-triggerer``             ``airflow triggerer``           } CeleryExecutor, Postgres, Redis
    ``airflow-worker`` (2 replicas)   ``airflow celery worker`` x ``workers``, distinct Celery hostnames
    config volume                     one ``AIRFLOW_CONFIG`` file written by the init step: every
                                      component signs/checks task tokens with the same JWT secret
    ================================  =================================================================
    """

    def __init__(
        self,
        home: Path,
        database: PostgresServer,
        broker: RedisServer,
        extra_env: dict[str, str] | None = None,
        workers: int = 2,
        worker_concurrency: int = 2,
        pool_slots: int = 4,
        *,
        scheduled_runs: bool = True,
    ) -> None:
        self.config_path = home / "config" / "airflow.cfg"
        super().__init__(
            home,
            {
                "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": database.url,
                "AIRFLOW__CELERY__BROKER_URL": broker.url,
                "AIRFLOW__CELERY__RESULT_BACKEND": database.celery_result_backend,
                "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(worker_concurrency),
                "AIRFLOW_CONFIG": str(self.config_path),
                **(extra_env or {}),
            },
            pool_slots=pool_slots,
            scheduled_runs=scheduled_runs,
        )
        self.hostname = socket.gethostname()
        self.workers = {f"worker-{i}": f"worker-{i}@{self.hostname}" for i in range(1, workers + 1)}
        self._worker_log_ports = {name: free_port() for name in self.workers}

    def components(self) -> dict[str, list[str]]:
        commands = super().components()
        for name, celery_hostname in self.workers.items():
            commands[name] = ["celery", "worker", "--celery-hostname", celery_hostname]
        return commands

    def component_env(self, name: str) -> dict[str, str]:
        env = {**self.env, "AIRFLOW_HOME": str(self.home / name)}
        if name in self._worker_log_ports:  # each worker serves its task logs on its own port
            env["AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT"] = str(self._worker_log_ports[name])
        return env

    def log_path(self, name: str) -> Path:
        return self.home / "logs-of-processes" / f"{name}.log"

    def start(self) -> CeleryAirflowCluster:
        self.config_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_path("init").parent.mkdir(parents=True, exist_ok=True)
        super().start()
        self._wait(self._workers_answer, 120, f"Celery workers {sorted(self.workers.values())}")
        return self

    def celery_app(self) -> Any:
        """A bare Celery client of the broker (not Airflow's app: it would read this process's config)."""
        from celery import Celery

        return Celery(broker=self.env["AIRFLOW__CELERY__BROKER_URL"])

    def _workers_answer(self) -> bool:
        app = self.celery_app()
        try:
            replies = app.control.ping(timeout=2)
        finally:
            app.close()
        answered = {name for reply in replies for name in reply}
        return set(self.workers.values()) <= answered

    def where(self) -> dict[str, str]:
        """Component -> where it runs: its pid (and port or Celery hostname)."""
        places = {}
        for name, process in self.processes.items():
            extra = f" 127.0.0.1:{self.port}" if name == "api-server" else ""
            extra = f" {self.workers[name]}" if name in self.workers else extra
            places[name] = f"pid {process.pid}{extra}"
        return places
