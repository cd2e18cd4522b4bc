"""The ledger's compare-and-set: no move of a row overwrites a newer one, on a local disk, S3 (moto) and OSS
(the signature-checking double), whose exclusive creates are ``O_EXCL``, ``If-None-Match`` and
``x-oss-forbid-overwrite``."""

from __future__ import annotations

import threading
import uuid
from pathlib import Path
from typing import Any

import pytest
from talking_heads.row.ledger import LedgerConflict, RowLedger
from talking_heads.row.states import RowRecord

from tests.conftest import S3_BUCKET
from tests.unit.dashscope_provider.fs.test_oss import OSS_BUCKET, make_oss_conn, oss_double  # noqa: F401 (fixtures)


@pytest.fixture(params=["local", "s3", "oss"])
def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> RowLedger:
    if request.param == "s3":
        return RowLedger(f"s3://{S3_BUCKET}/ledger-{uuid.uuid4().hex[:8]}", request.getfixturevalue("aws_conn"))
    if request.param == "oss":
        conn_id = request.getfixturevalue("make_oss_conn")()
        return RowLedger(f"oss://{OSS_BUCKET}/ledger-{uuid.uuid4().hex[:8]}", conn_id)
    return RowLedger(str(tmp_path))


def test_a_write_from_a_stale_read_is_refused_and_names_the_newer_record(ledger: RowLedger) -> None:
    first = ledger.put(RowRecord("r", "submitting", run_id="A", owner="A"))
    assert first.revision == 1
    read_by_a, read_by_b = ledger.get("r"), ledger.get("r")
    assert read_by_a is not None and read_by_b is not None
    moved = ledger.put(read_by_b.advance("submitted", task_id="t-1"))
    with pytest.raises(LedgerConflict) as raised:
        ledger.put(read_by_a.lose("lost"))  # A read before B moved the row: its write would erase the task id
    assert raised.value.current.status == "submitted" and raised.value.current.task_id == "t-1"
    stored = ledger.get("r")
    assert stored is not None and stored.task_id == "t-1" and stored.revision == moved.revision == 2


def test_two_first_writes_of_a_row_one_wins(ledger: RowLedger) -> None:
    ledger.put(RowRecord("r", "submitting", run_id="A"))
    with pytest.raises(LedgerConflict) as raised:
        ledger.put(RowRecord("r", "submitting", run_id="B"))
    assert raised.value.current.run_id == "A"


def test_racing_writers_from_one_read_exactly_one_lands(ledger: RowLedger) -> None:
    base = ledger.put(RowRecord("r", "failed", code="Throttling"))
    start = threading.Barrier(6)
    landed: list[str] = []
    refused: list[str] = []

    def write(name: str) -> None:
        start.wait()
        try:
            ledger.put(base.advance("submitting", run_id=name))
            landed.append(name)
        except LedgerConflict:
            refused.append(name)

    threads = [threading.Thread(target=write, args=(f"run{i}",)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(landed) == 1 and len(refused) == 5
    stored = ledger.get("r")
    assert stored is not None and stored.run_id == landed[0]


def test_a_writer_that_died_between_the_revision_and_the_copy_loses_nothing(ledger: RowLedger) -> None:
    base = ledger.put(RowRecord("r", "submitting", run_id="A"))
    # Revision 2 was created, then its writer died before copying it to state/r.json.
    import json

    died = base.advance("submitted", task_id="t-9")
    ledger.layout.revision("r", 2).write_text(json.dumps(died.to_dict()))
    stale = ledger.get("r")
    assert stale is not None and stale.revision == 1
    with pytest.raises(LedgerConflict) as raised:
        ledger.put(stale.lose("lost"))
    assert raised.value.current.task_id == "t-9"
    repaired = ledger.get("r")
    assert repaired is not None and repaired.task_id == "t-9" and repaired.revision == 2


def test_update_applies_the_change_to_the_newest_record(ledger: RowLedger) -> None:
    ledger.put(RowRecord("r", "submitting", run_id="A", owner="A"))
    calls: list[Any] = []

    def to_submitted(current: RowRecord | None) -> RowRecord | None:
        calls.append(current and current.revision)
        if len(calls) == 1:  # another writer moves the row between this read and this write
            assert current is not None
            ledger.put(current.lose("seen lost by B"))
        assert current is not None
        return current.advance("submitted", task_id="t-2")

    stored = ledger.update("r", to_submitted)
    assert calls == [1, 2]
    assert stored is not None and stored.status == "submitted" and stored.revision == 3
    assert [entry.split(" ", 1)[1] for entry in stored.history] == ["submitting->uncertain", "uncertain->submitted"]
