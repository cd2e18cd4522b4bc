"""Test-wide set-up: an isolated Airflow home (SQLite) with this repo's dags/ and plugins/."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]

# Before anything imports airflow: its configuration is read once, at import.
_AIRFLOW_HOME = tempfile.mkdtemp(prefix="talking-heads-airflow-")
os.environ["AIRFLOW_HOME"] = _AIRFLOW_HOME
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(REPO_ROOT / "dags")
os.environ["AIRFLOW__CORE__PLUGINS_FOLDER"] = str(REPO_ROOT / "plugins")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{_AIRFLOW_HOME}/airflow.db"
os.environ.pop("AIRFLOW_CONN_DASHSCOPE_DEFAULT", None)
os.environ.pop("DASHSCOPE_API_KEY", None)

import json  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from typing import TYPE_CHECKING, Any  # noqa: E402

import pytest  # noqa: E402
from xdist.scheduler import LoadFileScheduling  # noqa: E402

if TYPE_CHECKING:
    from dashscope_emulator import EmulatorServer

    from tests.harness.cluster import AirflowCluster

#: The bucket every S3 test writes into, on a moto server in server mode on 127.0.0.1.
S3_BUCKET = "talking-heads-test"

#: The test tier: ``everyday`` (``./test.sh``: every behaviour once) or ``all`` (``./test.sh --all``, CI:
#: every soak at its full count, and the tests marked ``full_tier``). See docs/testing.md.
TIER = os.environ.get("TALKING_HEADS_TEST_TIER", "everyday")


def repetitions(full: int) -> int:
    """How many times a soak repeats its scenario: ``full`` in the full tier, once every day."""
    return full if TIER == "all" else 1


#: The emulators' pace in the tests that run the DAG: a 5 s video's task takes 0.1 s, and a result URL's
#: 24 h last 7 minutes. At 2000 they lasted 43 s, which a loaded machine's run outlived: a download then
#: found its URL expired (a 3.2 matrix dag.test failed so).
DAG_TEST_SPEED = 200


def tier_size(full: int, everyday: int) -> int:
    """A scenario's size (rows, a map limit): ``full`` in the full tier, the smaller ``everyday`` every day,
    which still takes every path the full size takes (e.g. three parts, some dropped answers)."""
    return full if TIER == "all" else everyday


#: Folders whose modules each start real processes (clusters, soaks) and take minutes: on several workers
#: they are handed out first, so the short unit modules fill the gaps instead of one long module running
#: alone at the end.
LONG_FIRST = ("tests/reliability/", "tests/integration/", "tests/browser/")
#: Unit modules that mostly wait, not compute: on an emulated service's pace, QPS pacing, a lease or claim
#: going stale (measured on one worker, each spends at most a quarter of its time on a core, 130 s of wall
#: time in all). On several workers each is handed out right after a long module, so it waits while the long
#: modules keep the cores busy, instead of at the end, where the cores would idle while it waits.
WAITING_MODULES = (
    "tests/unit/dashscope_provider/triggers/test_task_watcher.py",
    "tests/unit/talking_heads/row/test_claims.py",
    "tests/unit/dashscope_provider/hooks/test_pacing.py",
    "tests/unit/talking_heads/row/test_reconcile.py",
    "tests/unit/dashscope_provider/test_rate_limit.py",
    "tests/unit/dashscope_provider/hooks/test_face_detection.py",
    "tests/unit/dashscope_emulator/test_accounts.py",
    "tests/unit/dashscope_provider/triggers/test_dashscope.py",
    "tests/unit/dashscope_provider/hooks/test_task_list.py",
    "tests/unit/talking_heads/orchestration/test_operators.py",
)


def _module(item: pytest.Item) -> str:
    return Path(str(item.fspath)).relative_to(REPO_ROOT).as_posix()


def run_order(modules: list[str]) -> list[str]:
    """The order the workers are handed ``modules`` in: the long ones (:data:`LONG_FIRST`, by folder), each
    followed by one of :data:`WAITING_MODULES` while they last, then the rest as collected."""
    rank = {m: next((r for r, folder in enumerate(LONG_FIRST) if m.startswith(folder)), None) for m in modules}
    long = sorted((m for m in modules if rank[m] is not None), key=lambda m: rank[m])
    waiting = [m for m in modules if m in WAITING_MODULES]
    order: list[str] = []
    for index, module in enumerate(long):
        order += [module, *waiting[index : index + 1]]
    order += waiting[len(long) :]
    return order + [m for m in modules if m not in order]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``full_tier`` run only in the full tier (``./test.sh --all``); on pytest-xdist workers the
    modules are handed out in :func:`run_order` (every worker sorts the same way)."""
    if os.environ.get("PYTEST_XDIST_WORKER"):  # a worker (xdist clears its numprocesses option there)
        position = {m: i for i, m in enumerate(run_order(list(dict.fromkeys(map(_module, items)))))}
        items.sort(key=lambda item: position[_module(item)])  # stable: a module's tests keep their order
    if TIER == "all":
        return
    skip = pytest.mark.skip(reason="full tier only: ./test.sh --all")
    for item in items:
        if item.get_closest_marker("full_tier"):
            item.add_marker(skip)


#: The test modules that share one Airflow cluster (:func:`shared_cluster`): their clusters differed in nothing
#: either needs, and sharing spares a start (about 25 CPU-seconds; half a minute of a busy machine). On
#: pytest-xdist workers they run on one worker, one after the other (:func:`pytest_xdist_make_scheduler`).
SHARED_CLUSTER_MODULES = ("tests/integration/test_continuation.py", "tests/browser/test_ui.py")
#: The shared cluster's ``[core] max_map_length``: test_continuation's table runs in parts of it.
SHARED_MAP_LIMIT = tier_size(20, 6)
#: The API key of every DashScope connection of the shared cluster.
SHARED_KEY = "sk-shared-cluster-0123456789"


class SharedClusterScheduling(LoadFileScheduling):
    """``--dist loadfile`` (a test module at a time per worker), with :data:`SHARED_CLUSTER_MODULES` handed out
    as one unit: a session fixture lives in one worker, so the modules that share it must run there."""

    def _split_scope(self, nodeid: str) -> str:
        module = super()._split_scope(nodeid)
        return SHARED_CLUSTER_MODULES[0] if module in SHARED_CLUSTER_MODULES else module


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> LoadFileScheduling | None:
    """:class:`SharedClusterScheduling` where ``--dist loadfile`` is asked for (``./test.sh``)."""
    return SharedClusterScheduling(config, log) if config.getvalue("dist") == "loadfile" else None


@dataclass(frozen=True)
class SharedCluster:
    """The shared cluster and what it was started with: ``emulators`` maps each DashScope connection id to its
    emulator (all on :data:`SHARED_KEY`); ``media`` serves the sample media, whose boxes are ``boxes``."""

    cluster: AirflowCluster
    emulators: dict[str, EmulatorServer]
    media: str
    boxes: dict[str, Any]


@pytest.fixture(scope="session")
def shared_cluster(
    tmp_path_factory: pytest.TempPathFactory, migrated_home: Path, moto_s3: str
) -> Iterator[SharedCluster]:
    """One real cluster (api-server, scheduler, dag-processor, triggerer; SQLite) for
    :data:`SHARED_CLUSTER_MODULES`, ``talking_heads`` parsed and unpaused, no scheduled runs. Connections:
    ``dashscope_cont`` (an emulator whose task runs ~0.4 s: most waits find their task queued behind others on
    the one key, and defer), ``dashscope_slow`` (tasks of several seconds, ~10 s in the full tier, queued
    behind each other: every wait defers to the triggerer), ``dashscope_default`` (the fast pace of the
    ``dag.test()`` tests), ``aws_default`` (the session's moto S3). The UI's connection **Test** button is on,
    and the outcome step finds the REST API for run notes (``[api] base_url``)."""
    from tests.harness.cluster import AirflowCluster
    from tests.harness.samples import served_samples
    from tests.harness.services import dashscope_connections, emulators, s3_connection

    root = tmp_path_factory.mktemp("shared-cluster")
    speeds = {"dashscope_cont": 50, "dashscope_slow": tier_size(2, 4), "dashscope_default": DAG_TEST_SPEED}
    with served_samples(root / "media") as (media, boxes), emulators(SHARED_KEY, **speeds) as services:
        env = {
            **dashscope_connections(services, SHARED_KEY),
            "AIRFLOW_CONN_AWS_DEFAULT": json.dumps(s3_connection(moto_s3)),
            "AIRFLOW__CORE__MAX_MAP_LENGTH": str(SHARED_MAP_LIMIT),
            "AIRFLOW__CORE__TEST_CONNECTION": "Enabled",
            "TALKING_HEADS_RETRY_DELAY_SECONDS": "1",
        }
        cluster = AirflowCluster(root / "airflow", env, pool_slots=8, scheduled_runs=False, migrated_home=migrated_home)
        cluster.env["AIRFLOW__API__BASE_URL"] = f"http://127.0.0.1:{cluster.port}"
        with cluster.running("talking_heads"):
            yield SharedCluster(cluster, services, media, boxes)


@pytest.fixture(scope="session")
def airflow_db() -> str:
    """A migrated metadata database, created once per session for the tests that run DAGs."""
    from airflow.utils.db import initdb

    initdb()
    return os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]


@pytest.fixture(scope="session")
def migrated_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated Airflow home (SQLite) that the test clusters start from (``AirflowCluster(migrated_home=...)``),
    made once per test run: pytest-xdist's workers share it through their common temporary folder."""
    from tests.harness.cluster import migrated_home

    return migrated_home(_run_folder(tmp_path_factory) / "migrated-airflow-home")


def _run_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of this test run that pytest-xdist's workers share (each worker's basetemp is one of its)."""
    folder = tmp_path_factory.getbasetemp()
    return folder.parent if os.environ.get("PYTEST_XDIST_WORKER") else folder


@pytest.fixture(autouse=True)
def fresh_account_registries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts with the process-wide registries of a new triggerer: no account watchers, no rate
    limiters. They are keyed by (base URL, account), and a test's emulator on ``port=0`` can get a port an
    earlier test's emulator had: its watcher (from another event loop) or a 429 hold would carry over."""
    from dashscope_provider import rate_limit
    from dashscope_provider.triggers import task_watcher

    monkeypatch.setattr(task_watcher, "_WATCHERS", {})
    monkeypatch.setattr(rate_limit, "_LIMITERS", {})


@pytest.fixture(scope="session", autouse=True)
def emulator_render_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One render cache for every emulator of the run that is given no ``cache_dir``
    (``$DASHSCOPE_EMULATOR_RENDER_CACHE``): renders are cached by content, and the tests' tables use a handful
    of portraits and clips, so each video is rendered once per run instead of once per emulator (an ffmpeg
    process of about 0.4 CPU-s on a busy machine; docs/testing.md)."""
    from dashscope_emulator.contract import RENDER_CACHE_ENV

    cache = _run_folder(tmp_path_factory) / "emulator-renders"
    os.environ[RENDER_CACHE_ENV] = str(cache)
    return cache


@pytest.fixture(scope="session")
def moto_s3() -> Iterator[str]:
    """A real S3-compatible server (moto in server mode) on 127.0.0.1 with one bucket; yields its URL."""
    from moto.server import ThreadedMotoServer

    from tests.harness.moto_atomic import make_puts_atomic
    from tests.harness.services import s3_client

    make_puts_atomic()  # S3's one-winner conditional PUTs (moto alone lets racing PUTs both win)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    client = s3_client(endpoint)
    client.create_bucket(Bucket=S3_BUCKET)
    try:
        yield endpoint
    finally:
        server.stop()
