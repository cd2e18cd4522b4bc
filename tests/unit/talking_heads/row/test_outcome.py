"""The outcome each recorded state becomes (talking_heads.row.outcome): status, code and message."""

from __future__ import annotations

import pytest
from talking_heads.row.outcome import outcome_of
from talking_heads.row.states import RowRecord


@pytest.mark.parametrize(
    ("state", "status", "code", "in_message"),
    [
        (None, "failed", "Incomplete", "never submitted"),
        (RowRecord("r", "succeeded", run_id="run1", video_uri="u"), "succeeded", None, None),
        (RowRecord("r", "succeeded", run_id="run0", video_uri="u"), "skipped", None, "the overlapping run run0"),
        (
            RowRecord("r", "failed", code="InvalidFile.Content", message="no person"),
            "failed",
            "InvalidFile.Content",
            "",
        ),
        (RowRecord("r", "uncertain"), "failed", "SubmissionUncertain", "resubmit_uncertain=true"),
        (RowRecord("r", "submitted", task_id="t"), "failed", "Incomplete", "stopped in the wait step"),
        (RowRecord("r", "generated", task_id="t"), "failed", "Incomplete", "stopped in the download step"),
        (
            RowRecord("r", "generated", task_id="t", code="StoreFailed", message="disk full"),
            "failed",
            "StoreFailed",
            "generated (and billed) but not stored: disk full",
        ),
    ],
)
def test_outcome_per_state(state: RowRecord | None, status: str, code: str | None, in_message: str | None) -> None:
    outcome = outcome_of(state, "run1")
    assert outcome["status"] == status
    assert outcome.get("code") == code
    if in_message is None:
        assert outcome.get("message") is None
    else:
        assert in_message in outcome["message"]
