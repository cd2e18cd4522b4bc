"""hooks/pacing.py: limits per Alibaba Cloud account over real HTTP (the emulator's accounts, the face-detect
stub): submit and detect pacing shared by the keys of one account, the query budget, the 429s a hook
absorbed (``throttled``), a used-up free quota, content moderation.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from typing import Any

import pytest
from dashscope_emulator import EmulatorServer, key_fingerprint
from dashscope_provider.compat import AirflowFailException
from dashscope_provider.exceptions import DashScopeAPIError, DashScopeQuotaExhausted

from tests.unit.conftest import (
    CONN_ID,
    KEY,
    OTHER_ACCOUNT_KEY,
    SAME_ACCOUNT_KEY,
    conn_json,
    is_query,
    is_submit,
    logged_requests,
)
from tests.unit.dashscope_provider.conftest import detect_conn, fast_hook
from tests.unit.dashscope_provider.face_detect_stub import FaceDetectStub

pytestmark = pytest.mark.usefixtures("no_key_in_logs")

FREE_QUOTA = ("Throttling.AllocationQuota", "Free allocated quota exceeded.")


def _accepted_times(log: list[dict[str, Any]], fingerprints: set[str]) -> list[float]:
    return sorted(r["time"] for r in log if r["key_fingerprint"] in fingerprints and r["status"] == 200)


# -- submit pacing ------------------------------------------------------------------------------------


def test_submits_are_paced_per_model_at_the_accounts_rate(
    dashscope_conn: str, make_hook: Any, emulator: Any, emoji_input: dict[str, Any], emo_input: dict[str, Any]
) -> None:
    hook = make_hook()
    # 90 % of the page's 1/s and 5/s, so that jitter does not land two arrivals in one of its windows.
    assert (hook.pacing.submit_limiter("emoji-v1").qps, hook.pacing.submit_limiter("emo-v1").qps) == (0.9, 4.5)
    started = time.monotonic()
    for _ in range(3):
        hook.submit_task("emoji-v1", emoji_input)
    assert time.monotonic() - started >= 2 / 0.9 - 0.05  # emoji-v1: below one per second
    started = time.monotonic()
    for _ in range(6):
        hook.submit_task("emo-v1", emo_input)
    assert 5 / 4.5 - 0.05 <= time.monotonic() - started < 3  # emo-v1: its own pace, not emoji-v1's
    statuses = [r["status"] for r in logged_requests(emulator, is_submit, 9)]
    # Paced, the emulator's windows admit them all (the odd 429 from arrival jitter is retried and counted).
    assert statuses.count(200) == 9 and statuses.count(429) <= 1
    assert hook.throttled == statuses.count(429)


def test_two_keys_of_one_account_share_its_submit_rate_and_other_accounts_do_not_wait(
    account_emulator: Any, make_hook: Any, emoji_input: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two connections (two keys) naming one account, and a connection of another account, all at once.
    base = account_emulator.base_url
    first = make_hook(detect_conn(monkeypatch, base, "acct_a", KEY, account="acct"))
    second = make_hook(detect_conn(monkeypatch, base, "acct_b", SAME_ACCOUNT_KEY, account="acct"))
    other = make_hook(detect_conn(monkeypatch, base, "other", OTHER_ACCOUNT_KEY))
    assert first.pacing.submit_limiter("emoji-v1") is second.pacing.submit_limiter("emoji-v1")
    assert first.pacing.submit_limiter("emoji-v1") is not other.pacing.submit_limiter("emoji-v1")
    assert first.pacing.submit_limiter("emoji-v1") is not first.pacing.submit_limiter("emo-v1")
    took: dict[str, float] = {}

    def submit(name: str, hook: Any, count: int) -> None:
        started = time.monotonic()
        for _ in range(count):
            hook.submit_task("emoji-v1", emoji_input)
        took[name] = time.monotonic() - started

    threads = [
        threading.Thread(target=submit, args=args) for args in (("a", first, 2), ("b", second, 2), ("o", other, 2))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    log = logged_requests(account_emulator, is_submit, 6)
    acct = {key_fingerprint(KEY), key_fingerprint(SAME_ACCOUNT_KEY)}
    accepted = _accepted_times(log, acct)
    assert len(accepted) == 4
    # The account's emoji-v1 rate (1/s) holds for both keys together: 4 submits span over 3 s, more than
    # a second apart, spaced by the shared pacer rather than by 429s (the odd one from jitter is retried).
    assert accepted[-1] - accepted[0] >= 3 / 0.9 - 0.1
    assert min(b - a for a, b in itertools.pairwise(accepted)) >= 1 - 0.05
    acct_429 = [r for r in log if r["key_fingerprint"] in acct and r["status"] == 429]
    assert len(acct_429) <= 1
    assert first.throttled + second.throttled == len(acct_429)
    assert max(took["a"], took["b"]) >= 2 / 0.9 - 0.05
    # The other account has its own budget: its 2 submits take its own second, not the account's 3.
    assert len(_accepted_times(log, {key_fingerprint(OTHER_ACCOUNT_KEY)})) == 2
    assert took["o"] < 2.0
    assert {t["account"] for t in account_emulator.tasks()} == {"acct", key_fingerprint(OTHER_ACCOUNT_KEY)}


# -- the 429s a hook absorbed ---------------------------------------------------------------------------


def test_throttled_counts_the_429s_retried_through_in_queries(monkeypatch: pytest.MonkeyPatch) -> None:
    # An emulator allowing 1 query per second: this process's 15/s pacing is too fast for it, as when
    # other processes of the account use up its budget.
    from dashscope_provider.hooks.dashscope import DashScopeHook

    with EmulatorServer(api_keys=[KEY], port=0, speed=1000, query_qps=1) as server:
        monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", conn_json(server.base_url))
        hook = DashScopeHook(CONN_ID, retry_initial=0.05, retry_max=0.2, timeout=(2.0, 10.0))
        assert [hook.get_task(f"task-{i}").status for i in range(3)] == ["UNKNOWN"] * 3
        sync_429 = [r["status"] for r in logged_requests(server, is_query, 3)].count(429)
        assert sync_429 >= 1 and hook.throttled == sync_429

        async def poll() -> Any:
            async_hook = fast_hook()
            for i in range(3):
                await async_hook.get_task(f"task-{i}")
            return async_hook

        async_hook = asyncio.run(poll())
        all_429 = [r["status"] for r in logged_requests(server, is_query, 6)].count(429)
        assert async_hook.throttled == all_429 - sync_429 >= 1


# -- errors waiting does not cure -----------------------------------------------------------------------


def test_a_used_up_free_quota_is_raised_at_once_and_never_retried(
    account_emulator: Any, make_hook: Any, emo_input: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    account_emulator.set_free_quota("acct", 1)
    first = make_hook(detect_conn(monkeypatch, account_emulator.base_url, "fq_a", KEY, account="acct"))
    second = make_hook(detect_conn(monkeypatch, account_emulator.base_url, "fq_b", SAME_ACCOUNT_KEY, account="acct"))
    first.submit_task("emo-v1", emo_input)
    for hook in (first, second):  # the account's quota, whichever of its keys
        started = time.monotonic()
        with pytest.raises(DashScopeQuotaExhausted) as info:
            hook.submit_task("emo-v1", emo_input)
        assert time.monotonic() - started < 1.0  # no waiting, no retry
        error = info.value
        assert isinstance(error, DashScopeAPIError) and isinstance(error, AirflowFailException)
        assert (error.status_code, error.code, error.message) == (429, *FREE_QUOTA)
        assert not error.retryable and error.request_id
        assert hook.throttled == 0
    assert [r["status"] for r in logged_requests(account_emulator, is_submit, 3)] == [200, 429, 429]
    assert len(account_emulator.tasks()) == 1
    # Another account is not concerned.
    other = make_hook(detect_conn(monkeypatch, account_emulator.base_url, "fq_o", OTHER_ACCOUNT_KEY))
    assert other.submit_task("emo-v1", emo_input).task_id


def test_content_moderation_refusal_is_never_retried(
    dashscope_conn: str, make_hook: Any, emulator: Any, emo_input: dict[str, Any]
) -> None:
    emulator.force_next("submit_inspection")
    hook = make_hook(max_attempts=5)
    with pytest.raises(DashScopeAPIError) as info:
        hook.submit_task("emo-v1", emo_input)
    error = info.value
    assert (error.status_code, error.code) == (400, "DataInspectionFailed")
    assert not error.retryable and not isinstance(error, DashScopeQuotaExhausted)
    assert [r["status"] for r in logged_requests(emulator, is_submit)] == [400]  # one request, not re-sent
    assert emulator.tasks() == []


IMAGE = "http://images.example/portrait.png"


def _statuses(stub: FaceDetectStub) -> list[int | None]:
    return [r["status"] for r in stub.requests]


# -- face-detect pacing per account -------------------------------------------------------------------------------


def _record_slots(monkeypatch: pytest.MonkeyPatch, limiter: Any) -> list[float]:
    """The slot each call of ``limiter`` reserves (exactly spaced, unlike arrival times under load)."""
    slots: list[float] = []
    reserve = limiter.reserve

    def recording() -> float:
        delay = reserve()
        slots.append(time.monotonic() + delay)
        return delay

    monkeypatch.setattr(limiter, "reserve", recording)
    return slots


def test_detections_are_paced_per_account_and_model(
    detect_stub: FaceDetectStub, make_hook: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    hook = make_hook()
    slots = _record_slots(monkeypatch, hook.pacing.detect_limiter("emo-detect-v1"))
    started = time.monotonic()
    assert all(hook.detect_face("emo-detect-v1", IMAGE).passed for _ in range(11))
    assert time.monotonic() - started >= 10 / 4.5 - 0.05  # 4.5 per second, below the page's 5 for emo-detect-v1
    # (slots are read just after reserving: a few microseconds late, hence the 5 ms)
    assert min(b - a for a, b in itertools.pairwise(slots)) >= 1 / 4.5 - 0.005
    # An unpaced burst of 11 would get at least 6 answers 429; paced, the stub's window admits them all
    # (arrival jitter on a loaded machine may still cost the odd 429, which is then retried).
    assert _statuses(detect_stub).count(429) <= 1


def test_keys_of_one_account_share_the_pace(
    detect_stub: FaceDetectStub, make_hook: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = make_hook(detect_conn(monkeypatch, detect_stub.base_url, "ds_a", KEY, account="acct-1"))
    second = make_hook(detect_conn(monkeypatch, detect_stub.base_url, "ds_b", "sk-same-account", account="acct-1"))
    other = make_hook(detect_conn(monkeypatch, detect_stub.base_url, "ds_c", "sk-other-account"))
    assert first.pacing.detect_limiter("emoji-detect-v1") is second.pacing.detect_limiter("emoji-detect-v1")
    assert first.pacing.detect_limiter("emoji-detect-v1") is not other.pacing.detect_limiter("emoji-detect-v1")
    assert first.pacing.detect_limiter("emoji-detect-v1") is not first.pacing.detect_limiter("emo-detect-v1")
    # 90 % of the page's 1/s and 5/s: room for arrival jitter inside the service's 1 s window.
    assert first.pacing.detect_limiter("emoji-detect-v1").qps == 0.9
    assert first.pacing.detect_limiter("emo-detect-v1").qps == 4.5
    started = time.monotonic()
    for hook in (first, second, first, second):
        assert hook.detect_face("emoji-detect-v1", IMAGE).passed
    assert time.monotonic() - started >= 3 - 0.05  # one per second for the account, whichever key
    assert _statuses(detect_stub).count(429) <= 1
    assert {r["key"] for r in detect_stub.requests} == {KEY, "sk-same-account"}
    # The account is the provider's own extra: never sent as a header.
    assert not any("account" in {h.lower() for h in r["headers"]} for r in detect_stub.requests)


def test_detect_rate_can_be_set_per_hook(
    detect_stub: FaceDetectStub, make_hook: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    hook = make_hook(
        detect_conn(monkeypatch, detect_stub.base_url, "ds_slow", account="acct-slow"),
        detect_qps={"emo-detect-v1": 2.5},
    )
    assert hook.pacing.detect_limiter("emo-detect-v1").qps == 2.5


def test_the_async_query_budget_is_per_account(detect_stub: FaceDetectStub, monkeypatch: pytest.MonkeyPatch) -> None:
    detect_conn(monkeypatch, detect_stub.base_url, "dq_a", KEY, account="acct-q")
    detect_conn(monkeypatch, detect_stub.base_url, "dq_b", "sk-same-account", account="acct-q")
    detect_conn(monkeypatch, detect_stub.base_url, "dq_c", "sk-other-account")

    async def limiters() -> list[Any]:
        return [(await fast_hook(conn_id)._configure())[2] for conn_id in ("dq_a", "dq_b", "dq_c")]

    a, b, c = asyncio.run(limiters())
    assert a is b and a is not c
    assert CONN_ID  # the default connection is left alone


# -- the helpers themselves ---------------------------------------------------------------------------


def test_refused_refines_a_used_up_quota_and_holds_back_the_limiter_after_a_429() -> None:
    from dashscope_provider.hooks.pacing import refused
    from dashscope_provider.rate_limit import RateLimiter

    limiter = RateLimiter(1000.0)
    assert limiter.reserve() == 0.0  # nothing held back yet
    quota = refused(DashScopeAPIError(429, *FREE_QUOTA), limiter)
    assert type(quota) is DashScopeQuotaExhausted
    assert limiter.reserve() < 0.5  # a used-up quota is no reason to slow the others down
    refusal = DashScopeAPIError(400, "InvalidParameter", "bad")
    assert refused(refusal, limiter) is refusal and limiter.reserve() < 0.5
    throttled = DashScopeAPIError(429, "Throttling.RateQuota", "Requests rate limit exceeded")
    assert refused(throttled, limiter) is throttled
    assert limiter.reserve() >= 0.9  # every user of the limiter now waits about a second
    assert refused(throttled, None) is throttled  # calls without a limiter only get the error


def test_throttle_counter_counts_only_the_429s() -> None:
    from dashscope_provider.hooks.pacing import ThrottleCounter

    counter = ThrottleCounter()
    for error in (
        DashScopeAPIError(429, "Throttling.RateQuota", "slow down"),
        DashScopeAPIError(500, "InternalError", "x"),
        TimeoutError("read"),
        DashScopeAPIError(429, "Throttling", "again"),
    ):
        counter.on_retry(error)
    assert counter.count == 2
