"""Progress lines of long steps (talking_heads.progress), at a steady pace."""

from __future__ import annotations

import logging

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
