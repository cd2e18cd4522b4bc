"""Simulated time and its format (:mod:`dashscope_emulator.clock`)."""

from __future__ import annotations

from dashscope_emulator.clock import format_time


def test_format_time_is_utc_plus_8_with_milliseconds() -> None:
    assert format_time(0) == "1970-01-01 08:00:00.000"
    assert format_time(1_757_572_418.7164) == "2025-09-11 14:33:38.716"
