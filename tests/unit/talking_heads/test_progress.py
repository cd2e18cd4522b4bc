"""Progress lines of long steps (talking_heads.progress): at a steady pace whatever each item takes, with the
count, the share and the seconds; the last line always."""

from __future__ import annotations

import logging
import re
import time

import pytest
from talking_heads.progress import Progress


def test_progress_logs_at_a_steady_pace(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="talking_heads.progress")
    progress = Progress("plan: rows decided", 3000, every=0.0)
    for _ in range(3):
        progress.step(1000)
    progress.finish()
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0].startswith("plan: rows decided: 1,000/3,000 (33%), ")
    assert lines[-1].startswith("plan: rows decided: 3,000/3,000 (100%), ")
    quiet = Progress("x", 10, every=3600)
    quiet.step(10)
    assert len(caplog.records) == 4  # nothing between two paces; finish() always says where it ended


def test_a_line_every_pace_however_many_items_pass(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="talking_heads.progress")
    progress = Progress("pre-flight: media checked", 1_000_000, every=0.2)
    deadline = time.monotonic() + 0.7
    while time.monotonic() < deadline:
        progress.step()  # many fast items: still one line per pace, not per item
    lines = [r.getMessage() for r in caplog.records]
    assert 2 <= len(lines) <= 4
    seconds = [float(re.search(r", (\d+\.\d) s$", line).group(1)) for line in lines]  # type: ignore[union-attr]
    assert seconds == sorted(seconds) and seconds[0] >= 0.2


def test_the_line_has_the_count_the_share_and_the_seconds(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("a.step")
    caplog.set_level(logging.INFO, logger="a.step")
    progress = Progress("plan: rows decided", 0, logger=logger)
    progress.finish()  # an empty table: no share of nothing
    assert re.fullmatch(r"plan: rows decided: 0/0, \d+\.\d s", caplog.records[-1].getMessage())
    assert [r.name for r in caplog.records] == ["a.step"]  # the step's own logger, when given
    partial = Progress("x", 8, every=3600)
    partial.step(3)
    assert re.fullmatch(r"x: 3/8 \(38%\), \d+\.\d s", partial.line())
