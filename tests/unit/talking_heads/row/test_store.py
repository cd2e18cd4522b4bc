"""The download step (talking_heads.row.store): the signed URL read from the ledger, the video stored once,
and a failed store that keeps the row ``generated`` or, for an expired URL, ends it ``failed``."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from dashscope_provider.compat import AirflowFailException
from dashscope_provider.exceptions import DashScopeResultExpired
from talking_heads.row.ledger import RowLedger
from talking_heads.row.payloads import WaitResult
from talking_heads.row.states import RowRecord
from talking_heads.row.store import store_row

LOG = logging.getLogger(__name__)


def _generated(tmp_path: Path) -> tuple[RowLedger, WaitResult]:
    ledger = RowLedger(str(tmp_path))
    state = RowRecord("r", "generated", task_id="t1", billed=True, video_url="https://x/v.mp4?Signature=s")
    ledger.put(state)
    return ledger, WaitResult("r", "t1", 3.0, "1:1")


def test_store_reads_the_signed_url_from_the_ledger_and_records_success(tmp_path: Path) -> None:
    ledger, result = _generated(tmp_path)
    seen: list[str] = []

    def transfer(url: str, destination: Any) -> dict[str, Any]:
        seen.append(url)
        return {"uri": str(destination), "size_bytes": 3, "sha256": "abc"}

    stored = store_row(ledger, result, run_id="run1", transfer=transfer, log=LOG)
    assert seen == ["https://x/v.mp4?Signature=s"]
    state = ledger.get("r")
    assert state is not None and (state.status, state.run_id, state.video_bytes) == ("succeeded", "run1", 3)
    # A clear of the download step: already stored, nothing fetched again.
    assert store_row(ledger, result, run_id="run2", transfer=transfer, log=LOG) == stored
    assert len(seen) == 1


def test_store_failures_keep_the_row_generated_or_end_it_expired(tmp_path: Path) -> None:
    ledger, result = _generated(tmp_path)

    def broken(url: str, destination: Any) -> dict[str, Any]:
        raise OSError("disk full")

    with pytest.raises(OSError):
        store_row(ledger, result, run_id="run1", transfer=broken, log=LOG)
    state = ledger.get("r")
    assert state is not None and (state.status, state.code) == ("generated", "StoreFailed")

    def expired(url: str, destination: Any) -> dict[str, Any]:
        raise DashScopeResultExpired(403, url.split("?")[0])  # as the hook raises it: no signature

    with pytest.raises(AirflowFailException):
        store_row(ledger, result, run_id="run1", transfer=expired, log=LOG)
    state = ledger.get("r")
    assert state is not None and (state.status, state.code) == ("failed", "ResultExpired")
    assert "no longer valid" in (state.message or "")


def test_store_refuses_a_row_with_no_generated_video_of_that_task(tmp_path: Path) -> None:
    ledger, _ = _generated(tmp_path)
    with pytest.raises(AirflowFailException, match="no generated video of task t-other"):
        store_row(ledger, WaitResult("r", "t-other"), run_id="run1", transfer=lambda u, d: {}, log=LOG)
