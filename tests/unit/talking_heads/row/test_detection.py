"""A face detection is paid once per image and ratio: by retries, reruns, and rows racing for one image."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import pytest
from dashscope_provider.hooks.dashscope import DashScopeHook
from talking_heads.row.detection import detect_image
from talking_heads.row.ledger import RowLedger
from talking_heads.row.media import MediaSigner
from talking_heads.table.validation import RowRequest

from tests.unit.conftest import BUCKET

LOG = logging.getLogger(__name__)


def _rows(media_url: str, n: int) -> list[RowRequest]:
    return [
        RowRequest(
            row_id=f"r{i}", model="emoji-v1", image_url=f"{media_url}/portrait_emoji.png", driven_id="mengwa_kaixin"
        )
        for i in range(n)
    ]


@pytest.mark.parametrize("store", ["local", "s3"])
def test_rows_racing_for_one_image_pay_one_detection(
    store: str, dashscope_conn: str, emulator: Any, media_url: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if store == "s3":
        conn = request.getfixturevalue("aws_conn")
        ledger = RowLedger(f"s3://{BUCKET}/race-{tmp_path.name}", conn)
    else:
        conn = None
        ledger = RowLedger(str(tmp_path))
    signer = MediaSigner(ledger.layout, conn)
    answers: list[Any] = []
    errors: list[BaseException] = []

    def detect(row: RowRequest) -> None:
        hook = DashScopeHook(dashscope_conn_id=dashscope_conn)
        try:
            answers.append(detect_image(ledger, row, hook=hook, signer=signer, run_id="run1", log=LOG))
        except BaseException as error:  # reported below, with the thread's own exception
            errors.append(error)

    threads = [threading.Thread(target=detect, args=(row,)) for row in _rows(media_url, 4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()  # bounded by the suite's per-test timeout; waiters poll for the answer every second
    assert errors == []
    assert len(answers) == 4 and all(a.passed for a in answers)
    assert len({a.key for a in answers}) == 1 and len({a.row_id for a in answers}) == 1  # one payer
    assert len(emulator.detections()) == 1  # billed once, from the service's own log

    # A rerun (or a retry, a clear, a backfill) reads the record: nothing is called again.
    again = detect_image(
        ledger, _rows(media_url, 5)[4], hook=DashScopeHook(dashscope_conn_id=dashscope_conn), signer=signer,
        run_id="run2", log=LOG,
    )  # fmt: skip
    assert again == answers[0] and len(emulator.detections()) == 1


def test_a_failed_call_releases_its_claim(dashscope_conn: str, emulator: Any, media_url: str, tmp_path: Path) -> None:
    ledger = RowLedger(str(tmp_path))
    signer = MediaSigner(ledger.layout)
    row = RowRequest(row_id="r", model="emo-v1", image_url=f"{media_url}/missing.png", audio_url=f"{media_url}/v.wav")
    with pytest.raises(Exception):  # noqa: B017 - the service refuses an image it cannot download
        detect_image(
            ledger, row, hook=DashScopeHook(dashscope_conn_id=dashscope_conn), signer=signer, run_id="r", log=LOG
        )
    assert not list((tmp_path / "state" / "detections").glob("*.claim"))
    assert emulator.detections() == []  # a refused request is not billed
