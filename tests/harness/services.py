"""The backing services of a distributed Airflow deployment, as local processes on 127.0.0.1.

docker-compose.yaml runs them as containers (``postgres``, ``redis``, ``minio``); no container engine
runs here, so the distributed test starts the same kinds of servers from this machine's packages:
Postgres (Debian's ``postgresql``), Redis (Debian's ``redis-server``) and an S3 API (moto in server mode,
from requirements.txt), each on a free port, in its own temporary folder, stopped and removed after.
``scripts/system_deps.sh`` (run by ``./test.sh``) installs the Debian packages when missing.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class QuietHandler(BaseHTTPRequestHandler):
    """A request handler that keeps no access log (the base of the tests' HTTP stubs)."""

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def serve_http(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """``handler`` served on a free port of 127.0.0.1 from a background thread; yields the base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def send_json(handler: BaseHTTPRequestHandler, code: int, body: Any) -> None:
    """Answer the handler's request with ``body`` as JSON (status ``code``, with its Content-Length)."""
    data = json.dumps(body).encode()
    handler.send_response(code)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


def tail(path: Path, chars: int = 3000) -> str:
    """The end of a log file, for failure messages (empty if there is none yet)."""
    try:
        return path.read_text(errors="replace")[-chars:]
    except FileNotFoundError:
        return ""


def dies_with_parent(command: list[str], signal_name: str = "TERM") -> list[str]:
    """``command`` prefixed so that it gets SIGTERM (or ``signal_name``) when the test process dies.

    Teardown stops every process the tests start; this covers the test process being killed before its
    teardown runs, which would otherwise leave a whole cluster running on the machine. ``setpriv`` sets
    the parent-death signal and execs the command (util-linux; without it, the command runs as is).
    """
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", signal_name, "--", *command] if setpriv else command


class ServiceError(RuntimeError):
    """A service did not start or died; the message carries the tail of its log."""


class Service:
    """One server process: started by :meth:`start`, ready when :meth:`ready` says so, stopped by :meth:`stop`.

    As a context manager, it starts on entry and stops on exit (and when it fails to start).

    ``name`` is what failure messages and the test's figure line call it; ``where`` says where it runs.
    """

    name = "service"
    #: The signal that stops the server (by :meth:`stop`, or when the test process dies).
    stop_signal = "TERM"

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.log_path = workdir / f"{self.name}.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def where(self) -> str:
        pid = self.process.pid if self.process else "-"
        return f"pid {pid} 127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        raise NotImplementedError

    def popen_kwargs(self) -> dict[str, Any]:
        return {}

    def prepare(self) -> None:
        """Work before the server starts (e.g. create its data folder)."""

    def ready(self) -> bool:
        raise NotImplementedError

    def after_ready(self) -> None:
        """Work once the server answers (e.g. create a database or a bucket)."""

    def start(self, timeout: float = 60) -> Service:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.prepare()
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                dies_with_parent(self.command(), self.stop_signal),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                **self.popen_kwargs(),
            )
        wait_until(self.ready, timeout, f"{self.name} on port {self.port}", self.check_alive)
        self.after_ready()
        return self

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def check_alive(self) -> None:
        """Raises :class:`ServiceError` with the log's tail if the process has exited."""
        if self.process is not None and self.process.poll() is not None:
            raise ServiceError(
                f"{self.name} exited with code {self.process.returncode}; log tail:\n{tail(self.log_path)}"
            )

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(getattr(signal, f"SIG{self.stop_signal}"))
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


def wait_until(ready: Callable[[], bool], seconds: float, what: str, check: Callable[[], None] | None = None) -> None:
    """Polls ``ready`` until it is true; ``check`` raises early if what we wait for has died."""
    deadline = time.monotonic() + seconds
    last_error: BaseException | None = None
    while time.monotonic() < deadline:
        if check is not None:
            check()
        try:
            if ready():
                return
        except Exception as error:  # not up yet: connection refused, HTTP errors, ...
            last_error = error
        time.sleep(0.25)
    raise TimeoutError(f"{what} not ready after {seconds:.0f}s (last error: {last_error!r})")


class PostgresServer(Service):
    """A throw-away Postgres cluster (``initdb`` + ``postgres``) with a database and a password user.

    Postgres refuses to run as root; as root, the server runs as the ``postgres`` system user (which
    Debian's package creates), else ``nobody``. Durability is off (``fsync``, ``full_page_writes``): the
    cluster lives for one test and this makes ``airflow db migrate`` fast on a slow disk.
    """

    name = "postgres"
    stop_signal = "INT"  # "fast" shutdown: SIGTERM ("smart") would wait for every client to disconnect

    def __init__(
        self, workdir: Path, user: str = "airflow", password: str = "airflow", database: str = "airflow"
    ) -> None:
        super().__init__(workdir)
        self.user, self.password, self.database = user, password, database
        self.bin_dir = self._find_bin_dir()
        self.run_as: pwd.struct_passwd | None = None
        if os.geteuid() == 0:
            for account in ("postgres", "nobody"):
                with contextlib.suppress(KeyError):
                    self.run_as = pwd.getpwnam(account)
                    break
        # The data folder must be reachable by the server's user: pytest's tmp dirs are root-only (0700).
        self.data_root = Path(tempfile.mkdtemp(prefix="talking-heads-pg-"))
        self.data_dir = self.data_root / "data"

    @staticmethod
    def _find_bin_dir() -> Path:
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
        if found:
            return Path(found[-1]).parent
        initdb = shutil.which("initdb")
        if initdb:
            return Path(initdb).parent
        raise ServiceError("Postgres is not installed (initdb not found): run scripts/system_deps.sh")

    @property
    def url(self) -> str:
        """SQLAlchemy URL, as docker-compose.yaml's ``AIRFLOW__DATABASE__SQL_ALCHEMY_CONN`` spells it."""
        return f"postgresql+psycopg2://{self.user}:{self.password}@127.0.0.1:{self.port}/{self.database}"

    @property
    def celery_result_backend(self) -> str:
        """Celery's result backend on the same database (compose's ``AIRFLOW__CELERY__RESULT_BACKEND``)."""
        return f"db+postgresql://{self.user}:{self.password}@127.0.0.1:{self.port}/{self.database}"

    @property
    def where(self) -> str:
        return f"{super().where} (Postgres {self.bin_dir.parent.name})"

    def popen_kwargs(self) -> dict[str, Any]:
        if self.run_as is None:
            return {}
        return {
            "user": self.run_as.pw_uid,
            "group": self.run_as.pw_gid,
            "extra_groups": [],
            "cwd": self.data_root,
            "env": {"PATH": os.environ.get("PATH", ""), "LANG": "C.UTF-8"},
        }

    def prepare(self) -> None:
        if self.run_as is not None:
            os.chown(self.data_root, self.run_as.pw_uid, self.run_as.pw_gid)
        pwfile = self.data_root / "pwfile"
        pwfile.write_text(self.password + "\n")
        if self.run_as is not None:
            os.chown(pwfile, self.run_as.pw_uid, self.run_as.pw_gid)
        pwfile.chmod(0o600)
        result = subprocess.run(
            [
                str(self.bin_dir / "initdb"),
                "-D",
                str(self.data_dir),
                "-U",
                self.user,
                f"--pwfile={pwfile}",
                "--auth-host=scram-sha-256",
                "--auth-local=trust",
                "-E",
                "UTF8",
                "--no-instructions",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            **self.popen_kwargs(),
        )
        pwfile.unlink()
        if result.returncode != 0:
            raise ServiceError(f"initdb failed ({result.returncode}):\n{result.stdout[-2000:]}{result.stderr[-2000:]}")

    def command(self) -> list[str]:
        settings = {
            "listen_addresses": "127.0.0.1",
            "port": self.port,
            "unix_socket_directories": self.data_root,
            "max_connections": 200,
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "logging_collector": "off",
        }
        return [
            str(self.bin_dir / "postgres"),
            "-D",
            str(self.data_dir),
            *[arg for key, value in settings.items() for arg in ("-c", f"{key}={value}")],
        ]

    def _connect(self, database: str) -> Any:
        import psycopg2

        return psycopg2.connect(
            host="127.0.0.1", port=self.port, user=self.user, password=self.password, dbname=database, connect_timeout=5
        )

    def ready(self) -> bool:
        self._connect("postgres").close()
        return True

    def after_ready(self) -> None:
        connection = self._connect("postgres")
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{self.database}"')
        connection.close()

    def stop(self) -> None:
        super().stop()
        shutil.rmtree(self.data_root, ignore_errors=True)


class RedisServer(Service):
    """Redis (Debian's ``redis-server``) on 127.0.0.1, nothing persisted: the Celery broker."""

    name = "redis"

    @property
    def url(self) -> str:
        """Celery broker URL, as compose's ``AIRFLOW__CELERY__BROKER_URL`` spells it."""
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        if not Path(binary).exists():
            raise ServiceError("redis-server is not installed: run scripts/system_deps.sh")
        return [
            binary,
            "--bind",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.workdir),
            "--daemonize",
            "no",
        ]

    def ready(self) -> bool:
        import redis

        return bool(redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2).ping())


class S3Server(Service):
    """An S3 API (moto in server mode, its own process) with one bucket: compose's ``minio`` + ``minio-init``."""

    name = "s3"
    access_key = "testing"
    secret_key = "testing"

    def __init__(self, workdir: Path, bucket: str) -> None:
        super().__init__(workdir)
        self.bucket = bucket

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        # moto with atomic conditional PUTs, as S3 (see tests.harness.moto_atomic)
        script = Path(__file__).with_name("moto_atomic.py")
        return [sys.executable, str(script), "-H", "127.0.0.1", "-p", str(self.port)]

    def client(self) -> Any:
        """A boto3 S3 client of this server."""
        return s3_client(self.url)

    def connection(self) -> dict[str, Any]:
        """The Airflow ``aws`` connection of this server (compose's ``AIRFLOW_CONN_AWS_DEFAULT``)."""
        return s3_connection(self.url)

    def ready(self) -> bool:
        self.client().list_buckets()
        return True

    def after_ready(self) -> None:
        self.client().create_bucket(Bucket=self.bucket)


def s3_client(endpoint_url: str) -> Any:
    """A boto3 S3 client of an S3 server (moto's test credentials)."""
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        region_name="us-east-1",
        aws_access_key_id=S3Server.access_key,
        aws_secret_access_key=S3Server.secret_key,
    )


def s3_connection(endpoint_url: str) -> dict[str, Any]:
    """The Airflow ``aws`` connection (as ``AIRFLOW_CONN_<ID>`` JSON's dict) of an S3 server."""
    return {
        "conn_type": "aws",
        "login": S3Server.access_key,
        "password": S3Server.secret_key,
        "extra": {"endpoint_url": endpoint_url, "region_name": "us-east-1"},
    }


def dashscope_connections(emulators: Mapping[str, Any], key: str) -> dict[str, str]:
    """The ``AIRFLOW_CONN_<ID>`` variables of DashScope connections (connection id -> an emulator), all on ``key``."""
    return {
        f"AIRFLOW_CONN_{conn_id.upper()}": json.dumps(
            {"conn_type": "dashscope", "host": emulator.base_url, "password": key}
        )
        for conn_id, emulator in emulators.items()
    }


@contextlib.contextmanager
def emulators(key: str, **speeds: float) -> Iterator[dict[str, Any]]:
    """One emulator per connection id (``conn_id=speed``), each with its own queue, all accepting ``key``."""
    from dashscope_emulator import EmulatorServer

    with contextlib.ExitStack() as stack:
        yield {
            conn_id: stack.enter_context(EmulatorServer(api_keys=[key], port=0, speed=speed))
            for conn_id, speed in speeds.items()
        }
