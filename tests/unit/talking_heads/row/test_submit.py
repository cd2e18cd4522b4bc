"""The submit protocol (talking_heads.row.submit) against the emulator over HTTP: a row is sent at most once,
its claim names who sent it, a row without boxes is detected first, a face the service refuses is never
sent, and a refusal that waiting does not cure (content moderation) is never retried."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from dashscope_provider.compat import AirflowFailException
from talking_heads.row.claims import deployment_id
from talking_heads.row.ledger import RowLedger
from talking_heads.row.outcome import outcome_of
from talking_heads.row.payloads import Submission
from talking_heads.row.submit import SUBMIT_LEASE_ENV

from tests.unit.conftest import CONN_ID
from tests.unit.talking_heads.row.helpers import submit, submits

pytestmark = pytest.mark.usefixtures("no_key_in_logs")


def _without_boxes(media: dict[str, Any], **changes: str) -> dict[str, Any]:
    return {k: v for k, v in media.items() if k not in ("face_bbox", "ext_bbox")} | changes


def test_a_row_is_claimed_then_sent_once_and_a_later_try_follows_its_task(
    dashscope_conn: str, emulator: Any, emoji_input: dict[str, Any], tmp_path: Path
) -> None:
    ledger = RowLedger(str(tmp_path))
    submission = submit(ledger, "r", emoji_input, owner="run-1 generate.submit[0] try 1")
    [task] = emulator.tasks()
    assert submission == Submission("r", task["task_id"], CONN_ID)
    record = ledger.get("r")
    assert record is not None and (record.status, record.task_id, record.conn_id) == (
        "submitted",
        task["task_id"],
        CONN_ID,
    )
    assert (record.run_id, record.owner, record.deployment) == (
        "run-1",
        "run-1 generate.submit[0] try 1",
        deployment_id(),
    )
    assert record.intent_at and not record.resubmitted and record.billed is False
    assert [h.split(" ", 1)[1] for h in record.history][-1].startswith("submitting->submitted")
    # A retry of the step, or a rerun: the task is followed, nothing is sent again.
    assert submit(ledger, "r", emoji_input, run_id="run-2") == submission
    assert len(submits(emulator)) == 1 and len(emulator.tasks()) == 1


def test_a_row_without_boxes_is_detected_first_and_sent_with_the_detected_boxes(
    dashscope_conn: str, emulator: Any, emoji_input: dict[str, Any], tmp_path: Path
) -> None:
    ledger = RowLedger(str(tmp_path))
    submission = submit(ledger, "r", _without_boxes(emoji_input))
    [detection] = emulator.detections()
    [task] = emulator.tasks()
    assert submission.task_id == task["task_id"]
    record = ledger.get("r")
    assert record is not None and record.status == "submitted" and record.detection is not None
    assert (record.detection["passed"], record.detection["row_id"], record.detection["run_id"]) == (True, "r", "run-1")
    assert detection["passed"] and detection["image_url"].startswith(emoji_input["image_url"])
    # The row had no boxes: the task was sent with the ones the detection found.
    assert len(task["input"]["face_bbox"]) == 4 and len(task["input"]["ext_bbox"]) == 4


def test_a_face_the_service_refuses_ends_the_row_failed_and_nothing_is_sent(
    dashscope_conn: str, emulator: Any, emoji_input: dict[str, Any], tmp_path: Path
) -> None:
    ledger = RowLedger(str(tmp_path))
    refused = _without_boxes(emoji_input, image_url=emoji_input["image_url"] + "?emulator_error=InvalidFile.NoHuman")
    with pytest.raises(AirflowFailException, match=r"row r: face detection did not pass: InvalidFile\.NoHuman"):
        submit(ledger, "r", refused)
    assert submits(emulator) == [] and emulator.tasks() == []
    line = outcome_of(ledger.get("r"), "run-1")
    assert (line["status"], line["code"]) == ("failed", "InvalidFile.NoHuman")


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


@pytest.mark.parametrize(("setting", "leases"), [(None, 1), ("on", 1), ("off", 0), (" OFF ", 0)])
def test_the_submit_lease_is_on_unless_switched_off_for_a_benchmark(
    dashscope_conn: str,
    emulator: Any,
    emoji_input: dict[str, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    setting: str | None,
    leases: int,
) -> None:
    """``TALKING_HEADS_SUBMIT_LEASE=off`` (benchmarks, diagnosis) sends without the account's lease; any other
    value, or none, takes it: one lease generation per submit under ``state/leases/``."""
    if setting is None:
        monkeypatch.delenv(SUBMIT_LEASE_ENV, raising=False)
    else:
        monkeypatch.setenv(SUBMIT_LEASE_ENV, setting)
    ledger = RowLedger(str(tmp_path))
    submit(ledger, "r", emoji_input)
    assert len(submits(emulator)) == 1
    generations = list((tmp_path / "state" / "leases").glob("*/0*.json"))
    assert len(generations) == leases
