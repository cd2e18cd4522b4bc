"""The provider's exceptions: picklable, and never carrying the key."""

from __future__ import annotations

import pickle

from dashscope_provider.compat import AirflowFailException
from dashscope_provider.exceptions import (
    DashScopeAPIError,
    DashScopeDetectionFailed,
    DashScopeQuotaExhausted,
    DashScopeRequestNotSent,
    DashScopeResultExpired,
    DashScopeSubmissionUncertain,
    DashScopeTaskFailed,
)

from tests.unit.conftest import assert_no_key


def test_exceptions_survive_pickling_and_carry_no_key() -> None:
    errors = [
        DashScopeAPIError(429, "Throttling.RateQuota", "slow down", "req-1", "submit"),
        DashScopeSubmissionUncertain("connection dropped", "fp-1", 502),
        DashScopeTaskFailed("t-1", "FAILED", "InvalidURL", "bad"),
        DashScopeResultExpired(403, "http://x/a.mp4", "AccessDenied: Request has expired."),
        DashScopeRequestNotSent("refused"),
        DashScopeDetectionFailed("emo-detect-v1", "InvalidFile.NoHuman", "no face", "req-2"),
        DashScopeQuotaExhausted(429, "Throttling.AllocationQuota", "Free allocated quota exceeded.", "r-3", "submit"),
    ]
    for error in errors:
        clone = pickle.loads(pickle.dumps(error))
        assert type(clone) is type(error) and str(clone) == str(error)
        assert_no_key(error)
    assert errors[0].retryable
    assert not DashScopeAPIError(502, None, "gateway").retryable
    assert DashScopeAPIError(500, "InternalError", "x").retryable
    assert isinstance(errors[2], AirflowFailException)


def test_a_failed_detection_is_not_retried_by_airflow() -> None:
    error = DashScopeDetectionFailed("emoji-detect-v1", "InvalidFile.FacePose", "bad pose", "req-9")
    assert isinstance(error, AirflowFailException)
    assert "InvalidFile.FacePose" in str(error) and "req-9" in str(error)


def test_a_used_up_free_quota_is_its_own_error_and_not_retryable() -> None:
    answer = DashScopeAPIError(429, "Throttling.AllocationQuota", "Free allocated quota exceeded.", "r-1", "submit")
    error = DashScopeQuotaExhausted.refine(answer)
    assert type(error) is DashScopeQuotaExhausted and isinstance(error, DashScopeAPIError)
    assert isinstance(error, AirflowFailException)  # an Airflow task raising it fails without retries
    assert not error.retryable and error.status_code == 429
    assert str(error) == str(answer)
    assert DashScopeQuotaExhausted.refine(error) is error
    assert error.serialize()[0] == "dashscope_provider.exceptions.DashScopeQuotaExhausted"
    # Other Throttling.* answers stay what they are, retryable.
    for other in (
        DashScopeAPIError(429, "Throttling.AllocationQuota", "Allocated quota exceeded"),
        DashScopeAPIError(429, "Throttling.RateQuota", "Requests rate limit exceeded"),
        DashScopeAPIError(400, "DataInspectionFailed", "Input data may contain inappropriate content."),
    ):
        assert DashScopeQuotaExhausted.refine(other) is other
    assert DashScopeQuotaExhausted.matches(
        DashScopeAPIError(429, "Throttling.AllocationQuota", "free allocated quota exceeded, please upgrade")
    )
