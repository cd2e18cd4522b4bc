"""Fixtures of the emulator's self-tests.

Most tests share one fast emulator per test module (speed 2000) and take a fresh API key each, so
queues and rate limits don't leak between tests; tests that move simulated time or need a slow clock
get their own server. The sample media are made and served once per session, and rendered videos are
cached in one folder for the session, so each distinct video is rendered once.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dashscope_emulator import EmulatorServer

from tests.harness.samples import served_samples
from tests.unit.dashscope_emulator.helpers import KEYS, PHOTO_OVAL


@pytest.fixture(scope="session")
def media(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The sample media, served over HTTP; ``url``, ``dir`` and ``boxes`` (samples.json)."""
    folder = tmp_path_factory.mktemp("emulator-media")
    with served_samples(folder) as (base_url, boxes):
        yield {"url": base_url, "dir": folder, "boxes": boxes}


@pytest.fixture(scope="session")
def pictures(media: dict[str, Any]) -> dict[str, str]:
    """Pictures the samples don't have, served with them: name -> URL.

    ``blank.png`` (one colour), ``dark.png`` (almost black), ``photo.png`` (one skin-toned oval, the
    ``oval`` box, on blue), ``two.png`` (two such ovals), ``close.png`` (an oval filling the picture).
    """
    from PIL import Image, ImageDraw

    def ovals(size: tuple[int, int], boxes: list[tuple[int, int, int, int]], name: str) -> None:
        image = Image.new("RGB", size, (40, 90, 160))
        draw = ImageDraw.Draw(image)
        for box in boxes:
            draw.ellipse(box, fill=(230, 180, 150))
        image.save(media["dir"] / name)

    Image.new("RGB", (600, 600), (250, 250, 250)).save(media["dir"] / "blank.png")
    Image.new("RGB", (600, 600), (12, 10, 14)).save(media["dir"] / "dark.png")
    ovals((800, 600), [PHOTO_OVAL], "photo.png")
    ovals((900, 600), [(150, 150, 310, 350), (550, 150, 710, 350)], "two.png")
    ovals((600, 600), [(20, 20, 580, 640)], "close.png")
    names = ("blank.png", "dark.png", "photo.png", "two.png", "close.png")
    return {name: f"{media['url']}/{name}" for name in names}


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
