"""Simulated time and its format (:mod:`dashscope_emulator.clock`)."""

from __future__ import annotations

import time

import pytest
from dashscope_emulator.clock import SimClock, format_time


def test_format_time_is_utc_plus_8_with_milliseconds() -> None:
    assert format_time(0) == "1970-01-01 08:00:00.000"
    assert format_time(1_757_572_418.7164) == "2025-09-11 14:33:38.716"


def test_the_task_lists_clock_is_the_wall_clock_even_when_start_was_preempted(monkeypatch: pytest.MonkeyPatch) -> None:
    # A thread preempted between the clock's two reads at start (50 ms here; tens of ms on a loaded machine)
    # must not date the tasks it creates before the client's own wall clock: a task made just after a
    # client opened its listing window would fall outside it.
    real_monotonic = time.monotonic
    late_reads = iter([real_monotonic() + 0.05])
    monkeypatch.setattr(time, "monotonic", lambda: next(late_reads, None) or real_monotonic())
    clock = SimClock(speed=100)
    assert abs(clock.real_now() - time.time()) < 0.01
    clock.advance(3600)
    assert abs(clock.real_now() - (time.time() + 3600)) < 0.01
