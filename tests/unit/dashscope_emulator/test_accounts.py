"""API keys, accounts and rate limits (:mod:`dashscope_emulator.accounts`), over HTTP."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from pathlib import Path

import pytest
import requests
from dashscope_emulator import EmulatorServer, key_fingerprint

from tests.unit.dashscope_emulator import helpers
from tests.unit.dashscope_emulator.helpers import Client, assert_error, detect_body, emo_body, emoji_body


def test_submit_without_or_with_unknown_key_is_401(emu: EmulatorServer, media: dict) -> None:
    assert_error(Client(emu.base_url, None).submit_raw(emo_body(media)), 401, "InvalidApiKey", "No API-key provided.")
    assert_error(
        Client(emu.base_url, "sk-nope").submit_raw(emo_body(media)),
        401,
        "InvalidApiKey",
        "Invalid API-key provided.",
    )
    # Auth comes first: a request that is wrong in every other way still gets the 401.
    response = requests.post(
        emu.base_url + helpers.SUBMIT, data="not json", headers={"Authorization": "Bearer sk-nope"}
    )
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


def _emoji_missing(media: dict) -> dict:
    """A valid emoji-v1 body whose image is missing: the task fails fast when it runs (no rendering)."""
    body = emoji_body(media)
    body["input"]["image_url"] = f"{media['url']}/missing.png"
    return body


def test_submit_limits_are_per_model_emoji_v1_one_per_second(emu: EmulatorServer, media: dict, key: str) -> None:
    client = Client(emu.base_url, key)
    emoji, emo = _emoji_missing(media), emo_body(media, image="missing.png")
    started = time.monotonic()
    assert [client.submit_raw(emoji).status_code for _ in range(2)] == [200, 429]
    assert_error(
        client.submit_raw(emoji), 429, "Throttling.RateQuota", "Requests rate limit exceeded, please try again later."
    )
    # emo-v1 has its own budget of 5, untouched by the emoji-v1 calls.
    assert [client.submit_raw(emo).status_code for _ in range(6)] == [200] * 5 + [429]
    assert time.monotonic() - started < 0.9, "too slow to stay inside one rate-limit window"
    time.sleep(1.05)
    assert client.submit_raw(emoji).status_code == 200
    throttled = [r for r in emu.request_log() if r["key_fingerprint"] == key_fingerprint(key) and r["status"] == 429]
    assert Counter(r["model"] for r in throttled) == {"emoji-v1": 2, "emo-v1": 1}
    assert len([t for t in emu.tasks() if t["key_fingerprint"] == key_fingerprint(key)]) == 1 + 5 + 1


def test_query_rate_limit_and_recovery(emu: EmulatorServer, key: str) -> None:
    client = Client(emu.base_url, key)
    task_id = str(uuid.uuid4())
    # 22 queries inside one 1 s window. On a loaded machine (the suite's workers outnumber the cores) a
    # burst can take longer, and its window slides: such a burst proves nothing, so it is sent again.
    for _ in range(3):
        started = time.monotonic()
        statuses = [client.query_raw(task_id).status_code for _ in range(21)]
        last = client.query_raw(task_id)
        inside_one_window = time.monotonic() - started < 0.9
        time.sleep(1.05)  # every window empty again
        if inside_one_window:
            break
    assert inside_one_window, "22 queries never fitted into one rate-limit window"
    assert statuses[:20] == [200] * 20
    assert statuses[20] == 429
    assert_error(last, 429, "Throttling.RateQuota")
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

        helpers.wait_for(
            lambda: status()[first] == "RUNNING" and status()[other] == "RUNNING", what="two accounts running"
        )
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


# -- free quota -------------------------------------------------------------------------------------------


def test_a_free_only_account_is_refused_once_its_quota_is_used(cache_dir: Path, media: dict) -> None:
    accounts = {"acct": ["sk-fq-a", "sk-fq-b"]}
    with EmulatorServer(
        api_keys=["sk-fq-c"], accounts=accounts, free_quota={"acct": 2}, speed=2000, cache_dir=cache_dir
    ) as server:
        a, b, c = (Client(server.base_url, k) for k in ("sk-fq-a", "sk-fq-b", "sk-fq-c"))
        body = emo_body(media, image="missing.png")
        assert [a.submit_raw(body).status_code, b.submit_raw(body).status_code] == [200, 200]
        for client in (a, b, a):  # the account's quota, whichever key; waiting does not cure it
            refused = client.submit_raw(_emoji_missing(media) if client is b else body)
            assert_error(refused, 429, "Throttling.AllocationQuota", "Free allocated quota exceeded.")
        time.sleep(1.05)
        assert_error(a.submit_raw(body), 429, "Throttling.AllocationQuota", "Free allocated quota exceeded.")
        assert len(server.tasks()) == 2  # refused submits create nothing
        assert c.submit_raw(body).status_code == 200  # another account: no quota set
        assert a.query_raw(str(uuid.uuid4())).status_code == 200  # queries are not refused
        assert server.service.free_quota.settings() == {"acct": {"submits": 2, "used": 2}}
        # Over HTTP: raise the quota (counting from now), read it, lift it.
        admin = server.base_url + "/_emulator/free_quota"
        assert requests.post(admin, json={"account": "acct", "submits": 1}).json() == {
            "acct": {"submits": 1, "used": 0}
        }
        assert [a.submit_raw(body).status_code for _ in range(2)] == [200, 429]
        assert requests.get(admin).json() == {"acct": {"submits": 1, "used": 1}}
        assert requests.post(admin, json={"account": "acct", "submits": None}).json() == {}
        assert b.submit_raw(body).status_code == 200
        assert requests.post(admin, json={"account": "no-such", "submits": 1}).status_code == 400
        # A key of its own account is named by its fingerprint.
        server.set_free_quota(key_fingerprint("sk-fq-c"), 0)
        assert_error(c.submit_raw(body), 429, "Throttling.AllocationQuota")
    with pytest.raises(ValueError, match="no account"):
        EmulatorServer(api_keys=["sk-x"], free_quota={"sk-x": 1})  # a key is not an account name
    with pytest.raises(ValueError, match=">= 0"):
        EmulatorServer(api_keys=["sk-x"], free_quota={key_fingerprint("sk-x"): -1})


def test_cli_free_quota_option() -> None:
    from dashscope_emulator.__main__ import main, parse_free_quotas

    assert parse_free_quotas(["acct=3", "other=0"]) == {"acct": 3, "other": 0}
    for bad in ("acct", "acct=x", "=3", "acct=-1"):
        with pytest.raises(ValueError, match="NAME=N"):
            parse_free_quotas([bad])
    assert main(["--port", "0", "--free-quota", "acct=1"]) == 2  # no such account: refused before serving
