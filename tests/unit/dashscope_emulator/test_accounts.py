"""API keys, accounts and rate limits (:mod:`dashscope_emulator.accounts`), over HTTP."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from pathlib import Path

import pytest
import requests
from dashscope_emulator import EmulatorServer, key_fingerprint

from tests.unit.dashscope_emulator.helpers import (
    SUBMIT,
    Client,
    assert_error,
    detect_body,
    emo_body,
    emoji_body,
    wait_for,
)


def test_submit_without_or_with_unknown_key_is_401(emu: EmulatorServer, media: dict) -> None:
    assert_error(Client(emu.base_url, None).submit_raw(emo_body(media)), 401, "InvalidApiKey", "No API-key provided.")
    assert_error(
        Client(emu.base_url, "sk-nope").submit_raw(emo_body(media)),
        401,
        "InvalidApiKey",
        "Invalid API-key provided.",
    )
    # Auth comes first: a request that is wrong in every other way still gets the 401.
    response = requests.post(emu.base_url + SUBMIT, data="not json", headers={"Authorization": "Bearer sk-nope"})
    assert_error(response, 401, "InvalidApiKey", "Invalid API-key provided.")


def test_submit_rate_limit_and_recovery(emu: EmulatorServer, media: dict, key: str) -> None:
    client = Client(emu.base_url, key)
    body = emo_body(media, image="missing.png")  # fails fast when it runs: no rendering
    statuses = [client.submit_raw(body).status_code for _ in range(6)]
    assert statuses[:5] == [200] * 5
    assert statuses[5] == 429
    throttled = client.submit_raw(body)
    assert_error(throttled, 429, "Throttling.RateQuota", "Requests rate limit exceeded, please try again later.")
    time.sleep(1.05)
    assert client.submit_raw(body).status_code == 200
    # Throttled submissions created nothing.
    mine = [t for t in emu.tasks() if t["key_fingerprint"] == key_fingerprint(key)]
    assert len(mine) == 6


def test_query_rate_limit_and_recovery(emu: EmulatorServer, key: str) -> None:
    client = Client(emu.base_url, key)
    task_id = str(uuid.uuid4())
    statuses = [client.query_raw(task_id).status_code for _ in range(21)]
    assert statuses[:20] == [200] * 20
    assert statuses[20] == 429
    assert_error(client.query_raw(task_id), 429, "Throttling.RateQuota")
    time.sleep(1.05)
    assert client.query_raw(task_id).status_code == 200


# -- accounts ---------------------------------------------------------------------------------------------


def test_accounts_are_configured_by_name_and_every_other_key_is_an_account_of_its_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DASHSCOPE_EMULATOR_API_KEYS", "sk-env")
    with EmulatorServer(accounts={"acct": ["sk-acc-a", "sk-acc-b"]}) as server:
        # Keys named only in accounts are accepted; the environment's default keys are not added.
        assert server.key_count == 2
        assert server.accounts() == {"acct": [key_fingerprint("sk-acc-a"), key_fingerprint("sk-acc-b")]}
        assert Client(server.base_url, "sk-acc-b").query_raw(str(uuid.uuid4())).status_code == 200
        assert Client(server.base_url, "sk-env").query_raw(str(uuid.uuid4())).status_code == 401
        assert requests.get(server.base_url + "/_emulator/accounts").json() == server.accounts()
    server = EmulatorServer(api_keys=["sk-own", "sk-acc-a"], accounts={"acct": ["sk-acc-a"]})
    assert server.accounts() == {
        "acct": [key_fingerprint("sk-acc-a")],
        key_fingerprint("sk-own"): [key_fingerprint("sk-own")],
    }
    with pytest.raises(ValueError, match="two accounts"):
        EmulatorServer(accounts={"one": ["sk-x"], "two": ["sk-x"]})
    with pytest.raises(ValueError, match="non-empty"):
        EmulatorServer(accounts={"": ["sk-x"]})
    with pytest.raises(ValueError, match="fingerprint"):
        EmulatorServer(api_keys=["sk-y"], accounts={key_fingerprint("sk-y"): ["sk-z"]})


def _detect_burst(clients: list[Client], url: str, model: str, count: int) -> list[int]:
    """``count`` detect calls, round robin over ``clients``, as fast as possible; their statuses."""
    started = time.monotonic()
    statuses = [clients[i % len(clients)].detect_raw(detect_body(url, model=model)).status_code for i in range(count)]
    assert time.monotonic() - started < 0.9, "too slow to stay inside one rate-limit window"
    return statuses


def test_detect_limits_count_per_account_and_model(cache_dir: Path, pictures: dict) -> None:
    accounts = {"acct": ["sk-det-a", "sk-det-b"]}
    with EmulatorServer(api_keys=["sk-det-c"], accounts=accounts, speed=2000, cache_dir=cache_dir) as server:
        a, b, c = (Client(server.base_url, k) for k in ("sk-det-a", "sk-det-b", "sk-det-c"))
        blank = pictures["blank.png"]  # decodes fast: the burst stays inside one second
        # emo-detect-v1: 5 per second for the account, whichever of its keys calls.
        assert _detect_burst([a, b], blank, "emo-detect-v1", 6) == [200] * 5 + [429]
        throttled = b.detect_raw(detect_body(blank))
        assert_error(throttled, 429, "Throttling.RateQuota", "Requests rate limit exceeded, please try again later.")
        assert c.detect_raw(detect_body(blank)).status_code == 200  # another account: its own budget
        # emoji-detect-v1 has its own limit, 1 per second, not used up by the emo-detect calls.
        assert _detect_burst([b, a], blank, "emoji-detect-v1", 2) == [200, 429]
        time.sleep(1.05)
        assert a.detect_raw(detect_body(blank)).status_code == 200
        assert b.detect_raw(detect_body(blank, model="emoji-detect-v1")).status_code == 200
        # Throttled calls are not billed; every answered one is, under its key and account.
        lines = server.detections()
        assert len(lines) == 5 + 1 + 1 + 2
        assert Counter(line["account"] for line in lines) == {"acct": 8, key_fingerprint("sk-det-c"): 1}
        assert {line["key_fingerprint"] for line in lines if line["account"] == "acct"} == {
            key_fingerprint("sk-det-a"),
            key_fingerprint("sk-det-b"),
        }


def test_keys_of_one_account_share_its_submit_limit_and_its_one_running_task(cache_dir: Path, media: dict) -> None:
    accounts = {"acct": ["sk-q-a", "sk-q-b"]}
    # Real time: a task stays RUNNING for run_seconds() of wall time.
    with EmulatorServer(api_keys=["sk-q-c"], accounts=accounts, speed=1, cache_dir=cache_dir) as server:
        a, b, c = (Client(server.base_url, k) for k in ("sk-q-a", "sk-q-b", "sk-q-c"))
        body = emoji_body(media)
        first, second, other = a.submit(body), b.submit(body), c.submit(body)

        def status() -> dict[str, str]:
            return {t["task_id"]: t["status"] for t in server.tasks()}

        wait_for(lambda: status()[first] == "RUNNING" and status()[other] == "RUNNING", what="two accounts running")
        assert status()[second] == "PENDING"  # behind sk-q-a's task: one account, one task at a time
        accounts_of = {t["task_id"]: t["account"] for t in server.tasks()}
        assert accounts_of == {first: "acct", second: "acct", other: key_fingerprint("sk-q-c")}
        # A task stays visible only to the key that submitted it.
        assert a.query(second)["output"]["task_status"] == "UNKNOWN"
        assert b.query(second)["output"]["task_status"] == "PENDING"
        assert b.cancel(second).status_code == 200

        # The account's 5 submits per second are shared by its keys (2 used above, maybe a second ago).
        time.sleep(1.05)
        missing = emo_body(media, image="missing.png")
        statuses = [(a if i % 2 else b).submit_raw(missing).status_code for i in range(6)]
        assert statuses == [200] * 5 + [429]
        assert c.submit_raw(missing).status_code == 200
