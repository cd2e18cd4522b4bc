"""Hooks for Alibaba Cloud DashScope (Model Studio) asynchronous video synthesis (``emo-v1``, ``emoji-v1``).

The API (see the reference pages): ``POST /api/v1/services/aigc/image2video/video-synthesis`` creates a
task (header ``X-DashScope-Async: enable``), ``GET /api/v1/tasks/{task_id}`` reports it, ``POST
/api/v1/tasks/{task_id}/cancel`` cancels a ``PENDING`` one. A succeeded task carries a pre-signed video
URL that lives 24 h.

Submitting costs money and is not idempotent, so :meth:`DashScopeHook.submit_task` retries only when it
is certain that no task was created; queries and cancels are safe to repeat and retry on any transient
failure.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote, urlsplit, urlunsplit

import aiohttp
import requests
import tenacity
from airflow.providers.http.hooks.http import HttpHook
from airflow.sdk import BaseHook, ObjectStoragePath
from airflow.sdk.exceptions import AirflowNotFoundException
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError

from dashscope_provider.exceptions import (
    DashScopeAPIError,
    DashScopeConfigError,
    DashScopeConnectionError,
    DashScopeError,
    DashScopeRequestNotSent,
    DashScopeResultExpired,
    DashScopeSubmissionUncertain,
)

if TYPE_CHECKING:
    from airflow.sdk import Connection

T = TypeVar("T")

DEFAULT_BASE_URL = "https://dashscope.aliyuncs.com"
SUBMIT_ENDPOINT = "api/v1/services/aigc/image2video/video-synthesis"
TASK_ENDPOINT = "api/v1/tasks/{task_id}"
CANCEL_ENDPOINT = "api/v1/tasks/{task_id}/cancel"

TASK_STATUSES = ("PENDING", "RUNNING", "SUCCEEDED", "FAILED", "CANCELED", "UNKNOWN")
TERMINAL_STATUSES = frozenset({"SUCCEEDED", "FAILED", "CANCELED", "UNKNOWN"})

#: The service allows 20 queries per second per key; stay below it, leaving room for other clients.
DEFAULT_QUERY_QPS = 15.0
DEFAULT_CHUNK_SIZE = 8 * 1024 * 1024
#: A task id that never exists: querying it answers 200 ``UNKNOWN`` when the key is accepted.
PROBE_TASK_ID = "00000000-0000-0000-0000-000000000000"

#: Part size of multipart uploads to S3-compatible stores (S3's minimum part is 5 MiB).
UPLOAD_PART_SIZE = 8 * 1024 * 1024
_S3_PROTOCOLS = frozenset({"s3", "s3a", "s3n"})

# Object stores have no directories to create (and "creating" a bucket is not ours to do).
_OBJECT_STORE_PROTOCOLS = frozenset(
    {"s3", "s3a", "s3n", "gs", "gcs", "abfs", "abfss", "az", "adl", "oss", "r2", "wasb", "wasbs"}
)


# -- results --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SubmittedTask:
    """The answer to a submission: the new task's id and status (``PENDING``), and the request id."""

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
    """

    task_id: str
    status: str
    video_url: str | None = None
    video_duration: float | None = None
    video_ratio: str | None = None
    code: str | None = None
    message: str | None = None
    submit_time: str | None = None
    scheduled_time: str | None = None
    end_time: str | None = None
    request_id: str | None = None

    @property
    def is_terminal(self) -> bool:
        """Whether the task will not change any more (``SUCCEEDED``, ``FAILED``, ``CANCELED``, ``UNKNOWN``)."""
        return self.status in TERMINAL_STATUSES

    @property
    def succeeded(self) -> bool:
        return self.status == "SUCCEEDED"

    def to_dict(self) -> dict[str, Any]:
        """A plain dict of JSON types (the field names of this class)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DashScopeTask:
        """Rebuild from :meth:`to_dict` output; unknown keys are ignored."""
        names = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in names})


@dataclass(frozen=True)
class StoredVideo:
    """A downloaded result video: where it is stored (a plain URL or local path, without any conn id), its
    size and SHA-256 (hex)."""

    uri: str
    size_bytes: int
    sha256: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- parsing, shared by the sync and async hooks ------------------------------------------------------


def _optional_str(value: Any) -> str | None:
    return None if value is None else str(value)


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
        status=str(output["task_status"]).upper(),
        video_url=_optional_str(video_url),
        video_duration=video_duration,
        video_ratio=_optional_str(usage.get("video_ratio")),
        code=_optional_str(output.get("code")),
        message=_optional_str(output.get("message")),
        submit_time=_optional_str(output.get("submit_time")),
        scheduled_time=_optional_str(output.get("scheduled_time")),
        end_time=_optional_str(output.get("end_time")),
        request_id=_optional_str(payload.get("request_id")),
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
        task_status=str(output.get("task_status") or "PENDING"),
        request_id=_optional_str(payload.get("request_id")),
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
            _optional_str(payload.get("message")),
            _optional_str(payload.get("request_id")),
            operation,
        )
    kind = (content_type or "no content type").split(";")[0].strip()
    return DashScopeAPIError(
        status, None, f"answer without a DashScope error body ({kind}, {len(body)} chars)", None, operation
    )


def base_url_from_connection(conn: Connection) -> str:
    """The API base URL of a ``dashscope`` connection.

    ``host`` may be empty (the public endpoint), a bare host name (https is assumed unless the
    connection's schema says otherwise) or a full URL (a workspace/regional URL, a local emulator).
    A trailing ``/`` or ``/api/v1`` is dropped, so that both ``https://host`` and ``https://host/api/v1``
    work.
    """
    host = (conn.host or "").strip()
    if not host:
        base = DEFAULT_BASE_URL
    elif "://" in host:
        base = host
    else:
        base = f"{(conn.schema or 'https').strip()}://{host}"
    parts = urlsplit(base)
    netloc = parts.netloc
    if conn.port and parts.port is None:
        netloc = f"{netloc}:{conn.port}"
    path = parts.path.rstrip("/")
    if path.endswith("/api/v1"):
        path = path[: -len("/api/v1")]
    return urlunsplit((parts.scheme, netloc, path, "", "")).rstrip("/")


def _api_key(conn: Connection) -> str:
    key = (conn.password or "").strip()
    if not key:
        raise DashScopeConfigError(
            f"Connection {conn.conn_id!r} has no API key: put the DashScope API key in its password field"
        )
    return key


def _safe_url(url: str) -> str:
    """The URL without its query string: pre-signed URLs carry their signature there."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _never_sent(exc: requests.RequestException) -> bool:
    """Whether ``requests`` failed before the request could reach the server.

    Only a connect timeout or a failure to open the connection (refused, unreachable, DNS) proves it;
    ``NewConnectionError`` (and its ``NameResolutionError``) are ``ConnectTimeoutError`` subclasses in
    urllib3 2. A dropped connection or a read timeout after sending proves nothing.
    """
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return True
    if not isinstance(exc, requests.exceptions.ConnectionError) or isinstance(
        exc, (requests.exceptions.ReadTimeout, requests.exceptions.ChunkedEncodingError)
    ):
        return False
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return isinstance(reason, (NewConnectionError, ConnectTimeoutError))


#: Longest time one call keeps retrying while the service answers 429 (throttled) to it.
DEFAULT_THROTTLE_TIMEOUT = 120.0


def _stop_rule(max_attempts: int, throttle_timeout: float) -> Callable[[tenacity.RetryCallState], bool]:
    """A tenacity ``stop``: give up after ``max_attempts`` failures, not counting 429 answers.

    A 429 says "too fast, come back": it proves nothing is wrong with the request or the service, so it
    must not use up the attempts meant for real failures (a burst of 429s plus one 5xx would otherwise
    end a perfectly good call). Throttling is bounded by time instead: ``throttle_timeout`` seconds.
    A fresh rule is made per call (it counts that call's failures).
    """
    failures = 0

    def stop(state: tenacity.RetryCallState) -> bool:
        nonlocal failures
        error = state.outcome.exception() if state.outcome else None
        if isinstance(error, DashScopeAPIError) and error.status_code == 429:
            return (state.seconds_since_start or 0.0) >= throttle_timeout
        failures += 1
        return failures >= max_attempts

    return stop


def _retry_policy(hook: Any, retry: Callable[[BaseException], bool], operation: str) -> dict[str, Any]:
    """The tenacity arguments both hooks retry with (``Retrying(**...)`` or ``AsyncRetrying(**...)``)."""
    return {
        "stop": _stop_rule(hook.max_attempts, hook.throttle_timeout),
        "wait": tenacity.wait_exponential_jitter(
            initial=hook.retry_initial, max=hook.retry_max, jitter=hook.retry_initial
        ),
        "retry": tenacity.retry_if_exception(retry),
        "before_sleep": _retry_log(operation, hook.log),
        "reraise": True,
    }


def _set_retry_settings(
    hook: Any, max_attempts: int, retry_initial: float, retry_max: float, throttle_timeout: float
) -> None:
    """Set the retry settings both hooks share (see their docstrings)."""
    if max_attempts < 1:
        raise ValueError("max_attempts must be >= 1")
    hook.max_attempts = max_attempts
    hook.retry_initial = retry_initial
    hook.retry_max = retry_max
    hook.throttle_timeout = throttle_timeout


def _retry_log(operation: str, logger: Any) -> Callable[[tenacity.RetryCallState], None]:
    def before_sleep(state: tenacity.RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        delay = state.next_action.sleep if state.next_action else 0.0
        # The errors' texts never contain the API key (see exceptions.py).
        logger.warning(
            "DashScope %s attempt %d failed (%s); retrying in %.1f s", operation, state.attempt_number, error, delay
        )

    return before_sleep


# -- sync hook -----------------------------------------------------------------------------------------


class DashScopeHook(HttpHook):
    """Submit, query, cancel DashScope video-synthesis tasks and download their results.

    Connection (type ``dashscope``): ``host`` = base URL (empty: ``https://dashscope.aliyuncs.com``;
    a host name or a full URL, e.g. a workspace URL or ``http://127.0.0.1:8000`` for the emulator),
    ``password`` = the API key, sent as ``Authorization: Bearer`` (never logged). Connection extras are
    handled like :class:`~airflow.providers.http.hooks.http.HttpHook`'s (``proxies``, ``verify``,
    ``timeout``...; other keys become headers).

    :param dashscope_conn_id: the connection id.
    :param max_attempts: attempts per call, for the retryable failures of each call (429 answers
        are not counted: they are retried for up to ``throttle_timeout`` seconds).
    :param retry_initial: first back-off in seconds (doubles per attempt, with jitter).
    :param retry_max: longest back-off in seconds.
    :param throttle_timeout: seconds one call keeps retrying while it is throttled (429).
    :param timeout: per-request ``(connect, read)`` timeout in seconds.
    """

    conn_name_attr = "dashscope_conn_id"
    default_conn_name = "dashscope_default"
    conn_type = "dashscope"
    hook_name = "DashScope"
    default_host = DEFAULT_BASE_URL

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """The connection form: a base URL and an API key (Airflow < 3.2; later ones read provider info)."""
        from dashscope_provider import UI_FIELD_BEHAVIOUR

        return {
            "hidden_fields": list(UI_FIELD_BEHAVIOUR["hidden-fields"]),
            "relabeling": dict(UI_FIELD_BEHAVIOUR["relabeling"]),
            "placeholders": dict(UI_FIELD_BEHAVIOUR["placeholders"]),
        }

    def __init__(
        self,
        dashscope_conn_id: str = default_conn_name,
        *,
        max_attempts: int = 5,
        retry_initial: float = 1.0,
        retry_max: float = 30.0,
        throttle_timeout: float = DEFAULT_THROTTLE_TIMEOUT,
        timeout: tuple[float, float] = (10.0, 60.0),
        **kwargs: Any,
    ) -> None:
        super().__init__(method="POST", http_conn_id=dashscope_conn_id, **kwargs)
        _set_retry_settings(self, max_attempts, retry_initial, retry_max, throttle_timeout)
        self.dashscope_conn_id = dashscope_conn_id
        self.timeout = timeout
        self._connection: Connection | None = None
        self._session: requests.Session | None = None

    # -- connection and session -------------------------------------------------------------------

    def _dashscope_connection(self) -> Connection:
        # Fetched once per hook: inside a task each lookup is a round trip to the API server.
        if self._connection is None:
            self._connection = self.get_connection(self.dashscope_conn_id)
            if self._connection.password:
                try:
                    from airflow.sdk.log import mask_secret

                    # The SDK masks connection passwords already; this is belt and braces.
                    mask_secret(self._connection.password)
                except Exception:  # pragma: no cover - masking is best effort
                    pass
        return self._connection

    def _set_base_url(self, connection: Connection) -> None:
        self.base_url = base_url_from_connection(connection)
        self._srv_lookup_enabled = False
        self._base_url_initialized = True

    def _extract_auth(self, connection: Connection) -> Any | None:
        # No basic auth: the key travels as a bearer token (see get_conn).
        return None

    def get_conn(
        self, headers: dict[Any, Any] | None = None, extra_options: dict[str, Any] | None = None
    ) -> requests.Session:
        """A requests session for the API: base URL set, ``Authorization: Bearer <key>`` attached.

        :param headers: extra headers for every request of the session.
        :param extra_options: HttpHook-style options (``timeout``, ``proxies``, ``verify``...).
        """
        connection = self._dashscope_connection()
        key = _api_key(connection)
        self._set_base_url(connection)
        session = requests.Session()
        session.auth = None
        if connection.extra or extra_options:
            session = self._configure_session_from_extra(session, connection, extra_options or {})
        session = self._configure_session_from_mount_adapters(session)
        session.headers["Authorization"] = f"Bearer {key}"
        if headers:
            session.headers.update(headers)
        return session

    def _submit_session(self) -> requests.Session:
        """A fresh session for one submit; a connection that can't be used is a DashScopeConfigError.

        Raised before anything is sent, so a caller knows for sure no task was created.
        """
        try:
            return self.get_conn(headers={"X-DashScope-Async": "enable"})
        except DashScopeConfigError:
            raise
        except AirflowNotFoundException as exc:
            raise DashScopeConfigError(str(exc)) from None
        except Exception as exc:  # unreadable extras and the like; their text may quote the connection
            raise DashScopeConfigError(
                f"connection {self.dashscope_conn_id!r} cannot be used: {type(exc).__name__}"
            ) from None

    def _query_session(self) -> requests.Session:
        # Queries reuse one keep-alive session: a stale pooled connection only costs a retry for them.
        if self._session is None:
            self._session = self.get_conn()
        return self._session

    def _drop_query_session(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None

    def _request_timeout(self) -> Any:
        return self.merged_extra.get("timeout", self.timeout)

    def _retrying(self, retry: Callable[[BaseException], bool], operation: str) -> tenacity.Retrying:
        return tenacity.Retrying(**_retry_policy(self, retry, operation))

    # -- submit ------------------------------------------------------------------------------------

    def submit_task(
        self,
        model: str,
        input: dict[str, Any],
        parameters: dict[str, Any] | None = None,
        *,
        request_fingerprint: str | None = None,
    ) -> SubmittedTask:
        """Create a video-synthesis task; returns its id.

        Retried (bounded, exponential back-off with jitter) only when no task can have been created:
        429 ``Throttling.RateQuota``, a 5xx with DashScope's JSON error body, or a connection that could
        not be opened. Other 4xx raise :class:`DashScopeAPIError` at once.

        :param model: ``emo-v1`` or ``emoji-v1``.
        :param input: the request's ``input`` object (image_url, face_bbox, ext_bbox, audio_url/driven_id).
        :param parameters: the request's ``parameters`` object (e.g. ``{"style_level": "active"}``).
        :param request_fingerprint: an id of this request to quote in :class:`DashScopeSubmissionUncertain`.
        :raises DashScopeSubmissionUncertain: the request may have been received but no usable answer came
            back (dropped connection, read timeout, 5xx without error body, unreadable 2xx). Never retried.
        :raises DashScopeAPIError: the service refused the request (no task was created).
        :raises DashScopeRequestNotSent: the service could not be reached (no task was created).
        """
        body: dict[str, Any] = {"model": model, "input": input}
        if parameters:
            body["parameters"] = parameters

        def attempt() -> SubmittedTask:
            # A fresh session (so a fresh TCP connection) per attempt: a stale pooled connection would
            # turn a harmless reconnect into an "uncertain" submission.
            with self._submit_session() as session:
                url = self.url_from_endpoint(SUBMIT_ENDPOINT)
                try:
                    response = session.post(url, json=body, timeout=self._request_timeout(), allow_redirects=False)
                    text = response.text
                except requests.RequestException as exc:
                    if _never_sent(exc):
                        raise DashScopeRequestNotSent(_describe(exc)) from exc
                    raise DashScopeSubmissionUncertain(
                        f"no answer after the request was sent ({_describe(exc)})", request_fingerprint
                    ) from exc
            status = response.status_code
            if 200 <= status < 300:
                try:
                    return parse_submission(response.json())
                except ValueError as exc:
                    raise DashScopeSubmissionUncertain(
                        f"HTTP {status} answer without a readable task id ({exc})", request_fingerprint, status
                    ) from None
            error = api_error(status, text, response.headers.get("Content-Type"), "submit")
            if status >= 500 and not error.has_error_body:
                # A gateway's 5xx: the service behind it may have created the task.
                raise DashScopeSubmissionUncertain(
                    f"HTTP {status} without a DashScope error body (a gateway answered; the service may "
                    "have received the request)",
                    request_fingerprint,
                    status,
                )
            raise error

        def retryable(exc: BaseException) -> bool:
            if isinstance(exc, DashScopeAPIError):
                return exc.retryable
            return isinstance(exc, DashScopeRequestNotSent)

        submitted = self._retrying(retryable, "submit")(attempt)
        self.log.info(
            "DashScope task %s submitted (model %s, request_id %s)", submitted.task_id, model, submitted.request_id
        )
        return submitted

    # -- query -------------------------------------------------------------------------------------

    def _idempotent_call(
        self, method: str, endpoint: str, operation: str, handle: Callable[[requests.Response, str], T]
    ) -> T:
        """Send a request that is safe to repeat; retry 429, 5xx and transport errors (bounded)."""

        def attempt() -> T:
            session = self._query_session()
            url = self.url_from_endpoint(endpoint)
            try:
                response = session.request(method, url, timeout=self._request_timeout())
                text = response.text
            except requests.RequestException as exc:
                self._drop_query_session()
                if _never_sent(exc):
                    raise DashScopeRequestNotSent(_describe(exc)) from exc
                raise DashScopeConnectionError(_describe(exc)) from exc
            return handle(response, text)

        def retryable(exc: BaseException) -> bool:
            if isinstance(exc, DashScopeAPIError):
                return exc.status_code == 429 or exc.status_code >= 500
            return isinstance(exc, DashScopeConnectionError)

        return self._retrying(retryable, operation)(attempt)

    def get_task(self, task_id: str) -> DashScopeTask:
        """The task's current status and, once succeeded, its video URL and usage.

        :param task_id: the id returned by :meth:`submit_task`.
        :raises DashScopeAPIError: on a non-retryable error (401...) or after the retries.
        :raises DashScopeConnectionError: if the service stayed unreachable.
        """

        def handle(response: requests.Response, text: str) -> DashScopeTask:
            if response.status_code == 200:
                try:
                    return parse_task(json.loads(text))
                except ValueError as exc:
                    raise DashScopeConnectionError(f"unreadable query answer ({exc})") from None
            raise api_error(response.status_code, text, response.headers.get("Content-Type"), "query")

        return self._idempotent_call("GET", TASK_ENDPOINT.format(task_id=quote(task_id, safe="")), "query", handle)

    # -- cancel ------------------------------------------------------------------------------------

    def cancel_task(self, task_id: str) -> bool:
        """Cancel a task that is still ``PENDING`` (queued). Returns True if the task is canceled.

        When the service refuses (400 ``UnsupportedOperation``: the task is no longer PENDING, or is
        unknown) the task's status is read: True if it is CANCELED after all (an earlier attempt whose
        answer was lost, or someone else, canceled it), else False with a log line saying why.

        :param task_id: the task to cancel.
        """

        def handle(response: requests.Response, text: str) -> bool:
            if 200 <= response.status_code < 300:
                return True
            error = api_error(response.status_code, text, response.headers.get("Content-Type"), "cancel")
            if error.status_code == 400 and error.code == "UnsupportedOperation":
                return False
            raise error

        endpoint = CANCEL_ENDPOINT.format(task_id=quote(task_id, safe=""))
        if self._idempotent_call("POST", endpoint, "cancel", handle):
            self.log.info("DashScope task %s canceled", task_id)
            return True
        status = self.get_task(task_id).status
        if status == "CANCELED":
            self.log.info("DashScope task %s is canceled", task_id)
            return True
        self.log.info(
            "DashScope refused to cancel task %s: it is %s (only PENDING tasks can be canceled)", task_id, status
        )
        return False

    # -- download ----------------------------------------------------------------------------------

    def download_video(
        self,
        video_url: str,
        destination: ObjectStoragePath | str,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        *,
        conn_id: str | None = None,
    ) -> StoredVideo:
        """Copy a result video from its pre-signed URL to ``destination``, streaming.

        The video is never held in memory. A partial file never appears under ``destination``: on a
        local file system the bytes go to a hidden sibling that is renamed into place once complete; for
        other stores they go to a local temporary file, which is uploaded once complete (an object store
        publishes an object only when its single PUT or multipart upload completes). The byte count is
        checked against ``Content-Length``. Transient failures (5xx, connection errors, truncated bodies)
        are retried. Uses no DashScope credential (the URL is pre-signed), so it needs no connection.

        :param video_url: the task's ``video_url``.
        :param destination: where to store it: an :class:`~airflow.sdk.ObjectStoragePath`, or any fsspec
            URL or local path.
        :param chunk_size: bytes per read.
        :param conn_id: the connection of the destination store when ``destination`` is a string.
        :raises DashScopeResultExpired: the URL answers 403/404 (expired after 24 h, or invalid).
        """
        dest = (
            destination
            if isinstance(destination, ObjectStoragePath)
            else ObjectStoragePath(str(destination), conn_id=conn_id)
        )
        safe_url = _safe_url(video_url)
        local_path = self._local_path(dest)
        if local_path is not None:
            local_path.parent.mkdir(parents=True, exist_ok=True)
            # Same directory, so the final rename is atomic and never crosses file systems.
            fd, tmp_name = tempfile.mkstemp(prefix=f".{local_path.name}.", suffix=".part", dir=local_path.parent)
        else:
            fd, tmp_name = tempfile.mkstemp(prefix="dashscope-video-", suffix=".part")
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            size, digest = self._retrying(lambda exc: isinstance(exc, DashScopeConnectionError), "download")(
                self._fetch_to_file, video_url, safe_url, tmp, chunk_size
            )
            if local_path is not None:
                os.replace(tmp, local_path)
            else:
                self._upload(tmp, dest)
                stored = dest.fs.size(dest.path)
                if stored is not None and int(stored) != size:
                    raise DashScopeError(f"{dest} holds {stored} bytes after upload, expected {size}")
        finally:
            tmp.unlink(missing_ok=True)
        # The plain URL (``s3://bucket/key``, a local path...): str(dest) would embed the conn id.
        uri = f"{dest.protocol}://{dest.path}" if dest.protocol else dest.path
        self.log.info("Stored %s (%d bytes, sha256 %s) from %s", uri, size, digest, safe_url)
        return StoredVideo(uri=uri, size_bytes=size, sha256=digest)

    @staticmethod
    def _local_path(dest: ObjectStoragePath) -> Path | None:
        from fsspec.implementations.local import LocalFileSystem

        return Path(dest.path) if isinstance(dest.fs, LocalFileSystem) else None

    @staticmethod
    def _upload(tmp: Path, dest: ObjectStoragePath) -> None:
        if dest.protocol not in _OBJECT_STORE_PROTOCOLS:
            parent = dest.fs._parent(dest.path)
            if parent:
                dest.fs.makedirs(parent, exist_ok=True)
        # s3fs would upload 10 parts of 50 MiB at once, holding them all in memory (over 1 GB for a 500 MB
        # video); small parts, two at a time, keep memory flat whatever the size. The multipart upload is
        # completed only when every part is in (and aborted on failure), so the object appears whole or
        # not at all.
        extra = {"chunksize": UPLOAD_PART_SIZE, "max_concurrency": 2} if dest.protocol in _S3_PROTOCOLS else {}
        dest.fs.put_file(str(tmp), dest.path, **extra)

    def _fetch_to_file(self, video_url: str, safe_url: str, tmp: Path, chunk_size: int) -> tuple[int, str]:
        """One download attempt into ``tmp`` (truncated first); returns (bytes, sha256 hex)."""
        # A bare session on purpose: the DashScope Authorization header must not go to the storage host.
        with requests.Session() as session:
            try:
                with session.get(
                    video_url, stream=True, timeout=self.timeout, headers={"Accept-Encoding": "identity"}
                ) as response:
                    status = response.status_code
                    if status in (403, 404):
                        raise DashScopeResultExpired(status, safe_url, _storage_error(response))
                    if status == 429 or status >= 500:
                        raise DashScopeConnectionError(f"HTTP {status} downloading {safe_url}")
                    if not 200 <= status < 300:
                        raise DashScopeError(f"HTTP {status} downloading {safe_url}")
                    expected = _content_length(response)
                    digest = hashlib.sha256()
                    size = 0
                    # Hashing runs beside the copy (hashlib releases the GIL on large buffers), one chunk
                    # behind it, so the digest costs no throughput; chunks stay in order.
                    with tmp.open("wb") as out, ThreadPoolExecutor(1, thread_name_prefix="sha256") as hasher:
                        hashed: Future[None] | None = None
                        for chunk in response.iter_content(chunk_size=chunk_size):
                            if hashed is not None:
                                hashed.result()
                            hashed = hasher.submit(digest.update, chunk)
                            out.write(chunk)
                            size += len(chunk)
                        if hashed is not None:
                            hashed.result()
            except requests.RequestException as exc:
                raise DashScopeConnectionError(f"downloading {safe_url}: {type(exc).__name__}") from exc
        if expected is not None and size != expected:
            raise DashScopeConnectionError(f"truncated download of {safe_url}: {size} of {expected} bytes")
        return size, digest.hexdigest()

    # -- connection test ---------------------------------------------------------------------------

    def test_connection(self) -> tuple[bool, str]:
        """Check the base URL and the key with one cheap authenticated query (a task id that never exists).

        A valid key gets ``200 UNKNOWN``; the message never contains the key.
        """
        try:
            key = _api_key(self._dashscope_connection())
        except Exception as exc:
            return False, str(exc)
        # A test should answer at once, throttled or not.
        saved = self.max_attempts, self.throttle_timeout
        self.max_attempts, self.throttle_timeout = 1, 0.0
        try:
            task = self.get_task(PROBE_TASK_ID)
        except DashScopeAPIError as exc:
            prefix = "The API key was refused: " if exc.status_code == 401 else ""
            return False, (prefix + str(exc)).replace(key, "***")
        except Exception as exc:
            return False, _describe(exc).replace(key, "***")
        finally:
            self.max_attempts, self.throttle_timeout = saved
        return True, f"Connected to {self.base_url}: API key accepted (probe task {task.status})"


def _content_length(response: requests.Response) -> int | None:
    encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
    length = response.headers.get("Content-Length")
    # A compressed body's length is not the length of the bytes iter_content yields.
    if length is None or encoding not in ("", "identity"):
        return None
    try:
        return int(length)
    except ValueError:
        return None


def _storage_error(response: requests.Response) -> str | None:
    """``Code: Message`` from an OSS/S3-style XML error body, if any."""
    try:
        text = response.raw.read(4096, decode_content=True).decode("utf-8", "replace")
    except Exception:
        return None
    code = re.search(r"<Code>([^<]{1,100})</Code>", text)
    message = re.search(r"<Message>([^<]{1,300})</Message>", text)
    parts = [m.group(1) for m in (code, message) if m]
    return ": ".join(parts) or None


# -- async hook and rate limiting ---------------------------------------------------------------------


class AsyncRateLimiter:
    """Spaces requests evenly so that no more than ``qps`` start in any second.

    Each caller reserves the next free slot without awaiting in between, so it needs no asyncio lock and
    works across event loops (a triggerer has one; tests start several) and threads. After a 429,
    :meth:`penalize` pushes every later slot back.

    :param qps: requests per second.
    """

    def __init__(self, qps: float) -> None:
        self.qps = qps
        self._next = 0.0
        self._lock = threading.Lock()

    @property
    def qps(self) -> float:
        return self._qps

    @qps.setter
    def qps(self, value: float) -> None:
        if value <= 0:
            raise ValueError("qps must be > 0")
        self._qps = float(value)

    def reserve(self) -> float:
        """Reserve the next slot; returns how many seconds to wait for it."""
        with self._lock:
            now = time.monotonic()
            slot = max(now, self._next)
            self._next = slot + 1.0 / self._qps
            return slot - now

    async def acquire(self) -> None:
        """Wait for this caller's slot."""
        delay = self.reserve()
        if delay > 0:
            await asyncio.sleep(delay)

    def penalize(self, seconds: float) -> None:
        """Start no request before ``seconds`` from now (the service said 429)."""
        with self._lock:
            self._next = max(self._next, time.monotonic() + seconds)


_LIMITERS: dict[tuple[str, str], AsyncRateLimiter] = {}
_LIMITERS_LOCK = threading.Lock()


def get_rate_limiter(base_url: str, key_id: str, qps: float = DEFAULT_QUERY_QPS) -> AsyncRateLimiter:
    """The process-wide limiter of one (base URL, API key); created on first use, its rate updated to ``qps``.

    :param base_url: the API base URL.
    :param key_id: identifies the key without being it (a hash), so every connection using the same key
        shares one budget.
    :param qps: requests per second for this key.
    """
    with _LIMITERS_LOCK:
        limiter = _LIMITERS.get((base_url, key_id))
        if limiter is None:
            limiter = _LIMITERS[(base_url, key_id)] = AsyncRateLimiter(qps)
        elif limiter.qps != qps:
            limiter.qps = qps
        return limiter


class DashScopeAsyncHook(BaseHook):
    """Query DashScope tasks from async code (triggers), with the sync hook's parsing and retry rules.

    Built directly on aiohttp rather than on ``HttpAsyncHook``: that one retries 5xx only, at a fixed
    delay, and authenticates with basic auth, while this API needs a bearer token, 429 handling and a
    shared rate limit. The connection is read the Airflow 3 way for async code
    (``get_async_connection``), once per hook.

    Every query first waits for a slot of the rate limiter shared by all hooks of this process that use
    the same base URL and key, so that any number of triggers polling with one key stays within the
    service's 20 queries per second.

    :param dashscope_conn_id: the connection id.
    :param max_attempts: attempts per query (429 answers not counted, see :class:`DashScopeHook`).
    :param retry_initial: first back-off in seconds (doubles per attempt, with jitter).
    :param retry_max: longest back-off in seconds.
    :param throttle_timeout: seconds one query keeps retrying while it is throttled (429).
    :param timeout: total seconds per request.
    :param max_qps: the shared query rate of this key in this process (default 15).
    """

    conn_name_attr = "dashscope_conn_id"
    default_conn_name = "dashscope_default"
    conn_type = "dashscope"
    hook_name = "DashScope"

    def __init__(
        self,
        dashscope_conn_id: str = default_conn_name,
        *,
        max_attempts: int = 5,
        retry_initial: float = 1.0,
        retry_max: float = 30.0,
        throttle_timeout: float = DEFAULT_THROTTLE_TIMEOUT,
        timeout: float = 60.0,
        max_qps: float = DEFAULT_QUERY_QPS,
    ) -> None:
        super().__init__()
        _set_retry_settings(self, max_attempts, retry_initial, retry_max, throttle_timeout)
        self.dashscope_conn_id = dashscope_conn_id
        self.timeout = timeout
        self.max_qps = max_qps
        self._base_url: str | None = None
        self._headers: dict[str, str] | None = None
        self._limiter: AsyncRateLimiter | None = None

    async def _configure(self) -> tuple[str, dict[str, str], AsyncRateLimiter]:
        if self._base_url is None or self._headers is None or self._limiter is None:
            from airflow.providers.common.compat.connection import get_async_connection

            conn = await get_async_connection(conn_id=self.dashscope_conn_id, hook=self)
            key = _api_key(conn)
            self._base_url = base_url_from_connection(conn)
            self._headers = {"Authorization": f"Bearer {key}"}
            key_id = hashlib.sha256(key.encode()).hexdigest()[:16]
            self._limiter = get_rate_limiter(self._base_url, key_id, self.max_qps)
        return self._base_url, self._headers, self._limiter

    async def get_task(self, task_id: str) -> DashScopeTask:
        """The task's current status (see :meth:`DashScopeHook.get_task`); retries 429, 5xx, transport errors.

        :raises DashScopeAPIError: on a non-retryable error (401...) or after the retries.
        :raises DashScopeConnectionError: if the service stayed unreachable.
        """
        base_url, headers, limiter = await self._configure()
        url = f"{base_url}/{TASK_ENDPOINT.format(task_id=quote(task_id, safe=''))}"
        timeout = aiohttp.ClientTimeout(total=self.timeout)

        async def attempt() -> DashScopeTask:
            await limiter.acquire()
            try:
                async with (
                    aiohttp.ClientSession(timeout=timeout) as session,
                    session.get(url, headers=headers) as response,
                ):
                    status = response.status
                    content_type = response.headers.get("Content-Type")
                    text = await response.text()
            except aiohttp.ClientConnectorError as exc:
                raise DashScopeRequestNotSent(_describe(exc)) from exc
            except (TimeoutError, aiohttp.ClientError) as exc:
                raise DashScopeConnectionError(_describe(exc)) from exc
            if status == 200:
                try:
                    return parse_task(json.loads(text))
                except ValueError as exc:
                    raise DashScopeConnectionError(f"unreadable query answer ({exc})") from None
            error = api_error(status, text, content_type, "query")
            if status == 429:
                # Throttled: hold back every poller of this key, not just this one.
                limiter.penalize(1.0)
            raise error

        def retryable(exc: BaseException) -> bool:
            if isinstance(exc, DashScopeAPIError):
                return exc.status_code == 429 or exc.status_code >= 500
            return isinstance(exc, DashScopeConnectionError)

        return await tenacity.AsyncRetrying(**_retry_policy(self, retryable, "query"))(attempt)

    async def cancel_task(self, task_id: str) -> bool:
        """Cancel a task that is still ``PENDING``; True if the service canceled it (one attempt).

        A refusal (the task already runs or ended) is an answer, not an error: False, with a log line.
        """
        base_url, headers, _ = await self._configure()
        url = f"{base_url}/{CANCEL_ENDPOINT.format(task_id=quote(task_id, safe=''))}"
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout)) as session,
                session.post(url, headers=headers) as response,
            ):
                if 200 <= response.status < 300:
                    self.log.info("DashScope task %s canceled", task_id)
                    return True
                error = api_error(
                    response.status, await response.text(), response.headers.get("Content-Type"), "cancel"
                )
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise DashScopeConnectionError(_describe(exc)) from exc
        self.log.info("DashScope task %s not canceled: %s", task_id, error)
        return False
