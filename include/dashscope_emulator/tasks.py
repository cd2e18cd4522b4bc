"""Tasks of the video-synthesis queue: the task record, what processing it produced, the queue lanes,
and the account's task list (``GET /api/v1/tasks/``: :func:`list_query`, :meth:`Task.list_entry`).

A task goes PENDING -> RUNNING -> SUCCEEDED / FAILED (or PENDING -> CANCELED). How long it stays
RUNNING is the emulator's model of the real service's minutes: :func:`run_seconds` of simulated time
for a video, :data:`FAIL_SECONDS` for a task whose media fail the checks.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from dashscope_emulator.clock import SERVICE_TZ, format_time
from dashscope_emulator.contract import (
    LIST_DEFAULT_PAGE_SIZE,
    LIST_MAX_PAGE_SIZE,
    LIST_MAX_WINDOW,
    REGION,
    ApiError,
)

#: The statuses the task list filters by.
STATUSES = ("PENDING", "RUNNING", "SUCCEEDED", "FAILED", "CANCELED", "UNKNOWN")

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
    #: When it was created on the task list's clock (:meth:`~.clock.SimClock.real_now`), epoch seconds.
    gmt_create: float = 0.0
    #: The submit request's id.
    request_id: str | None = None

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

    def list_entry(self, speed: float) -> dict[str, Any]:
        """The task as the task list shows it: ids, status, model, ``gmt_create``/``start_time`` in epoch ms.

        ``start_time`` is on the list's clock too: ``gmt_create`` plus the queue wait in wall time.
        """
        started = None
        if self.scheduled_time is not None:
            started = round((self.gmt_create + (self.scheduled_time - self.submit_time) / speed) * 1000)
        return {
            "task_id": self.task_id,
            "status": self.status,
            "model_name": self.model,
            "gmt_create": round(self.gmt_create * 1000),
            "start_time": started,
            "request_id": self.request_id,
            "api_key_id": self.owner,
            "caller_parent_id": self.account,
            "caller_uid": self.owner,
            "region": REGION,
            "user_api_unique_key": self.owner,
        }


@dataclass(frozen=True)
class ListQuery:
    """A task-list request: the window ``[start, end]`` (epoch seconds), filters, the page asked."""

    start: float
    end: float
    model: str | None
    status: str | None
    page_no: int
    page_size: int


def _list_time(name: str, text: str) -> float:
    try:
        return datetime.strptime(text, "%Y%m%d%H%M%S").replace(tzinfo=SERVICE_TZ).timestamp()
    except ValueError:
        raise ApiError(400, "InvalidParameter", f"{name} must be YYYYMMDDhhmmss, got {text!r}.") from None


def _list_int(name: str, text: str | None, default: int, top: int | None = None) -> int:
    if text is None or text == "":
        return default
    if not text.isdigit() or int(text) < 1 or (top is not None and int(text) > top):
        limit = f"1..{top}" if top is not None else "at least 1"
        raise ApiError(400, "InvalidParameter", f"{name} must be an integer {limit}, got {text!r}.")
    return int(text)


def list_query(params: dict[str, str], now: float) -> ListQuery:
    """Read a task-list query string; ``now`` on the list's clock. The times are read as UTC+8 (the page
    names no zone; the service's other times are UTC+8). No window: the last 24 h; one end only: 24 h
    from or to it. A window longer than 24 h, reversed, or a bad value is a 400 ``InvalidParameter``."""
    start_text, end_text = params.get("start_time") or "", params.get("end_time") or ""
    end = _list_time("end_time", end_text) if end_text else None
    start = _list_time("start_time", start_text) if start_text else None
    if start is None and end is None:
        end = now
    if start is None:
        start = end - LIST_MAX_WINDOW  # type: ignore[operator]
    if end is None:
        end = start + LIST_MAX_WINDOW
    if end < start:
        raise ApiError(400, "InvalidParameter", "end_time must not be before start_time.")
    if end - start > LIST_MAX_WINDOW:
        raise ApiError(
            400, "InvalidParameter", "The time range between start_time and end_time must be within 24 hours."
        )
    status = (params.get("status") or "").upper() or None
    if status is not None and status not in STATUSES:
        raise ApiError(400, "InvalidParameter", f"status must be one of {', '.join(STATUSES)}, got {status!r}.")
    return ListQuery(
        start,
        end,
        params.get("model_name") or None,
        status,
        _list_int("page_no", params.get("page_no"), 1),
        _list_int("page_size", params.get("page_size"), LIST_DEFAULT_PAGE_SIZE, LIST_MAX_PAGE_SIZE),
    )


@dataclass
class Lane:
    """One account's queue: FIFO of PENDING task ids and the one RUNNING task."""

    pending: deque[str] = field(default_factory=deque)
    running: str | None = None
