"""EmulatorServer (:mod:`dashscope_emulator.server`): configuration and defaults."""

from __future__ import annotations

import uuid

import pytest
from dashscope_emulator import EmulatorServer

from tests.unit.dashscope_emulator.helpers import Client


def test_default_key_is_sk_emulator(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DASHSCOPE_EMULATOR_API_KEYS", raising=False)
    with EmulatorServer(port=0) as server:
        answer = Client(server.base_url, "sk-emulator").query(str(uuid.uuid4()))
        assert answer["output"]["task_status"] == "UNKNOWN"
    monkeypatch.setenv("DASHSCOPE_EMULATOR_API_KEYS", "sk-env-1, sk-env-2")
    with EmulatorServer(port=0) as server:
        assert server.key_count == 2
        assert Client(server.base_url, "sk-env-2").query_raw(str(uuid.uuid4())).status_code == 200
        assert Client(server.base_url, "sk-emulator").query_raw(str(uuid.uuid4())).status_code == 401
