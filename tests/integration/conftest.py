"""Fixtures of the ``dag.test()`` tests: the emulator as ``dashscope_default``, ``aws_default`` on moto, and the
sample media over HTTP."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from dashscope_emulator import EmulatorServer

from tests.conftest import DAG_TEST_SPEED
from tests.harness.samples import served_samples
from tests.harness.services import s3_connection

#: The API key of the ``dashscope_default`` connection these tests use (searched for in every output).
KEY = "sk-dag-test-0123456789"


@pytest.fixture
def emulator(monkeypatch: pytest.MonkeyPatch) -> Iterator[EmulatorServer]:
    """A fast emulator (:data:`DAG_TEST_SPEED`) that ``dashscope_default`` points at, with :data:`KEY`."""
    with EmulatorServer(api_keys=[KEY], port=0, speed=DAG_TEST_SPEED) as emu:
        monkeypatch.setenv(
            "AIRFLOW_CONN_DASHSCOPE_DEFAULT",
            json.dumps({"conn_type": "dashscope", "host": emu.base_url, "password": KEY}),
        )
        yield emu


@pytest.fixture
def aws_default(moto_s3: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """``aws_default`` -> the session's moto S3 server, from the environment; returns the server's URL."""
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", json.dumps(s3_connection(moto_s3)))
    return moto_s3


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict]]:
    """The sample media over HTTP, once per test module: ``(base_url, boxes)`` (samples.json)."""
    with served_samples(tmp_path_factory.mktemp("media")) as (base_url, boxes):
        yield base_url, boxes
