"""The retry policy: what may be sent again and why, the attempts (429 not counted), and client failures."""

from __future__ import annotations

import logging
import socket

import aiohttp
import pytest
import requests
import tenacity
from dashscope_provider.exceptions import (
    DashScopeAPIError,
    DashScopeConnectionError,
    DashScopeQuotaExhausted,
    DashScopeRequestNotSent,
    DashScopeResultExpired,
    DashScopeSubmissionUncertain,
)
from dashscope_provider.retry import RetryPolicy, request_never_sent, transport_error

THROTTLED = DashScopeAPIError(429, "Throttling.RateQuota", "slow down", "r")
SERVICE_500 = DashScopeAPIError(500, "InternalError", "x", "r")
GATEWAY_502 = DashScopeAPIError(502, None, "answer without a DashScope error body")
REFUSED_400 = DashScopeAPIError(400, "InvalidParameter", "bad")
#: Content moderation refused the input: the same input gets the same answer.
INSPECTION_400 = DashScopeAPIError(400, "DataInspectionFailed", "Input data may contain inappropriate content.")
#: A free-only account has used its quota: waiting does not cure it (whether or not the hook refined it).
FREE_QUOTA = DashScopeAPIError(429, "Throttling.AllocationQuota", "Free allocated quota exceeded.", "r")
ALLOCATION = DashScopeAPIError(429, "Throttling.AllocationQuota", "Allocated quota exceeded", "r")
LOST = DashScopeConnectionError("dropped")
NOT_SENT = DashScopeRequestNotSent("refused")
UNCERTAIN = DashScopeSubmissionUncertain("dropped after sending")


@pytest.mark.parametrize(
    ("error", "submit", "repeatable"),
    [
        (THROTTLED, True, True),
        (SERVICE_500, True, True),
        (GATEWAY_502, False, True),  # a gateway's 5xx: the service may have acted on a submission
        (REFUSED_400, False, False),
        (INSPECTION_400, False, False),
        (FREE_QUOTA, False, False),
        (DashScopeQuotaExhausted.refine(FREE_QUOTA), False, False),
        (ALLOCATION, True, True),  # other Throttling.* 429s: as before
        (DashScopeAPIError(429, "Throttling.BurstRate", "Request rate increased too quickly"), True, True),
        (NOT_SENT, True, True),
        (LOST, False, True),
        (UNCERTAIN, False, False),
        (DashScopeResultExpired(403, "http://x/v.mp4"), False, False),
        (ValueError("a bug"), False, False),
    ],
)
def test_retry_reason(error: BaseException, submit: bool, repeatable: bool) -> None:
    policy = RetryPolicy()
    assert (policy.retry_reason(error, idempotent=False) is not None) is submit
    assert (policy.retry_reason(error, idempotent=True) is not None) is repeatable
    if submit:
        assert isinstance(policy.retry_reason(error, idempotent=False), str)


def test_policy_is_validated_and_frozen() -> None:
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=0)
    policy = RetryPolicy(max_attempts=3, initial_wait=0.5)
    with pytest.raises(AttributeError):
        policy.max_attempts = 9  # type: ignore[misc]
    assert policy.single_attempt() == RetryPolicy(max_attempts=1, initial_wait=0.5, throttle_timeout=0.0)


def _failing(errors: list[BaseException]) -> tuple[list[int], object]:
    calls: list[int] = []

    def attempt() -> str:
        calls.append(1)
        if len(calls) <= len(errors):
            raise errors[len(calls) - 1]
        return "ok"

    return calls, attempt


def test_throttling_does_not_count_as_an_attempt() -> None:
    policy = RetryPolicy(max_attempts=2, initial_wait=0.001, max_wait=0.001, throttle_timeout=60)
    calls, attempt = _failing([THROTTLED] * 5 + [SERVICE_500])
    assert policy.retrying("submit", logging.getLogger("t"), idempotent=False)(attempt) == "ok"
    assert len(calls) == 7
    calls, attempt = _failing([SERVICE_500, SERVICE_500, SERVICE_500])
    with pytest.raises(DashScopeAPIError):
        policy.retrying("submit", logging.getLogger("t"), idempotent=False)(attempt)
    assert len(calls) == 2  # two real failures end it


def test_throttling_is_bounded_by_time() -> None:
    policy = RetryPolicy(max_attempts=5, initial_wait=0.01, max_wait=0.01, throttle_timeout=0.05)
    calls, attempt = _failing([THROTTLED] * 1000)
    with pytest.raises(DashScopeAPIError) as info:
        policy.retrying("query", logging.getLogger("t"), idempotent=True)(attempt)
    assert info.value.status_code == 429
    assert 2 <= len(calls) < 50


def test_on_retry_sees_each_failure_about_to_be_retried() -> None:
    policy = RetryPolicy(max_attempts=5, initial_wait=0.001, max_wait=0.001, throttle_timeout=60)
    seen: list[BaseException] = []
    calls, attempt = _failing([THROTTLED, SERVICE_500, THROTTLED])
    assert policy.retrying("submit", logging.getLogger("t"), idempotent=False, on_retry=seen.append)(attempt) == "ok"
    assert seen == [THROTTLED, SERVICE_500, THROTTLED]
    seen.clear()
    calls, attempt = _failing([FREE_QUOTA])
    with pytest.raises(DashScopeAPIError):
        policy.retrying("submit", logging.getLogger("t"), idempotent=False, on_retry=seen.append)(attempt)
    assert (len(calls), seen) == (1, [])  # not retried, so not seen


def test_a_lost_submission_is_never_retried() -> None:
    policy = RetryPolicy(max_attempts=5, initial_wait=0.001, max_wait=0.001)
    calls, attempt = _failing([UNCERTAIN])
    with pytest.raises(DashScopeSubmissionUncertain):
        policy.retrying("submit", logging.getLogger("t"), idempotent=False)(attempt)
    assert len(calls) == 1


def test_async_retrying_uses_the_same_rules() -> None:
    import asyncio

    policy = RetryPolicy(max_attempts=3, initial_wait=0.001, max_wait=0.001)
    calls: list[int] = []

    async def attempt() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise LOST
        return "ok"

    assert asyncio.run(policy.async_retrying("query", logging.getLogger("t"), idempotent=True)(attempt)) == "ok"
    assert isinstance(policy.async_retrying("query", logging.getLogger("t"), idempotent=True), tenacity.AsyncRetrying)


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_transport_error_tells_never_sent_from_lost() -> None:
    with pytest.raises(requests.RequestException) as refused:
        requests.get(f"http://127.0.0.1:{_closed_port()}/", timeout=2)
    assert request_never_sent(refused.value)
    assert isinstance(transport_error(refused.value, idempotent=False), DashScopeRequestNotSent)

    read_timeout = requests.exceptions.ReadTimeout("read timed out")
    dropped = requests.exceptions.ConnectionError("Connection aborted: RemoteDisconnected")
    for lost in (read_timeout, dropped, requests.exceptions.ChunkedEncodingError("cut")):
        assert not request_never_sent(lost)
        assert type(transport_error(lost, idempotent=True)) is DashScopeConnectionError
        uncertain = transport_error(lost, idempotent=False, request_fingerprint="row-1")
        assert isinstance(uncertain, DashScopeSubmissionUncertain) and uncertain.request_fingerprint == "row-1"
    assert isinstance(transport_error(TimeoutError(), idempotent=True), DashScopeConnectionError)


def test_transport_error_for_aiohttp() -> None:
    import asyncio

    async def fetch() -> None:
        async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{_closed_port()}/"):
            pass

    with pytest.raises(aiohttp.ClientConnectorError) as info:
        asyncio.run(fetch())
    assert isinstance(transport_error(info.value, idempotent=True), DashScopeRequestNotSent)
    assert type(transport_error(aiohttp.ServerDisconnectedError(), idempotent=True)) is DashScopeConnectionError
