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

from collections.abc import Iterator  # noqa: E402

import pytest  # noqa: E402

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


def _long_first(item: pytest.Item) -> int:
    path = Path(str(item.fspath)).relative_to(REPO_ROOT).as_posix()
    return next((rank for rank, folder in enumerate(LONG_FIRST) if path.startswith(folder)), len(LONG_FIRST))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``full_tier`` run only in the full tier (``./test.sh --all``); on pytest-xdist workers the
    long modules come first (:data:`LONG_FIRST`; every worker sorts the same way)."""
    if os.environ.get("PYTEST_XDIST_WORKER"):  # a worker (xdist clears its numprocesses option there)
        items.sort(key=_long_first)  # stable: a module's tests keep their order
    if TIER == "all":
        return
    skip = pytest.mark.skip(reason="full tier only: ./test.sh --all")
    for item in items:
        if item.get_closest_marker("full_tier"):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def airflow_db() -> str:
    """A migrated metadata database, created once per session for the tests that run DAGs."""
    from airflow.utils.db import initdb

    initdb()
    return os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]


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
