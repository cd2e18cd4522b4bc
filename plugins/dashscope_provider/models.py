"""What DashScope sends and answers: endpoints, task statuses, and the parsed answers of its task API.

Shared by the sync and async hooks; nothing here does I/O. See the reference pages: ``POST
/api/v1/services/aigc/image2video/video-synthesis`` creates a task (header ``X-DashScope-Async: enable``),
``GET /api/v1/tasks/{task_id}`` reports it, ``POST /api/v1/tasks/{task_id}/cancel`` cancels a ``PENDING``
one, ``GET /api/v1/tasks/`` lists the account's tasks of a window (:class:`ListedTask`);
``POST /api/v1/services/aigc/image2video/face-detect`` (synchronous) finds the face boxes those tasks need
(``detection-and-limits.md``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime, timedelta, timezone
from enum import StrEnum
from typing import Any, TypeVar

from dashscope_provider.exceptions import DashScopeAPIError, DashScopeConnectionError

T = TypeVar("T")

#: ``[x1, y1, x2, y2]`` in pixels.
Box = tuple[int, int, int, int]

DEFAULT_BASE_URL = "https://dashscope.aliyuncs.com"
SUBMIT_ENDPOINT = "api/v1/services/aigc/image2video/video-synthesis"
TASK_ENDPOINT = "api/v1/tasks/{task_id}"
CANCEL_ENDPOINT = "api/v1/tasks/{task_id}/cancel"
TASK_LIST_ENDPOINT = "api/v1/tasks/"
#: The service's times are UTC+8; the task list's ``start_time``/``end_time`` name no zone, so they are
#: sent in UTC+8 and the window is widened by :data:`TASK_LIST_MARGIN` (``gmt_create`` decides exactly).
SERVICE_TZ = timezone(timedelta(hours=8))
TASK_LIST_MARGIN = timedelta(minutes=15)
#: The longest window one task-list call may ask for.
TASK_LIST_MAX_WINDOW = timedelta(hours=24)
FACE_DETECT_ENDPOINT = "api/v1/services/aigc/image2video/face-detect"

#: The video-synthesis models: ``emo-v1`` (a portrait and a voice clip), ``emoji-v1`` (a portrait and a
#: template, ``driven_id``).
MODELS: tuple[str, ...] = ("emo-v1", "emoji-v1")
#: emo-v1's ``parameters.style_level`` values; the first is the service's default.
STYLE_LEVELS: tuple[str, ...] = ("normal", "calm", "active")
#: The template ids emoji-v1's ``input.driven_id`` takes (the appendix of the emoji-v1 reference, page 004).
EMOJI_DRIVEN_IDS: frozenset[str] = frozenset(
    {
        "mengwa_kaixin",
        "dagong_zhuakuang",
        "mengwa_dengyan",
        "dagong_wunai",
        "mengwa_gandong",
        "dagong_weixiao",
        "mengwa_renzhen_1",
        "dagong_ganji",
        "mengwa_jidong",
        "jingdian_tiaopi",
        "mengwa_kun_1",
        "jingdian_deyi_1",
        "mengwa_jiaoxie",
        "jingdian_qidai",
        "dagong_kaixin",
        "jingdian_landuo_1",
        "dagong_yangwang",
        "jingdian_xianqi",
        "dagong_kunhuo",
        "jingdian_lei",
    }
)

#: The face-detect model that finds the boxes of each video model's input.
DETECT_MODELS: dict[str, str] = {"emo-v1": "emo-detect-v1", "emoji-v1": "emoji-detect-v1"}
#: The ratios each detection model takes; the first is its default. The ratio chosen for emo-detect-v1
#: decides the shape of ``ext_bbox``, and so emo-v1's output size and price.
DETECT_RATIOS: dict[str, tuple[str, ...]] = {"emo-detect-v1": ("1:1", "3:4"), "emoji-detect-v1": ("1:1",)}
#: The same ratios by video model: the ratios a row of that model may ask its detection for.
MODEL_DETECT_RATIOS: dict[str, tuple[str, ...]] = {model: DETECT_RATIOS[DETECT_MODELS[model]] for model in MODELS}

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


def _known_fields(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    """The entries of ``data`` that name a field of the dataclass ``cls`` (a newer writer's extra keys are
    dropped, so an older reader can still rebuild what it knows)."""
    names = {f.name for f in fields(cls)}
    return {key: value for key, value in data.items() if key in names}


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
        return cls(**_known_fields(cls, data))


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


def read_answer(
    status: int, body: str, content_type: str | None, operation: str, parse: Callable[[Any], T], what: str
) -> T:
    """A 200 answer's JSON as ``parse`` reads it; any other status raises :func:`api_error`.

    :raises DashScopeConnectionError: a 200 answer ``parse`` can't read ("unreadable <what> answer").
    """
    if status == 200:
        try:
            return parse(json.loads(body))
        except ValueError as exc:
            raise DashScopeConnectionError(f"unreadable {what} answer ({exc})") from None
    raise api_error(status, body, content_type, operation)


@dataclass(frozen=True)
class FaceDetection:
    """One face-detect answer, the same for ``emo-detect-v1`` and ``emoji-detect-v1``.

    emo-detect-v1 answers ``check_pass``/``face_bbox``/``ext_bbox``; emoji-detect-v1 ``bbox_face``/
    ``ext_bbox_face`` and no ``check_pass``. Either way ``face_bbox`` goes to the video task's
    ``input.face_bbox`` and ``ext_bbox`` to its ``input.ext_bbox``. Every answered detection is billed one
    image, passed or not (``image_count``), so record it rather than detect the same image again.
    JSON-serializable through :meth:`to_dict` (boxes as lists) and back with :meth:`from_dict`.

    :param passed: whether the image can be used (boxes present).
    :param face_bbox: the face, ``[x1, y1, x2, y2]`` pixels, when passed.
    :param ext_bbox: the dynamic area around it, of the asked ratio, when passed.
    :param model: the detection model.
    :param ratio: the ratio asked (``1:1`` or ``3:4``).
    :param request_id: the service's request id.
    :param code: why it did not pass (``InvalidFile.NoHuman``...).
    :param message: the service's explanation.
    :param image_count: images billed for this answer (``usage.image_count``).
    """

    passed: bool
    face_bbox: Box | None
    ext_bbox: Box | None
    model: str
    ratio: str
    request_id: str | None = None
    code: str | None = None
    message: str | None = None
    image_count: int | None = None

    def __post_init__(self) -> None:
        for name in ("face_bbox", "ext_bbox"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, _box(value, name))

    def to_dict(self) -> dict[str, Any]:
        """A plain dict of JSON types (the field names of this class; boxes as lists)."""
        data = asdict(self)
        for name in ("face_bbox", "ext_bbox"):
            data[name] = None if data[name] is None else list(data[name])
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FaceDetection:
        """Rebuild from :meth:`to_dict` output; unknown keys are ignored."""
        return cls(**_known_fields(cls, data))


def _box(value: Any, name: str) -> Box:
    if (
        not isinstance(value, list | tuple)
        or len(value) != 4
        or not all(isinstance(v, int | float) and not isinstance(v, bool) and v >= 0 for v in value)
    ):
        raise ValueError(f"{name} is not four non-negative numbers: {value!r}")
    x1, y1, x2, y2 = (int(v) for v in value)
    if x2 <= x1 or y2 <= y1:
        raise ValueError(f"{name} is not a box [x1, y1, x2, y2] with x1 < x2 and y1 < y2: {value!r}")
    return x1, y1, x2, y2


def parse_detection(payload: Any, model: str, ratio: str) -> FaceDetection:
    """Normalise a face-detect answer (either model's shape) into a :class:`FaceDetection`.

    It passed when ``check_pass`` is true (emo-detect-v1) or, without ``check_pass`` (emoji-detect-v1),
    when it carries the boxes and no ``code``.

    :param payload: the decoded JSON answer (HTTP 200).
    :param model: the model asked.
    :param ratio: the ratio asked.
    :raises ValueError: if it has no ``output``, or says it passed without two valid boxes.
    """
    if not isinstance(payload, dict) or not isinstance(payload.get("output"), dict):
        raise ValueError("the answer has no 'output' object")
    output: dict[str, Any] = payload["output"]
    usage = payload.get("usage") if isinstance(payload.get("usage"), dict) else {}
    count = usage.get("image_count")
    common: dict[str, Any] = {
        "model": model,
        "ratio": ratio,
        "request_id": optional_str(payload.get("request_id")),
        "image_count": count if isinstance(count, int) and not isinstance(count, bool) else None,
    }
    face = output.get("face_bbox", output.get("bbox_face"))
    ext = output.get("ext_bbox", output.get("ext_bbox_face"))
    if "check_pass" in output:
        passed = output["check_pass"] is True
    else:
        passed = not output.get("code") and (face is not None or ext is not None)
    if passed:
        return FaceDetection(passed=True, face_bbox=_box(face, "face_bbox"), ext_bbox=_box(ext, "ext_bbox"), **common)
    if not output.get("code") and not output.get("message") and "check_pass" not in output:
        raise ValueError("the answer has neither boxes nor a failure code")
    return FaceDetection(
        passed=False,
        face_bbox=None,
        ext_bbox=None,
        code=optional_str(output.get("code")),
        message=optional_str(output.get("message")),
        **common,
    )


@dataclass(frozen=True)
class ListedTask:
    """One entry of the account's task list. It carries no input: a task can only be told apart from
    others by its model and creation time.

    :param task_id: the task id.
    :param status: its status, a :class:`TaskStatus` (a string the enum does not know is kept as is).
    :param model: ``model_name``.
    :param created: ``gmt_create`` (epoch ms) as an aware UTC datetime.
    :param started: ``start_time`` (epoch ms), when it started running, or None.
    :param request_id: the submit request's id.
    :param api_key_id: which of the account's keys created it.
    """

    task_id: str
    status: TaskStatus | str
    model: str
    created: datetime
    started: datetime | None = None
    request_id: str | None = None
    api_key_id: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "status", task_status(self.status))


@dataclass(frozen=True)
class TaskPage:
    """One page of the task list: ``total`` tasks in ``total_page`` pages; this is ``page_no``."""

    total: int
    total_page: int
    page_no: int
    page_size: int
    tasks: tuple[ListedTask, ...]


def _epoch_ms(value: Any) -> datetime | None:
    if value is None or isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        return datetime.fromtimestamp(float(value) / 1000, UTC)
    except (ValueError, OverflowError, OSError):
        return None


def parse_task_page(payload: Any) -> TaskPage:
    """Read a task-list answer ``{"total", "total_page", "page_no", "page_size", "data": [...]}``.

    :raises ValueError: if it has no ``data`` list, or an entry has no ``task_id`` or ``gmt_create``.
    """
    if not isinstance(payload, dict) or not isinstance(payload.get("data"), list):
        raise ValueError("the answer has no 'data' list")
    tasks = []
    for entry in payload["data"]:
        created = _epoch_ms(entry.get("gmt_create")) if isinstance(entry, dict) else None
        if created is None or not entry.get("task_id"):
            raise ValueError("a task-list entry has no task_id / gmt_create")
        tasks.append(
            ListedTask(
                task_id=str(entry["task_id"]),
                status=task_status(entry.get("status") or "UNKNOWN"),
                model=str(entry.get("model_name") or ""),
                created=created,
                started=_epoch_ms(entry.get("start_time")),
                request_id=optional_str(entry.get("request_id")),
                api_key_id=optional_str(entry.get("api_key_id")),
            )
        )

    def number(name: str, default: int) -> int:
        value = payload.get(name)
        return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else default

    return TaskPage(
        total=number("total", len(tasks)),
        total_page=number("total_page", 1),
        page_no=number("page_no", 1),
        page_size=number("page_size", len(tasks)),
        tasks=tuple(tasks),
    )


def list_time(moment: datetime) -> str:
    """``YYYYMMDDhhmmss`` in UTC+8, the task list's ``start_time``/``end_time`` (aware datetimes only)."""
    if moment.tzinfo is None:
        raise ValueError("task-list times must be timezone-aware")
    return moment.astimezone(SERVICE_TZ).strftime("%Y%m%d%H%M%S")
