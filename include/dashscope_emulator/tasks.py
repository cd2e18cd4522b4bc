"""Tasks of the video-synthesis queue: the task record, what processing it produced, the queue lanes.

A task goes PENDING -> RUNNING -> SUCCEEDED / FAILED (or PENDING -> CANCELED). How long it stays
RUNNING is the emulator's model of the real service's minutes: :func:`run_seconds` of simulated time
for a video, :data:`FAIL_SECONDS` for a task whose media fail the checks.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dashscope_emulator.clock import format_time

#: A task whose media fail the checks ends this many simulated seconds after it started RUNNING.
FAIL_SECONDS = 2.0


def run_seconds(video_duration: float) -> float:
    """Simulated seconds a task stays RUNNING before it can succeed: ``8 + 2.5 * video_duration``."""
    return 8.0 + 2.5 * float(video_duration)


@dataclass
class Outcome:
    """What processing a RUNNING task produced: a video, or a failure code and message."""

    code: str | None = None
    message: str | None = None
    video_path: Path | None = None
    video_duration: float | int | None = None
    video_ratio: str | None = None

    @property
    def succeeded(self) -> bool:
        return self.code is None

    def busy_seconds(self) -> float:
        """How long (simulated) the task occupies its queue from RUNNING to the end."""
        return run_seconds(self.video_duration or 0) if self.succeeded else FAIL_SECONDS


@dataclass
class Task:
    """One submitted task. Times are simulated epoch seconds; ``owner`` is the key's fingerprint."""

    task_id: str
    owner: str
    account: str
    model: str
    input: dict[str, Any]
    parameters: dict[str, Any]
    submit_time: float
    status: str = "PENDING"
    scheduled_time: float | None = None
    end_time: float | None = None
    outcome: Outcome | None = None
    expires: int | None = None

    def public(self) -> dict[str, Any]:
        """The task as the admin API shows it (no key, no file paths)."""
        outcome = self.outcome if self.status in ("SUCCEEDED", "FAILED") else None
        return {
            "task_id": self.task_id,
            "status": self.status,
            "model": self.model,
            "input": dict(self.input),
            "parameters": dict(self.parameters),
            "key_fingerprint": self.owner,
            "account": self.account,
            "submit_time": format_time(self.submit_time),
            "scheduled_time": format_time(self.scheduled_time) if self.scheduled_time is not None else None,
            "end_time": format_time(self.end_time) if self.end_time is not None else None,
            "code": outcome.code if outcome else None,
            "message": outcome.message if outcome else None,
            "video_duration": outcome.video_duration if outcome else None,
            "video_ratio": outcome.video_ratio if outcome else None,
        }


@dataclass
class Lane:
    """One account's queue: FIFO of PENDING task ids and the one RUNNING task."""

    pending: deque[str] = field(default_factory=deque)
    running: str | None = None
