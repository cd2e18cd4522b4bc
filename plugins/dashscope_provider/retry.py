"""The one retry policy of the provider, shared by the sync hook, the async hook and the video transfer.

What may be sent again depends on one question: could the first request have done something (created a
task, been billed)? :meth:`RetryPolicy.retry_reason` answers it for every error the provider raises, and
:func:`transport_error` turns a client library's failure into the provider error that says which case
it is. Retries use tenacity (exponential back-off with jitter).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import aiohttp
import requests
import tenacity
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError

from dashscope_provider.exceptions import (
    DashScopeAPIError,
    DashScopeConnectionError,
    DashScopeQuotaExhausted,
    DashScopeRequestNotSent,
    DashScopeSubmissionUncertain,
)

#: Longest time one call keeps retrying while the service answers 429 (throttled) to it.
DEFAULT_THROTTLE_TIMEOUT = 120.0


def describe(exc: BaseException) -> str:
    """``Type: text`` of an exception (client errors carry URLs and reasons, never request headers)."""
    return f"{type(exc).__name__}: {exc}"


def request_never_sent(exc: BaseException) -> bool:
    """Whether the HTTP client failed before the request could reach the server.

    ``requests``: only a connect timeout or a failure to open the connection (refused, unreachable, DNS)
    proves it; ``NewConnectionError`` (and its ``NameResolutionError``) are ``ConnectTimeoutError``
    subclasses in urllib3 2. ``aiohttp``: a ``ClientConnectorError`` (the connection could not be opened).
    A dropped connection or a read timeout after sending proves nothing.
    """
    if isinstance(exc, aiohttp.ClientConnectorError):
        return True
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return True
    if not isinstance(exc, requests.exceptions.ConnectionError) or isinstance(
        exc, (requests.exceptions.ReadTimeout, requests.exceptions.ChunkedEncodingError)
    ):
        return False
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return isinstance(reason, (NewConnectionError, ConnectTimeoutError))


def transport_error(
    exc: BaseException, *, idempotent: bool, request_fingerprint: str | None = None
) -> DashScopeRequestNotSent | DashScopeConnectionError | DashScopeSubmissionUncertain:
    """The provider error for a failure of the HTTP client itself (no answer was read).

    * never sent (see :func:`request_never_sent`): :class:`DashScopeRequestNotSent`, safe to send again;
    * sent, answer lost, call ``idempotent``: :class:`DashScopeConnectionError`, safe to send again;
    * sent, answer lost, call not idempotent (a submission): :class:`DashScopeSubmissionUncertain`, which
      nothing retries, because the service may have acted on it.

    :param exc: what the client raised.
    :param idempotent: whether repeating the call is harmless (queries, cancels, detections, downloads).
    :param request_fingerprint: the caller's id of the request, quoted in ``DashScopeSubmissionUncertain``.
    """
    if request_never_sent(exc):
        return DashScopeRequestNotSent(describe(exc))
    if idempotent:
        return DashScopeConnectionError(describe(exc))
    return DashScopeSubmissionUncertain(f"no answer after the request was sent ({describe(exc)})", request_fingerprint)


class _AttemptsExcludingThrottle:
    """A tenacity ``stop``: give up after ``max_attempts`` failures, not counting 429 answers.

    A 429 says "too fast, come back": it proves nothing is wrong with the request or the service, so it
    must not use up the attempts meant for real failures (a burst of 429s plus one 5xx would otherwise
    end a perfectly good call). Throttling is bounded by time instead: ``throttle_timeout`` seconds.
    One instance per call (it counts that call's failures).
    """

    def __init__(self, max_attempts: int, throttle_timeout: float) -> None:
        self.max_attempts = max_attempts
        self.throttle_timeout = throttle_timeout
        self.failures = 0

    def __call__(self, state: tenacity.RetryCallState) -> bool:
        error = state.outcome.exception() if state.outcome else None
        if isinstance(error, DashScopeAPIError) and error.status_code == 429:
            return (state.seconds_since_start or 0.0) >= self.throttle_timeout
        self.failures += 1
        return self.failures >= self.max_attempts


@dataclass(frozen=True)
class RetryPolicy:
    """How often, how long, and which failures one call retries.

    :param max_attempts: attempts per call for the retryable failures (429 answers are not counted: they
        are retried for up to ``throttle_timeout`` seconds).
    :param initial_wait: first back-off in seconds (doubles per attempt, with jitter of the same size).
    :param max_wait: longest back-off in seconds.
    :param throttle_timeout: seconds one call keeps retrying while it is throttled (429).
    """

    max_attempts: int = 5
    initial_wait: float = 1.0
    max_wait: float = 30.0
    throttle_timeout: float = DEFAULT_THROTTLE_TIMEOUT

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")

    def single_attempt(self) -> RetryPolicy:
        """The same policy with one attempt and no waiting while throttled (an answer at once)."""
        return replace(self, max_attempts=1, throttle_timeout=0.0)

    def retry_reason(self, exc: BaseException, *, idempotent: bool) -> str | None:
        """Why ``exc`` may be retried, or None if it must not be.

        Safe whatever the call: a 429 (throttled: the service did nothing), a 5xx that carries DashScope's
        JSON error body (the service itself answered that it failed, so it created nothing), and a
        request that provably never left this machine. For an ``idempotent`` call (query, cancel,
        detection, download) also any other 5xx and any lost answer: repeating it is harmless. A lost
        answer to a non-idempotent call is :class:`DashScopeSubmissionUncertain` and never retried: the
        service may have acted on it. Never retried either: the 429 that says a free quota is used up
        (:class:`~dashscope_provider.exceptions.DashScopeQuotaExhausted`: waiting does not cure it) and
        every other 4xx, such as 400 ``DataInspectionFailed`` (content moderation): the same request
        gets the same answer.

        :param exc: the failure of one attempt.
        :param idempotent: whether repeating the call is harmless.
        """
        if isinstance(exc, DashScopeSubmissionUncertain):
            return None
        if isinstance(exc, DashScopeAPIError):
            if exc.status_code == 429:
                return None if DashScopeQuotaExhausted.matches(exc) else "throttled (429)"
            if exc.status_code >= 500 and exc.has_error_body:
                return f"the service answered {exc.status_code} with its error body (it did nothing)"
            if exc.status_code >= 500 and idempotent:
                return f"HTTP {exc.status_code} to a call that is safe to repeat"
            return None
        if isinstance(exc, DashScopeRequestNotSent):
            return "the request was never sent"
        if isinstance(exc, DashScopeConnectionError) and idempotent:
            return "no usable answer to a call that is safe to repeat"
        return None

    def _tenacity_kwargs(
        self,
        operation: str,
        logger: logging.Logger | Any,
        idempotent: bool,
        on_retry: Callable[[BaseException], None] | None,
    ) -> dict[str, Any]:
        def before_sleep(state: tenacity.RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome else None
            delay = state.next_action.sleep if state.next_action else 0.0
            if on_retry is not None and error is not None:
                on_retry(error)
            reason = self.retry_reason(error, idempotent=idempotent) if error else None
            # The errors' texts never contain the API key (see exceptions.py).
            logger.warning(
                "DashScope %s attempt %d failed (%s; %s); retrying in %.1f s",
                operation,
                state.attempt_number,
                error,
                reason,
                delay,
            )

        return {
            "stop": _AttemptsExcludingThrottle(self.max_attempts, self.throttle_timeout),
            "wait": tenacity.wait_exponential_jitter(
                initial=self.initial_wait, max=self.max_wait, jitter=self.initial_wait
            ),
            "retry": tenacity.retry_if_exception(lambda exc: self.retry_reason(exc, idempotent=idempotent) is not None),
            "before_sleep": before_sleep,
            "reraise": True,
        }

    def retrying(
        self,
        operation: str,
        logger: logging.Logger | Any,
        *,
        idempotent: bool,
        on_retry: Callable[[BaseException], None] | None = None,
    ) -> tenacity.Retrying:
        """A tenacity ``Retrying`` for one sync call: ``policy.retrying(...)(attempt, *args)``.

        :param operation: what is being done (``submit``, ``query``...), for log lines.
        :param logger: where to log each retry.
        :param idempotent: whether repeating the call is harmless (see :meth:`retry_reason`).
        :param on_retry: called with each failure that is about to be retried (the hooks count 429s with it).
        """
        return tenacity.Retrying(**self._tenacity_kwargs(operation, logger, idempotent, on_retry))

    def async_retrying(
        self,
        operation: str,
        logger: logging.Logger | Any,
        *,
        idempotent: bool,
        on_retry: Callable[[BaseException], None] | None = None,
    ) -> tenacity.AsyncRetrying:
        """The same as :meth:`retrying` for a coroutine: ``await policy.async_retrying(...)(attempt)``."""
        return tenacity.AsyncRetrying(**self._tenacity_kwargs(operation, logger, idempotent, on_retry))
