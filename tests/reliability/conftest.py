"""Fixtures of the reliability tests: sample media over HTTP, and an emulator behind ``dashscope_default``
whose submit requests are tagged with the row they carry (see ``harness``)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness.reliability import KEY, Media, row_of

# A failed task is tried again after 1 s (not the DAG's 30 s default): same retry rules, less waiting.
# Set before the DAG is first parsed; dag.test() parses the DAG files again on every run anyway.
os.environ["TALKING_HEADS_RETRY_DELAY_SECONDS"] = "1"


@pytest.fixture(scope="session")
def media(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Media]:
    from tests.harness.samples import served_samples

    with served_samples(tmp_path_factory.mktemp("reliability-media")) as (base_url, boxes):
        yield Media(base_url, boxes)


@pytest.fixture(scope="session")
def render_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Rendered videos, shared by every emulator of the session (three distinct renders in all)."""
    return tmp_path_factory.mktemp("reliability-renders")


@pytest.fixture
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Shorter hook back-offs (1 s -> 0.2 s first wait): same retry rules, less wall time under faults.

    Five attempts still span > 1 s, the emulator's rate-limit window, so a 429 is always outlived.
    """
    from dashscope_provider.hooks.dashscope import DashScopeHook
    from dashscope_provider.hooks.dashscope_async import DashScopeAsyncHook

    for cls in (DashScopeHook, DashScopeAsyncHook):
        monkeypatch.setitem(cls.__init__.__kwdefaults__, "retry_initial", 0.2)
        monkeypatch.setitem(cls.__init__.__kwdefaults__, "retry_max", 2.0)


@pytest.fixture
def emulator(monkeypatch: pytest.MonkeyPatch, render_cache: Path, fast_retries: None) -> Iterator[Any]:
    """A fresh emulator behind ``dashscope_default``; its submit log entries carry ``row``.

    Speed 100: a task runs in ~0.2 s of wall time, and a 200-row run (~2 min) stays well inside the 24 h
    (simulated) that task ids and result URLs live; the expiry tests jump past that with ``advance``.
    """
    from dashscope_emulator import EmulatorServer, server

    original = server._EmulatorHandler._submit

    def tagged_submit(handler: Any) -> None:
        # The body is read once and cached on the handler, so reading it first changes nothing.
        try:
            handler._record["row"] = row_of(json.loads(handler._read_body())["input"]["image_url"])
        except Exception:
            handler._record["row"] = None
        original(handler)

    monkeypatch.setattr(server._EmulatorHandler, "_submit", tagged_submit)
    with EmulatorServer(api_keys=[KEY], port=0, speed=100, cache_dir=render_cache) as emu:
        monkeypatch.setenv(
            "AIRFLOW_CONN_DASHSCOPE_DEFAULT",
            json.dumps({"conn_type": "dashscope", "host": emu.base_url, "password": KEY}),
        )
        yield emu
