"""What DashScope sends and answers: endpoints, task statuses, and the parsed answers of its task API.

Shared by the sync and async hooks; nothing here does I/O. See the reference pages: ``POST
/api/v1/services/aigc/image2video/video-synthesis`` creates a task (header ``X-DashScope-Async: enable``),
``GET /api/v1/tasks/{task_id}`` reports it, ``POST /api/v1/tasks/{task_id}/cancel`` cancels a ``PENDING``
one.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from enum import StrEnum
from typing import Any

from dashscope_provider.exceptions import DashScopeAPIError

DEFAULT_BASE_URL = "https://dashscope.aliyuncs.com"
SUBMIT_ENDPOINT = "api/v1/services/aigc/image2video/video-synthesis"
TASK_ENDPOINT = "api/v1/tasks/{task_id}"
CANCEL_ENDPOINT = "api/v1/tasks/{task_id}/cancel"

#: A task id that never exists: querying it answers 200 ``UNKNOWN`` when the key is accepted.
PROBE_TASK_ID = "00000000-0000-0000-0000-000000000000"


class TaskStatus(StrEnum):
    """A task's ``task_status``. A ``StrEnum``: members compare equal to (and serialize as) their strings."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELED = "CANCELED"
    UNKNOWN = "UNKNOWN"

    @property
    def is_terminal(self) -> bool:
        """Whether a task in this status will not change any more."""
        return self in TERMINAL_STATUSES


TASK_STATUSES: tuple[TaskStatus, ...] = tuple(TaskStatus)
TERMINAL_STATUSES: frozenset[TaskStatus] = frozenset(
    {TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.CANCELED, TaskStatus.UNKNOWN}
)


def task_status(value: Any) -> TaskStatus | str:
    """``value`` upper-cased, as a :class:`TaskStatus` when it is one (a status this code does not know stays
    a plain string rather than failing the parse)."""
    text = str(value).upper()
    try:
        return TaskStatus(text)
    except ValueError:
        return text


def optional_str(value: Any) -> str | None:
    """``str(value)``, or None for None."""
    return None if value is None else str(value)


@dataclass(frozen=True)
class SubmittedTask:
    """The answer to a submission.

    :param task_id: the new task's id.
    :param task_status: its status (``PENDING``).
    :param request_id: the service's request id.
    """

    task_id: str
    task_status: str
    request_id: str | None = None


@dataclass(frozen=True)
class DashScopeTask:
    """One task as the query API reports it, the same for ``emo-v1`` and ``emoji-v1``.

    The two models answer in different shapes (``output.results.video_url`` with a float duration and
    ratio ``1:1``/``3:4`` for emo-v1; ``output.video_url`` with an integer duration and ratio
    ``standard`` for emoji-v1); this class holds either, with ``video_duration`` always a float.
    JSON-serializable through :meth:`to_dict` (XCom, trigger events) and back with :meth:`from_dict`.

    :param task_id: the task id.
    :param status: its status, a :class:`TaskStatus` (a string the enum does not know is kept as is).
    :param video_url: the pre-signed result URL (lives 24 h) once ``SUCCEEDED``.
    :param video_duration: billed seconds (``usage.video_duration``).
    :param video_ratio: ``1:1``/``3:4`` (emo-v1) or ``standard`` (emoji-v1).
    :param code: the failure code of a ``FAILED`` task.
    :param message: the failure message of a ``FAILED`` task.
    :param submit_time: when it was submitted (service time, UTC+8).
    :param scheduled_time: when it started running.
    :param end_time: when it ended.
    :param request_id: the service's request id of the query.
    """

    task_id: str
    status: TaskStatus | str
    video_url: str | None = None
    video_duration: float | None = None
    video_ratio: str | None = None
    code: str | None = None
    message: str | None = None
    submit_time: str | None = None
    scheduled_time: str | None = None
    end_time: str | None = None
    request_id: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "status", task_status(self.status))

    @property
    def is_terminal(self) -> bool:
        """Whether the task will not change any more (``SUCCEEDED``, ``FAILED``, ``CANCELED``, ``UNKNOWN``)."""
        return self.status in TERMINAL_STATUSES

    @property
    def succeeded(self) -> bool:
        """Whether the task ended ``SUCCEEDED`` (it has a video)."""
        return self.status == TaskStatus.SUCCEEDED

    def to_dict(self) -> dict[str, Any]:
        """A plain dict of JSON types (the field names of this class; the status a plain ``str``)."""
        return {**asdict(self), "status": str(self.status)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DashScopeTask:
        """Rebuild from :meth:`to_dict` output; unknown keys are ignored."""
        names = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in names})


def parse_task(payload: Any) -> DashScopeTask:
    """Normalise a query answer (either model's shape) into a :class:`DashScopeTask`.

    :raises ValueError: if the payload has no ``output.task_id``/``output.task_status``.
    """
    if not isinstance(payload, dict) or not isinstance(payload.get("output"), dict):
        raise ValueError("the answer has no 'output' object")
    output: dict[str, Any] = payload["output"]
    if not output.get("task_id") or not output.get("task_status"):
        raise ValueError("the answer has no output.task_id / output.task_status")
    usage = payload.get("usage") if isinstance(payload.get("usage"), dict) else {}
    results = output.get("results") if isinstance(output.get("results"), dict) else {}
    # emo-v1 nests the URL under output.results, emoji-v1 puts it on output itself.
    video_url = results.get("video_url") or output.get("video_url")
    duration = usage.get("video_duration")
    try:
        video_duration = float(duration) if duration is not None and not isinstance(duration, bool) else None
    except (TypeError, ValueError):
        video_duration = None
    return DashScopeTask(
        task_id=str(output["task_id"]),
        status=task_status(output["task_status"]),
        video_url=optional_str(video_url),
        video_duration=video_duration,
        video_ratio=optional_str(usage.get("video_ratio")),
        code=optional_str(output.get("code")),
        message=optional_str(output.get("message")),
        submit_time=optional_str(output.get("submit_time")),
        scheduled_time=optional_str(output.get("scheduled_time")),
        end_time=optional_str(output.get("end_time")),
        request_id=optional_str(payload.get("request_id")),
    )


def parse_submission(payload: Any) -> SubmittedTask:
    """Read a submission answer ``{"output": {"task_id", "task_status"}, "request_id"}``.

    :raises ValueError: if it has no task id.
    """
    output = payload.get("output") if isinstance(payload, dict) else None
    if not isinstance(output, dict) or not output.get("task_id"):
        raise ValueError("the answer has no output.task_id")
    return SubmittedTask(
        task_id=str(output["task_id"]),
        task_status=str(output.get("task_status") or TaskStatus.PENDING),
        request_id=optional_str(payload.get("request_id")),
    )


def api_error(status: int, body: str, content_type: str | None, operation: str) -> DashScopeAPIError:
    """The :class:`DashScopeAPIError` for an HTTP error answer.

    With DashScope's JSON body (``request_id``, ``code``, ``message``) it carries those; otherwise
    ``code`` is None and the message only describes the answer (its body, e.g. a gateway's HTML page,
    is not copied).
    """
    try:
        payload = json.loads(body) if body else None
    except ValueError:
        payload = None
    if isinstance(payload, dict) and payload.get("code"):
        return DashScopeAPIError(
            status,
            str(payload["code"]),
            optional_str(payload.get("message")),
            optional_str(payload.get("request_id")),
            operation,
        )
    kind = (content_type or "no content type").split(";")[0].strip()
    return DashScopeAPIError(
        status, None, f"answer without a DashScope error body ({kind}, {len(body)} chars)", None, operation
    )
