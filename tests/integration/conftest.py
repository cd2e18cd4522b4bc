"""Fixtures of the ``dag.test()`` tests: the emulator as ``dashscope_default``."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from dashscope_emulator import EmulatorServer

#: The API key of the ``dashscope_default`` connection these tests use (searched for in every output).
KEY = "sk-dag-test-0123456789"


@pytest.fixture
def emulator(monkeypatch: pytest.MonkeyPatch) -> Iterator[EmulatorServer]:
    """A fast emulator (speed 2000) that ``dashscope_default`` points at, with :data:`KEY`."""
    with EmulatorServer(api_keys=[KEY], port=0, speed=2000) as emu:
        monkeypatch.setenv(
            "AIRFLOW_CONN_DASHSCOPE_DEFAULT",
            json.dumps({"conn_type": "dashscope", "host": emu.base_url, "password": KEY}),
        )
        yield emu
