"""API keys and rate limits (:mod:`dashscope_emulator.accounts`), over HTTP."""

from __future__ import annotations

import time
import uuid

import requests
from dashscope_emulator import EmulatorServer, key_fingerprint

from tests.unit.dashscope_emulator.helpers import SUBMIT, Client, assert_error, emo_body


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
