"""Exceptions of the DashScope provider.

They sort failures by the one question that matters for a paid, non-idempotent API: *could a task
(and a bill) exist?*

* :class:`DashScopeAPIError`: the service answered with its JSON error body, so it refused the call.
  For a submission that proves no task was created. :class:`DashScopeQuotaExhausted` is the one that
  says the account's free quota is used up (429 ``Throttling.AllocationQuota``, "Free allocated quota
  exceeded"): unlike other 429s, waiting does not cure it, so nothing retries it.
* :class:`DashScopeRequestNotSent`: the request never left this machine (connection refused, connect
  timeout, DNS failure). Nothing was created either. It is a :class:`DashScopeConnectionError`, which
  queries and cancels raise when the service can't be reached after retries.
* :class:`DashScopeSubmissionUncertain`: the submission may have reached the service but no usable
  answer came back. A task may exist and be billed; it must never be re-sent automatically, so it is an
  :class:`~airflow.sdk.exceptions.AirflowFailException` (an Airflow task raising it fails without retry).
* :class:`DashScopeTaskFailed`: a task ended ``FAILED``/``CANCELED``/``UNKNOWN``. Also an
  ``AirflowFailException``: the service's verdict on a task does not change when it is asked again.
* :class:`DashScopeResultExpired`: the result's pre-signed URL is dead (403/404; it lives 24 h).
* :class:`DashScopeDetectionFailed`: a face detection answered that the image can't be used. Also an
  ``AirflowFailException``: detecting the same image again gives the same answer, and is billed again.

None of them ever holds the API key: they are built from what the service answered and from what the
HTTP client reported (URLs, status codes), never from request headers.
"""

from __future__ import annotations

from typing import Any

from dashscope_provider.compat import AirflowException, AirflowFailException


class DashScopeError(AirflowException):
    """Base class of every error raised by the DashScope provider."""

    #: True only when it is certain that the request never reached the service.
    request_not_sent: bool = False

    def _init_args(self) -> tuple[Any, ...]:
        """The constructor arguments that rebuild this error (for pickling and Airflow's serialize())."""
        return (str(self),)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), self._init_args())

    def serialize(self) -> tuple[str, tuple[Any, ...], dict[str, Any]]:
        cls = type(self)
        return f"{cls.__module__}.{cls.__name__}", self._init_args(), {}


class DashScopeConfigError(DashScopeError):
    """The DashScope connection cannot be used as configured (missing, or without an API key).

    Always raised before any request is sent: nothing was created or billed.
    """

    request_not_sent = True


class DashScopeAPIError(DashScopeError):
    """The service answered an HTTP error, usually with its JSON body ``{request_id, code, message}``.

    :param status_code: the HTTP status.
    :param code: DashScope's error code (``InvalidApiKey``, ``InvalidParameter``, ``Throttling.RateQuota``,
        ...), or None when the answer had no JSON error body.
    :param message: DashScope's error message (or a short description of the non-JSON answer).
    :param request_id: DashScope's request id, for support tickets.
    :param operation: what was being done (``submit``, ``query``, ``cancel``), for the message only.
    """

    def __init__(
        self,
        status_code: int,
        code: str | None,
        message: str | None,
        request_id: str | None = None,
        operation: str | None = None,
    ) -> None:
        self.status_code = status_code
        self.code = code
        self.message = message
        self.request_id = request_id
        self.operation = operation
        super().__init__(self._describe())

    def _describe(self) -> str:
        what = f"DashScope {self.operation} failed" if self.operation else "DashScope API error"
        text = _with_optional(f"{what}: HTTP {self.status_code}", " {}", self.code)
        text = _with_optional(text, ": {}", self.message)
        return _with_optional(text, " (request_id={})", self.request_id)

    @property
    def has_error_body(self) -> bool:
        """Whether the service itself answered (a JSON body with a ``code``), not a proxy or gateway."""
        return self.code is not None

    @property
    def retryable(self) -> bool:
        """Whether sending the same request again is safe and may succeed.

        429 (throttled) always is; a 5xx only when it carries DashScope's JSON error body, because that
        proves the service handled the call and created nothing. A bare 5xx from a gateway proves nothing.
        """
        return self.status_code == 429 or (self.status_code >= 500 and self.has_error_body)

    def _init_args(self) -> tuple[Any, ...]:
        return (self.status_code, self.code, self.message, self.request_id, self.operation)


#: The code and the message phrase of a free-only account that has used its free quota (the rate-limit page).
QUOTA_EXHAUSTED_CODE = "Throttling.AllocationQuota"
QUOTA_EXHAUSTED_PHRASE = "free allocated quota exceeded"


class DashScopeQuotaExhausted(DashScopeAPIError, AirflowFailException):
    """The account's free quota is used up: ``Throttling.AllocationQuota``, "Free allocated quota exceeded".

    A free-only account (no pay-as-you-go) has spent its free allowance of the model; every further call
    of the account gets the same answer, however long one waits, so it is never retried (``retryable``
    is False), unlike the other 429s. No task was created. A caller should stop submitting for this
    account (other rows would only get the same answer). An ``AirflowFailException``: an Airflow task
    that raises it fails without using its retries.
    """

    @property
    def retryable(self) -> bool:
        return False

    @classmethod
    def matches(cls, error: DashScopeAPIError) -> bool:
        """Whether ``error`` says the free quota is used up (its code, and the phrase in its message)."""
        return error.code == QUOTA_EXHAUSTED_CODE and QUOTA_EXHAUSTED_PHRASE in (error.message or "").lower()

    @classmethod
    def refine(cls, error: DashScopeAPIError) -> DashScopeAPIError:
        """``error`` as a :class:`DashScopeQuotaExhausted` when it :meth:`matches`, else ``error`` itself."""
        if isinstance(error, cls) or not cls.matches(error):
            return error
        return cls(error.status_code, error.code, error.message, error.request_id, error.operation)


class DashScopeConnectionError(DashScopeError):
    """The service could not be reached, or gave no usable answer, for a call that is safe to repeat.

    Raised by queries, cancels and result downloads once the hook's retries are used up (connection
    refused or dropped, timeouts, 5xx, unreadable or truncated answers).

    :param reason: what went wrong, without any credential.
    """

    _prefix = "DashScope unreachable"

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"{self._prefix}: {reason}")

    def _init_args(self) -> tuple[Any, ...]:
        return (self.reason,)


class DashScopeRequestNotSent(DashScopeConnectionError):
    """The request provably never reached the service (connection refused, connect timeout, DNS failure).

    Raised once the hook's retries for this case are used up. Nothing was created or billed.
    """

    request_not_sent = True
    _prefix = "DashScope request not sent"


class DashScopeSubmissionUncertain(DashScopeError, AirflowFailException):
    """A submission may have created a task, but no usable answer came back.

    Causes: the connection dropped after the request was sent, a read timeout, a 5xx without DashScope's
    error body (a gateway answered), or a 2xx whose body could not be read. Sending it again could pay
    twice, so nothing retries it: not the hook, and (being an ``AirflowFailException``) not Airflow's
    task retries. Check the DashScope console before submitting again.

    :param reason: what went wrong, without any credential.
    :param request_fingerprint: an optional caller-provided id of the request (for the caller's records).
    :param status_code: the HTTP status if an (unusable) answer came back.
    """

    def __init__(self, reason: str, request_fingerprint: str | None = None, status_code: int | None = None) -> None:
        self.reason = reason
        self.request_fingerprint = request_fingerprint
        self.status_code = status_code
        text = f"DashScope submission uncertain (a task may exist and be billed; not re-sent): {reason}"
        super().__init__(_with_optional(text, " [request {}]", request_fingerprint))

    def _init_args(self) -> tuple[Any, ...]:
        return (self.reason, self.request_fingerprint, self.status_code)


class DashScopeTaskFailed(DashScopeError, AirflowFailException):
    """A DashScope task ended without a video: ``FAILED``, ``CANCELED`` or ``UNKNOWN`` (expired/unknown id).

    An ``AirflowFailException`` on purpose: the Airflow task fails without using its retries, since
    polling the same DashScope task again returns the same terminal status (a new generation is a new,
    paid submission, which is the caller's decision).

    :param task_id: the DashScope task id.
    :param status: the terminal status.
    :param code: the task's error code, if any.
    :param message: the task's error message, if any.
    """

    def __init__(self, task_id: str, status: str, code: str | None = None, message: str | None = None) -> None:
        self.task_id = task_id
        self.status = status
        self.code = code
        self.message = message
        super().__init__(_with_verdict(f"DashScope task {task_id} ended {status}", code, message))

    def _init_args(self) -> tuple[Any, ...]:
        return (self.task_id, self.status, self.code, self.message)


class DashScopeResultExpired(DashScopeError):
    """The result video's pre-signed URL answered 403/404: it expired (24 h after success) or is invalid.

    :param status_code: the HTTP status of the download.
    :param url: the URL without its query string (the signature is left out of messages).
    :param detail: the storage service's error code/message, if it sent one.
    """

    def __init__(self, status_code: int, url: str, detail: str | None = None) -> None:
        self.status_code = status_code
        self.url = url
        self.detail = detail
        text = _with_optional(f"DashScope result URL is no longer valid (HTTP {status_code}) for {url}", ": {}", detail)
        super().__init__(text + "; result URLs expire 24 h after the task succeeded")

    def _init_args(self) -> tuple[Any, ...]:
        return (self.status_code, self.url, self.detail)


class DashScopeDetectionFailed(DashScopeError, AirflowFailException):
    """A face detection was answered (and billed) but did not pass: the image can't be used as it is.

    An ``AirflowFailException`` on purpose: detecting the same image again returns the same verdict and
    bills another image; a different image (or ratio) is the caller's decision.

    :param model: the detection model.
    :param code: the service's failure code (``InvalidFile.NoHuman``...).
    :param message: the service's failure message.
    :param request_id: the service's request id.
    """

    def __init__(
        self, model: str, code: str | None = None, message: str | None = None, request_id: str | None = None
    ) -> None:
        self.model = model
        self.code = code
        self.message = message
        self.request_id = request_id
        text = _with_verdict(f"DashScope {model} did not pass the image", code, message)
        super().__init__(_with_optional(text, " (request_id={})", request_id))

    def _init_args(self) -> tuple[Any, ...]:
        return (self.model, self.code, self.message, self.request_id)


def _with_verdict(text: str, code: str | None, message: str | None) -> str:
    """``text: code: message``, leaving out what the service did not say."""
    return ": ".join(part for part in (text, code, message) if part)


def _with_optional(text: str, template: str, value: object) -> str:
    """``text`` and ``template`` filled with ``value``, or ``text`` alone when the service gave no value."""
    return text + template.format(value) if value else text
