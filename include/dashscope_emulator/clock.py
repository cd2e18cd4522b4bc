"""Simulated time for the emulator.

The real service takes minutes per video and keeps task ids and result URLs for 24 hours. Tests and
demos can't wait that long, so the emulator runs on a clock that goes ``speed`` times faster than the
wall clock and can be pushed forward (:meth:`SimClock.advance`) to reach the 24 h expiry at once.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta, timezone

#: The service reports its times in UTC+8 (Beijing time).
SERVICE_TZ = timezone(timedelta(hours=8))


class SimClock:
    """``now = t0 + wall_elapsed * speed + advanced``, in epoch seconds; ``t0`` is the wall time at start."""

    def __init__(self, speed: float = 1.0, start: float | None = None) -> None:
        if speed <= 0:
            raise ValueError(f"speed must be > 0, got {speed}")
        self.speed = float(speed)
        self._t0 = time.time() if start is None else float(start)
        # Monotonic, so a wall-clock jump (NTP) doesn't move simulated time backwards.
        self._m0 = time.monotonic()
        self._offset = 0.0
        self._lock = threading.Lock()

    def now(self) -> float:
        """Simulated time, epoch seconds."""
        with self._lock:
            offset = self._offset
        return self._t0 + (time.monotonic() - self._m0) * self.speed + offset

    def advance(self, seconds: float) -> float:
        """Move simulated time forward by ``seconds`` (never backwards); returns the new ``now()``."""
        if seconds < 0:
            raise ValueError(f"can only advance forward, got {seconds}")
        with self._lock:
            self._offset += float(seconds)
        return self.now()

    def real_now(self) -> float:
        """The wall clock plus what :meth:`advance` added, epoch seconds: the task list's time base.

        A client matches a task to its request by creation time on its own (wall) clock, so the task
        list's ``gmt_create`` and window use this, not the sped-up simulated time (which at ``speed``
        100 runs hours ahead within minutes). It reads the wall clock itself: ``t0`` plus monotonic time lags
        it by however long the thread was preempted between the two reads at start (tens of ms on a loaded
        machine), enough to date a task made just after a client's window opened before it.
        """
        with self._lock:
            offset = self._offset
        return time.time() + offset

    def wall_seconds(self, sim_seconds: float) -> float:
        """How long the wall clock takes to cover ``sim_seconds`` of simulated time."""
        return max(0.0, sim_seconds) / self.speed


def format_time(epoch: float) -> str:
    """``YYYY-MM-DD HH:MM:SS.mmm`` in UTC+8, the service's format for submit/scheduled/end times."""
    total_ms = round(epoch * 1000)
    seconds, millis = divmod(total_ms, 1000)
    stamp = datetime.fromtimestamp(seconds, SERVICE_TZ).strftime("%Y-%m-%d %H:%M:%S")
    return f"{stamp}.{millis:03d}"
