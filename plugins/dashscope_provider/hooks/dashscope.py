"""The sync hook for Alibaba Cloud DashScope (Model Studio) video synthesis (``emo-v1``, ``emoji-v1``).

:class:`DashScopeHook` does HTTP to DashScope and nothing else: submit, query, list (``list_tasks``, by
its :class:`~dashscope_provider.hooks.task_list.TaskList`) and cancel tasks, and detect faces (the
synchronous, billed call that finds the boxes a task needs; its request and answer are in
:mod:`dashscope_provider.hooks.face_detection`); it paces its calls with its
:class:`~dashscope_provider.hooks.pacing.Pacing`. The async
hook (triggers) is :mod:`dashscope_provider.hooks.dashscope_async`; the answers it parses are in
:mod:`dashscope_provider.models`; what it retries is :class:`dashscope_provider.retry.RetryPolicy`; the
result video is copied by :mod:`dashscope_provider.transfers.dashscope_to_object_storage` (it needs no
DashScope credential).

Submitting costs money and is not idempotent, so :meth:`DashScopeHook.submit_task` retries only when it
is certain that no task was created; queries and cancels are safe to repeat and retry on any transient
failure.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote

import requests
from airflow.providers.http.hooks.http import HttpHook

from dashscope_provider.compat import AirflowNotFoundException
from dashscope_provider.connection import (
    DASHSCOPE_EXTRA_FIELDS,
    account_from_connection,
    api_key_from_connection,
    base_url_from_connection,
)
from dashscope_provider.exceptions import (
    DashScopeAPIError,
    DashScopeConfigError,
    DashScopeSubmissionUncertain,
)
from dashscope_provider.hooks.face_detection import describe_detection, detection_reader, detection_request
from dashscope_provider.hooks.pacing import Pacing, ThrottleCounter, refused
from dashscope_provider.hooks.task_list import TaskList
from dashscope_provider.models import (
    CANCEL_ENDPOINT,
    DEFAULT_BASE_URL,
    FACE_DETECT_ENDPOINT,
    PROBE_TASK_ID,
    SUBMIT_ENDPOINT,
    TASK_ENDPOINT,
    TASK_LIST_ENDPOINT,
    DashScopeTask,
    FaceDetection,
    ListedTask,
    SubmittedTask,
    TaskPage,
    TaskStatus,
    api_error,
    parse_submission,
    parse_task,
    parse_task_page,
    read_answer,
)
from dashscope_provider.rate_limit import RateLimiter
from dashscope_provider.retry import DEFAULT_THROTTLE_TIMEOUT, RetryPolicy, describe, transport_error

if TYPE_CHECKING:
    from airflow.sdk import Connection

T = TypeVar("T")

__all__ = [
    "DashScopeHook",
    "DashScopeTask",
    "FaceDetection",
    "SubmittedTask",
    "api_key_from_connection",
    "base_url_from_connection",
]


def _answer_reader(operation: str, parse: Callable[[Any], T], what: str) -> Callable[[requests.Response, str], T]:
    """An answer handler for :meth:`DashScopeHook._idempotent_call`: a 200 read by ``parse``, else the
    refusal (see :func:`~dashscope_provider.models.read_answer`)."""

    def read(response: requests.Response, text: str) -> T:
        content_type = response.headers.get("Content-Type")
        return read_answer(response.status_code, text, content_type, operation, parse, what)

    return read


def _submitted(
    response: requests.Response, text: str, request_fingerprint: str | None, limiter: RateLimiter
) -> SubmittedTask:
    """The task a submit answer created; an answer that may hide a task raises
    :class:`DashScopeSubmissionUncertain`, a refusal (no task) the :func:`refused` API error."""
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
    raise refused(error, limiter)


# -- the hook -----------------------------------------------------------------------------------------


class DashScopeHook(HttpHook):
    """Submit, query, list and cancel DashScope video-synthesis tasks; detect faces for them.

    Connection (type ``dashscope``): ``host`` = base URL (empty: ``https://dashscope.aliyuncs.com``;
    a host name or a full URL, e.g. a workspace URL or ``http://127.0.0.1:8000`` for the emulator),
    ``password`` = the API key, sent as ``Authorization: Bearer`` (never logged; ``login`` is ignored).
    Connection extras are handled by :class:`~airflow.providers.http.hooks.http.HttpHook` (``proxies``,
    ``verify``, ``timeout``...; other keys become headers), except ``account``: the Alibaba Cloud account
    the key belongs to (default: the key's own fingerprint, see
    :func:`~dashscope_provider.connection.account_from_connection`).

    Pacing (:attr:`pacing`, a :class:`~dashscope_provider.hooks.pacing.Pacing`): the service counts its
    limits per account and model, whatever the key, so every hook of this process with the same base URL
    and account shares one limiter per model for submits (below emo-v1 5/s, emoji-v1 1/s) and detects,
    and one query budget with the async hook. Other processes have their own, so a 429 can still come: it
    is retried without using up attempts, and counted in :attr:`throttled` (read-only: the 429 answers
    this hook retried through, in submits, queries, task lists and detects), for the caller to record.
    Never retried: a used-up free quota (429 ``Throttling.AllocationQuota`` "Free allocated quota
    exceeded": :class:`~dashscope_provider.exceptions.DashScopeQuotaExhausted`), nor any other 4xx, such as
    400 ``DataInspectionFailed`` (content moderation).

    Built on ``HttpHook``'s public surface: :meth:`get_conn` extends its session (extras, TCP keep-alive
    adapter) with the bearer token, :meth:`url_from_endpoint` applies this connection's base-URL rules.
    The calls do not go through ``HttpHook.run``/``run_with_advanced_retry``: ``run`` opens the session
    and sends in one step, so an unusable connection (nothing sent) and a lost answer (a task may exist)
    could not be told apart, and its retry helper decides on raw responses, while a submission's retry
    depends on whether the request left this machine (see :class:`~dashscope_provider.retry.RetryPolicy`).

    :param dashscope_conn_id: the connection id.
    :param max_attempts: attempts per call, for the retryable failures of each call (429 answers
        are not counted: they are retried for up to ``throttle_timeout`` seconds).
    :param retry_initial: first back-off in seconds (doubles per attempt, with jitter).
    :param retry_max: longest back-off in seconds.
    :param throttle_timeout: seconds one call keeps retrying while it is throttled (429).
    :param timeout: per-request ``(connect, read)`` timeout in seconds (a ``timeout`` in the connection's
        extra wins).
    :param detect_qps: face-detect calls per second per (base URL, account, model) in this process, per
        model; default 90 % of the page's limits (``emo-detect-v1`` 5, ``emoji-detect-v1`` 1, others 1).
    :param submit_qps: the same for submits; default 90 % of the page's (``emo-v1`` 5, ``emoji-v1`` 1).
    :param kwargs: passed to ``HttpHook`` (``tcp_keep_alive``, ``adapter``...).
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
        detect_qps: dict[str, float] | None = None,
        submit_qps: dict[str, float] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(method="POST", http_conn_id=dashscope_conn_id, **kwargs)
        self.dashscope_conn_id = dashscope_conn_id
        self.retry_policy = RetryPolicy(max_attempts, retry_initial, retry_max, throttle_timeout)
        self.timeout = timeout
        # The connection is read on first use, not here: the helpers ask for it when they need it.
        self.pacing = Pacing(lambda: self.dashscope_connection, detect_qps, submit_qps)
        self._throttles = ThrottleCounter()
        self._task_list = TaskList(self._task_page, self.log)
        self._session: requests.Session | None = None

    @property
    def throttled(self) -> int:
        """How many 429 (throttled) answers this hook got and retried through, over all its calls so far:
        submits, queries, task lists and face-detects. Read-only; it only grows.

        A 429 that is not retried is not counted: the one after ``throttle_timeout`` (raised), and a free
        quota used up (:class:`~dashscope_provider.exceptions.DashScopeQuotaExhausted`, raised at once).
        """
        return self._throttles.count

    # -- connection and session -------------------------------------------------------------------

    @cached_property
    def dashscope_connection(self) -> Connection:
        """The connection, read once per hook (inside a task each lookup is a round trip to the API server)."""
        connection = self.get_connection(self.dashscope_conn_id)
        if connection.password:
            try:
                from airflow.sdk.log import mask_secret

                # The SDK masks connection passwords already; this is belt and braces.
                mask_secret(connection.password)
            except Exception:  # pragma: no cover - masking is best effort
                pass
        return connection

    def get_conn(
        self, headers: dict[Any, Any] | None = None, extra_options: dict[str, Any] | None = None
    ) -> requests.Session:
        """``HttpHook``'s session (connection extras, keep-alive adapter) with ``Authorization: Bearer <key>``.

        :param headers: extra headers for every request of the session.
        :param extra_options: HttpHook-style options (``timeout``, ``proxies``, ``verify``...).
        :raises DashScopeConfigError: if the connection has no API key (nothing is sent).
        """
        connection = self.dashscope_connection
        key = api_key_from_connection(connection)
        session = super().get_conn(headers, extra_options)
        session.auth = None  # never basic auth from ``login``: the key travels as a bearer token
        for name in DASHSCOPE_EXTRA_FIELDS:  # this provider's own extras are not headers
            session.headers.pop(name, None)
        session.headers["Authorization"] = f"Bearer {key}"
        self.base_url = base_url_from_connection(connection)
        return session

    @property
    def account(self) -> str:
        """The Alibaba Cloud account the connection's calls count against (and whose tasks it lists)."""
        return account_from_connection(self.dashscope_connection)

    def url_from_endpoint(self, endpoint: str | None) -> str:
        """``{base URL}/{endpoint}``, the base URL as :func:`base_url_from_connection` reads it."""
        return f"{base_url_from_connection(self.dashscope_connection)}/{(endpoint or '').lstrip('/')}"

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

        Each attempt waits for its slot of :meth:`Pacing.submit_limiter
        <dashscope_provider.hooks.pacing.Pacing.submit_limiter>`. Retried (bounded, exponential back-off
        with jitter) only when no task can have been created: a 429 (but a used-up free quota), a 5xx with
        DashScope's JSON error body, or a connection that could not be opened.

        :param model: ``emo-v1`` or ``emoji-v1``.
        :param input: the request's ``input`` object (image_url, face_bbox, ext_bbox, audio_url/driven_id).
        :param parameters: the request's ``parameters`` object (e.g. ``{"style_level": "active"}``).
        :param request_fingerprint: an id of this request to quote in :class:`DashScopeSubmissionUncertain`.
        :raises DashScopeSubmissionUncertain: the request may have been received but no usable answer came
            back (dropped connection, read timeout, 5xx without error body, unreadable 2xx). Never retried.
        :raises DashScopeQuotaExhausted: the account's free quota is used up: stop submitting with it.
        :raises DashScopeAPIError: the service refused the request (no task was created).
        :raises DashScopeRequestNotSent: the service could not be reached (no task was created).
        """
        body: dict[str, Any] = {"model": model, "input": input}
        if parameters:
            body["parameters"] = parameters
        retrying = self.retry_policy.retrying("submit", self.log, idempotent=False, on_retry=self._throttles.on_retry)
        submitted = retrying(self._submit_once, model, body, request_fingerprint)
        self.log.info(
            "DashScope task %s submitted (model %s, request_id %s)", submitted.task_id, model, submitted.request_id
        )
        return submitted

    def _submit_once(self, model: str, body: dict[str, Any], request_fingerprint: str | None) -> SubmittedTask:
        """One attempt of :meth:`submit_task`: a fresh session, the model's slot, one POST, its answer read."""
        # A fresh session (so a fresh TCP connection) per attempt: a stale pooled connection would
        # turn a harmless reconnect into an "uncertain" submission.
        with self._submit_session() as session:
            url = self.url_from_endpoint(SUBMIT_ENDPOINT)
            limiter = self.pacing.submit_limiter(model)  # after the session: a bad connection is a config error
            limiter.wait()
            try:
                response = session.post(url, json=body, timeout=self._request_timeout(), allow_redirects=False)
                text = response.text
            except requests.RequestException as exc:
                raise transport_error(exc, idempotent=False, request_fingerprint=request_fingerprint) from exc
        return _submitted(response, text, request_fingerprint, limiter)

    # -- query -------------------------------------------------------------------------------------

    def _idempotent_call(
        self,
        method: str,
        endpoint: str,
        operation: str,
        handle: Callable[[requests.Response, str], T],
        *,
        limiter: RateLimiter | None = None,
        **request_kwargs: Any,
    ) -> T:
        """Send a request that is safe to repeat; retry 429, 5xx and transport errors (bounded).

        With a ``limiter``, every attempt first waits for its slot, and a 429 holds back all its users.
        """

        def attempt() -> T:
            session = self._query_session()
            url = self.url_from_endpoint(endpoint)
            if limiter is not None:
                limiter.wait()
            try:
                response = session.request(method, url, timeout=self._request_timeout(), **request_kwargs)
                text = response.text
            except requests.RequestException as exc:
                self._drop_query_session()
                raise transport_error(exc, idempotent=True) from exc
            try:
                return handle(response, text)
            except DashScopeAPIError as exc:
                raise refused(exc, limiter) from None

        retrying = self.retry_policy.retrying(operation, self.log, idempotent=True, on_retry=self._throttles.on_retry)
        return retrying(attempt)

    def _task_page(self, query: dict[str, str]) -> TaskPage:
        """One page of the account's task list (``query``: the window, ``page_no``, ``page_size``)."""
        read = _answer_reader("list", parse_task_page, "task-list")
        return self._idempotent_call(
            "GET", TASK_LIST_ENDPOINT, "list", read, limiter=self.pacing.query_limiter(), params=query
        )

    def get_task(self, task_id: str) -> DashScopeTask:
        """The task's current status and, once succeeded, its video URL and usage.

        :param task_id: the id returned by :meth:`submit_task`.
        :raises DashScopeAPIError: on a non-retryable error (401...) or after the retries.
        :raises DashScopeConnectionError: if the service stayed unreachable.
        """
        endpoint = TASK_ENDPOINT.format(task_id=quote(task_id, safe=""))
        read = _answer_reader("query", parse_task, "query")
        return self._idempotent_call("GET", endpoint, "query", read, limiter=self.pacing.query_limiter())

    def list_tasks(self, model: str, start: datetime, end: datetime, status: str | None = None) -> list[ListedTask]:
        """The account's tasks of ``model`` created from ``start`` to ``end`` (aware datetimes), oldest first:
        :meth:`TaskList.list_tasks <dashscope_provider.hooks.task_list.TaskList.list_tasks>`."""
        return self._task_list.list_tasks(model, start, end, status)

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
        if status == TaskStatus.CANCELED:
            self.log.info("DashScope task %s is canceled", task_id)
            return True
        self.log.info(
            "DashScope refused to cancel task %s: it is %s (only PENDING tasks can be canceled)", task_id, status
        )
        return False

    # -- face detection ----------------------------------------------------------------------------

    def detect_face(self, model: str, image_url: str, ratio: str | None = None) -> FaceDetection:
        """Find the face and its dynamic area in an image (synchronous); the boxes a video task needs.

        Paced per (base URL, account, model) in this process (see :meth:`Pacing.detect_limiter
        <dashscope_provider.hooks.pacing.Pacing.detect_limiter>`). Safe to repeat,
        so retried like a query on 429, 5xx and transport errors. Every *answered* detection is billed one
        image, passed or not, so a retry after a lost answer may bill twice; a refused request (4xx, 429,
        5xx) is not billed. A detection that did not pass is an answer, not an error: ``passed`` is False
        and ``code``/``message`` say why.

        :param model: ``emo-detect-v1`` (before emo-v1) or ``emoji-detect-v1`` (before emoji-v1).
        :param image_url: an http(s) URL of the image (JPG/PNG/BMP/WebP, sides 400..7000 px).
        :param ratio: ``1:1`` (default) or, for emo-detect-v1, ``3:4``: the shape of ``ext_bbox``, so of
            emo-v1's video (and its price).
        :raises ValueError: a ratio the model does not take (nothing is sent).
        :raises DashScopeAPIError: the service refused the request (not billed), or answered 200 with an
            answer that can't be read (billed; not retried).
        :raises DashScopeConnectionError: if the service stayed unreachable.
        """
        body, ratio = detection_request(model, image_url, ratio)
        detection = self._idempotent_call(
            "POST",
            FACE_DETECT_ENDPOINT,
            "detect",
            detection_reader(model, ratio),
            limiter=self.pacing.detect_limiter(model),
            json=body,
        )
        self.log.info(
            "DashScope %s (ratio %s): %s (request_id %s, %s image(s) billed)",
            model,
            ratio,
            describe_detection(detection),
            detection.request_id,
            detection.image_count,
        )
        return detection

    # -- connection test ---------------------------------------------------------------------------

    def test_connection(self) -> tuple[bool, str]:
        """Check the base URL and the key with one cheap authenticated query (a task id that never exists).

        A valid key gets ``200 UNKNOWN``; the message never contains the key.
        """
        try:
            key = api_key_from_connection(self.dashscope_connection)
        except Exception as exc:
            return False, str(exc)
        # A test should answer at once, throttled or not.
        saved = self.retry_policy
        self.retry_policy = saved.single_attempt()
        try:
            task = self.get_task(PROBE_TASK_ID)
        except DashScopeAPIError as exc:
            prefix = "The API key was refused: " if exc.status_code == 401 else ""
            return False, (prefix + str(exc)).replace(key, "***")
        except Exception as exc:
            return False, describe(exc).replace(key, "***")
        finally:
            self.retry_policy = saved
        return True, f"Connected to {self.base_url}: API key accepted (probe task {task.status})"
