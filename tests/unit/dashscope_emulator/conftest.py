"""Fixtures of the emulator's self-tests.

Most tests share one fast emulator per test module (speed 2000) and take a fresh API key each, so
queues and rate limits don't leak between tests; tests that move simulated time or need a slow clock
get their own server. The sample media are made and served once per session, and rendered videos are
cached in one folder for the session, so each distinct video is rendered once.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dashscope_emulator import EmulatorServer, make_samples, serve_directory

from tests.unit.dashscope_emulator.helpers import KEYS


@pytest.fixture(scope="session")
def media(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The sample media, served over HTTP; ``url``, ``dir`` and ``boxes`` (samples.json)."""
    folder = tmp_path_factory.mktemp("emulator-media")
    make_samples(folder)
    boxes = json.loads((folder / "samples.json").read_text())
    with serve_directory(folder, port=0) as base_url:
        yield {"url": base_url, "dir": folder, "boxes": boxes}


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One render cache for the session: servers that render the same video find it there."""
    return tmp_path_factory.mktemp("emulator-renders")


@pytest.fixture(scope="module")
def emu(cache_dir: Path) -> Iterator[EmulatorServer]:
    """The shared fast emulator of a test module; it accepts every key of ``KEYS``."""
    with EmulatorServer(api_keys=KEYS, port=0, speed=2000, seed=0, cache_dir=cache_dir) as server:
        yield server


_unused_keys = iter(KEYS)


@pytest.fixture
def key() -> str:
    """A key no other test used: its own queue and rate-limit windows."""
    return next(_unused_keys)
