"""The submit protocol (talking_heads.row.submit) against the emulator over HTTP: a refusal that waiting does
not cure (content moderation) fails the row once and is never retried."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowFailException
from talking_heads.row.ledger import RowLedger
from talking_heads.row.outcome import outcome_of

from tests.unit.talking_heads.row.helpers import submit, submits

pytestmark = pytest.mark.usefixtures("no_key_in_logs")


def test_content_moderation_fails_the_row_once_and_is_never_retried(
    emulator: Any, dashscope_conn: str, emo_input: dict[str, Any], tmp_path: Path
) -> None:
    ledger = RowLedger(str(tmp_path))
    emulator.force_next("submit_inspection")
    with pytest.raises(AirflowFailException, match="DataInspectionFailed"):  # fails the task: no Airflow retry
        submit(ledger, "flagged", emo_input, model="emo-v1", run_id="run-1")
    assert len(submits(emulator)) == 1  # the hook did not send it again
    line = outcome_of(ledger.get("flagged"), "run-1")
    assert (line["status"], line["code"]) == ("failed", "DataInspectionFailed")
