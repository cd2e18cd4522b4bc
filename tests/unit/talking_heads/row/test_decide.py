"""What the plan decides per recorded state (talking_heads.row.decide): generate the row, or settle it."""

from __future__ import annotations

from typing import Any

import pytest
from talking_heads.row.decide import plan_row
from talking_heads.row.states import OutcomeCode, RowRecord


@pytest.mark.parametrize(
    ("state", "resubmit", "expected"),
    [
        (None, False, None),
        (RowRecord("r", "succeeded", task_id="t", run_id="run0"), True, ("skipped", None)),
        (RowRecord("r", "submitting"), False, ("failed", OutcomeCode.SUBMISSION_UNCERTAIN)),
        (RowRecord("r", "uncertain"), False, ("failed", OutcomeCode.SUBMISSION_UNCERTAIN)),
        (RowRecord("r", "uncertain"), True, None),
        (RowRecord("r", "failed", code="UNKNOWN", message="expired"), False, ("failed", OutcomeCode.UNKNOWN)),
        (RowRecord("r", "failed", code="UNKNOWN", message="expired"), True, None),
        (RowRecord("r", "failed", code="InvalidFile.FacePose", billed=True), True, ("failed", "InvalidFile.FacePose")),
        (RowRecord("r", "failed", code="InvalidParameter", billed=False), False, None),
        (RowRecord("r", "submitted", task_id="t"), False, None),  # generate: the submit step reuses the task
        (RowRecord("r", "generated", task_id="t"), False, None),
    ],
)
def test_plan_per_state(state: RowRecord | None, resubmit: bool, expected: tuple[str, Any] | None) -> None:
    outcome = plan_row(state, resubmit_uncertain=resubmit)
    if expected is None:
        assert outcome is None
    else:
        assert (outcome["status"], outcome.get("code")) == expected  # type: ignore[index]
