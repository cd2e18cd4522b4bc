"""The harness's ways of starting fewer things: a cluster from a copy of one migrated home, and the modules that
share a cluster handed to one pytest-xdist worker."""

from __future__ import annotations

import configparser
import sqlite3
from pathlib import Path

import pytest

from tests.conftest import SHARED_CLUSTER_MODULES, SharedClusterScheduling
from tests.harness.cluster import AirflowCluster


def _scope(nodeid: str) -> str:
    # The scope of a test id is a pure function of it: no scheduler state is needed to ask.
    return SharedClusterScheduling._split_scope(object.__new__(SharedClusterScheduling), nodeid)


def test_modules_that_share_a_cluster_are_one_unit_and_others_stay_per_module() -> None:
    continuation, browser = SHARED_CLUSTER_MODULES
    shared = {_scope(f"{continuation}::test_a"), _scope(f"{browser}::test_b[param-1]"), _scope(f"{browser}::test_c")}
    assert len(shared) == 1
    other = "tests/integration/test_kill_burst.py"
    assert _scope(f"{other}::test_x[1]") == _scope(f"{other}::test_y") == other
    assert _scope(f"{other}::test_x") not in shared


def test_a_cluster_starts_from_a_copy_of_the_migrated_home_with_its_own_paths(
    migrated_home: Path, tmp_path: Path
) -> None:
    home = tmp_path / "cluster"
    home.mkdir()
    cluster = AirflowCluster(home, migrated_home=migrated_home)
    cluster._migrate()

    with sqlite3.connect(home / "airflow.db") as db:  # migrated: Airflow's tables and its default pool
        assert db.execute("SELECT pool FROM slot_pool").fetchall() == [("default_pool",)]
        assert db.execute("SELECT count(*) FROM alembic_version").fetchone() == (1,)
    config = (home / "airflow.cfg").read_text()
    assert str(migrated_home) not in config  # the paths name the cluster's home, not the template's
    parsed = configparser.ConfigParser(interpolation=None)
    parsed.read_string(config)
    assert parsed["logging"]["base_log_folder"] == str(home / "logs")
    assert parsed["api_auth"]["jwt_secret"]  # one secret in the file, read by every component


def test_a_migrated_home_is_for_sqlite_clusters_only(migrated_home: Path, tmp_path: Path) -> None:
    postgres = {"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "postgresql+psycopg2://u:p@127.0.0.1:1/airflow"}
    cluster = AirflowCluster(tmp_path, postgres, migrated_home=migrated_home)
    with pytest.raises(ValueError, match="this cluster's is postgresql"):
        cluster._migrate()
