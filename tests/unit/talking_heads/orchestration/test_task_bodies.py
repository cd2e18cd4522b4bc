"""The bodies of talking_heads' Python tasks (talking_heads.orchestration.task_bodies): the plan log names
connections of one account."""

from __future__ import annotations

import json

import pytest
from talking_heads.orchestration.task_bodies import log_shared_accounts

RUN = "manual__2026-12-01T00:00:00+00:00"


def test_the_plan_log_names_connections_of_one_account(monkeypatch: pytest.MonkeyPatch) -> None:
    def conn(key: str, account: str | None = None) -> str:
        extra = {"account": account} if account else {}
        return json.dumps({"conn_type": "dashscope", "host": "http://127.0.0.1:1", "password": key, "extra": extra})

    monkeypatch.setenv("AIRFLOW_CONN_DS_A1", conn("sk-one", "acct-1"))
    monkeypatch.setenv("AIRFLOW_CONN_DS_A1_BIS", conn("sk-two", "acct-1"))
    monkeypatch.setenv("AIRFLOW_CONN_DS_SAME_KEY", conn("sk-three"))
    monkeypatch.setenv("AIRFLOW_CONN_DS_SAME_KEY_BIS", conn("sk-three"))  # no account named: the key's
    monkeypatch.setenv("AIRFLOW_CONN_DS_OTHER", conn("sk-four", "acct-2"))
    lines: list[str] = []
    ids = ["ds_a1", "ds_a1_bis", "ds_same_key", "ds_same_key_bis", "ds_other", "ds_missing"]
    shared = log_shared_accounts(ids, lines.append)
    assert shared["acct-1"] == ["ds_a1", "ds_a1_bis"]
    assert [v for k, v in shared.items() if k.startswith("key-")] == [["ds_same_key", "ds_same_key_bis"]]
    assert len(shared) == 2
    assert "Connections ds_a1, ds_a1_bis belong to one Alibaba Cloud account (acct-1)" in lines[0]
    assert "add no parallelism" in lines[0]
    assert "sk-three" not in "\n".join(lines)  # the key is never logged, only its fingerprint
    assert lines[-1] == "Rows are spread over 6 connections of 3 account(s)"

    lines.clear()
    assert log_shared_accounts(["ds_a1", "ds_other"], lines.append) == {}
    assert lines == ["Rows are spread over 2 connections of 2 account(s)"]
