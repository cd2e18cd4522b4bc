"""The account's task list (``GET /api/v1/tasks/``), as ``detection-and-limits.md`` "Task list and cancel"
describes it: this account's tasks only (every key of it), a window of at most 24 h given in UTC+8,
model and status filters, paging, ``gmt_create`` in epoch ms on the wall clock, the documented fields."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import requests
from dashscope_emulator import EmulatorServer, key_fingerprint

from tests.unit.dashscope_emulator.helpers import Client, assert_error, emo_body, emoji_body

LIST = "/api/v1/tasks/"
UTC8 = timezone(timedelta(hours=8))
FIELDS = {
    "task_id",
    "status",
    "model_name",
    "gmt_create",
    "start_time",
    "request_id",
    "api_key_id",
    "caller_parent_id",
    "caller_uid",
    "region",
    "user_api_unique_key",
}


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC8).strftime("%Y%m%d%H%M%S")


def _list(base_url: str, key: str, **params: Any) -> requests.Response:
    return requests.get(base_url + LIST, params=params, headers={"Authorization": f"Bearer {key}"}, timeout=10)


def test_task_list_scopes_to_the_account_filters_and_pages(cache_dir: Path, media: dict) -> None:
    accounts = {"acct": ["sk-list-a", "sk-list-b"]}
    with EmulatorServer(api_keys=["sk-list-other"], accounts=accounts, speed=50, cache_dir=cache_dir) as server:
        a, b, other = (Client(server.base_url, k) for k in ("sk-list-a", "sk-list-b", "sk-list-other"))
        before = datetime.now(UTC) - timedelta(seconds=1)
        emo = [a.submit(emo_body(media)), b.submit(emo_body(media)), a.submit(emo_body(media))]
        emoji = [b.submit(emoji_body(media))]
        foreign = other.submit(emo_body(media))
        after = datetime.now(UTC) + timedelta(seconds=1)
        window = {"start_time": _stamp(before), "end_time": _stamp(after)}

        # The account's tasks, every key of it; never another account's.
        answer = _list(server.base_url, "sk-list-a", **window).json()
        assert {e["task_id"] for e in answer["data"]} == {*emo, *emoji}
        assert foreign not in {e["task_id"] for e in _list(server.base_url, "sk-list-b").json()["data"]}
        assert [e["task_id"] for e in _list(server.base_url, "sk-list-other", **window).json()["data"]] == [foreign]
        assert answer["total"] == 4 and answer["page_no"] == 1 and answer["page_size"] == 10
        assert answer["total_page"] == 1 and answer["request_id"]
        entry = next(e for e in answer["data"] if e["task_id"] == emo[1])
        assert set(entry) == FIELDS
        assert entry["model_name"] == "emo-v1" and entry["region"] == "cn-beijing"
        assert entry["caller_parent_id"] == "acct" and entry["api_key_id"] == key_fingerprint("sk-list-b")
        # gmt_create: epoch ms of the real creation time (not the sped-up simulated clock).
        created = datetime.fromtimestamp(entry["gmt_create"] / 1000, UTC)
        assert before <= created <= after
        # Oldest first.
        assert [e["gmt_create"] for e in answer["data"]] == sorted(e["gmt_create"] for e in answer["data"])

        # Model and status filters.
        by_model = _list(server.base_url, "sk-list-a", model_name="emo-v1", **window).json()
        assert {e["task_id"] for e in by_model["data"]} == set(emo)
        assert b.cancel(emoji[0]).status_code in (200, 400)  # canceled if still PENDING
        status = {t["task_id"]: t["status"] for t in server.tasks()}[emoji[0]]
        by_status = _list(server.base_url, "sk-list-a", status=status, model_name="emoji-v1", **window).json()
        assert [(e["task_id"], e["status"]) for e in by_status["data"]] == [(emoji[0], status)]
        if status == "CANCELED":  # a status the emo tasks can't have: none of them listed
            assert (
                _list(server.base_url, "sk-list-a", status="CANCELED", model_name="emo-v1", **window).json()["data"]
                == []
            )

        # Paging: 2 per page over the 3 emo tasks.
        pages = [
            _list(server.base_url, "sk-list-b", model_name="emo-v1", page_size=2, page_no=n, **window).json()
            for n in (1, 2, 3)
        ]
        assert [len(p["data"]) for p in pages] == [2, 1, 0]
        assert pages[0]["total"] == 3 and pages[0]["total_page"] == 2
        assert [e["task_id"] for p in pages for e in p["data"]] == [e["task_id"] for e in by_model["data"]]

        # The window: a window that ended before the tasks lists none; one past them too.
        earlier = {"start_time": _stamp(before - timedelta(hours=2)), "end_time": _stamp(before - timedelta(hours=1))}
        assert _list(server.base_url, "sk-list-a", **earlier).json()["data"] == []
        # The times are UTC+8: the same instants written as UTC wall times miss by 8 hours.
        as_utc = {"start_time": before.strftime("%Y%m%d%H%M%S"), "end_time": after.strftime("%Y%m%d%H%M%S")}
        assert _list(server.base_url, "sk-list-a", **as_utc).json()["data"] == []

        # More than 24 h, reversed, or malformed: 400 InvalidParameter; the list needs a key.
        day = {"start_time": _stamp(before - timedelta(hours=25)), "end_time": _stamp(after)}
        assert_error(_list(server.base_url, "sk-list-a", **day), 400, "InvalidParameter")
        reversed_ = {"start_time": window["end_time"], "end_time": window["start_time"]}
        assert_error(_list(server.base_url, "sk-list-a", **reversed_), 400, "InvalidParameter")
        assert_error(_list(server.base_url, "sk-list-a", start_time="2026-01-01"), 400, "InvalidParameter")
        assert_error(_list(server.base_url, "sk-list-a", status="DONE"), 400, "InvalidParameter")
        assert_error(_list(server.base_url, "sk-list-a", page_size="0"), 400, "InvalidParameter")
        assert requests.get(server.base_url + LIST, timeout=10).status_code == 401

        # A task past its 24 h is no longer listed (its query answers UNKNOWN too).
        server.advance(86_401)
        assert _list(server.base_url, "sk-list-a").json()["data"] == []


def test_task_list_counts_against_the_accounts_query_limit(cache_dir: Path) -> None:
    with EmulatorServer(api_keys=["sk-list-q"], speed=50, cache_dir=cache_dir) as server:
        time.sleep(0.05)
        statuses = [_list(server.base_url, "sk-list-q").status_code for _ in range(21)]
        assert statuses.count(429) >= 1 and statuses[:20].count(200) >= 15
        throttled = [r for r in server.request_log() if r["path"] == LIST and r["status"] == 429]
        assert throttled
