"""The account's submit lease (``talking_heads.row.lease``): one holder at a time across threads and
processes, on a local disk and on S3 (moto); a holder killed mid-hold is taken over once its heartbeat
stops; a held lease makes a waiter time out having sent nothing."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
from talking_heads.row import lease as lease_module
from talking_heads.row.lease import AccountLease, LeaseTimeout
from talking_heads.row.ledger import RowLedger

from tests.conftest import S3_BUCKET

REPO = Path(__file__).resolve().parents[4]


@pytest.fixture(params=["local", "s3"])
def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> RowLedger:
    if request.param == "s3":
        return RowLedger(f"s3://{S3_BUCKET}/lease-{uuid.uuid4().hex[:8]}", request.getfixturevalue("aws_conn"))
    return RowLedger(str(tmp_path))


@pytest.fixture(autouse=True)
def quick_lease(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lease_module, "LEASE_STALE_SECONDS", 4.0)
    monkeypatch.setattr(lease_module, "LEASE_BEAT_SECONDS", 0.2)
    monkeypatch.setattr(lease_module, "LEASE_POLL_SECONDS", 0.05)


def test_racing_holders_of_one_account_hold_it_one_at_a_time(ledger: RowLedger) -> None:
    start, lock = threading.Barrier(6), threading.Lock()
    holding: list[str] = []
    overlaps: list[list[str]] = []
    done: list[int] = []

    def hold(n: int) -> None:
        lease = AccountLease(ledger, "acct-1")  # one object per worker, as each submit step has its own
        start.wait()
        with lease.hold(f"worker-{n}", f"row-{n}", wait=60) as record:
            with lock:
                holding.append(record.holder)
                if len(holding) > 1:
                    overlaps.append(list(holding))
            time.sleep(0.05)
            with lock:
                holding.remove(record.holder)
        done.append(record.generation)

    threads = [threading.Thread(target=hold, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert overlaps == []
    assert sorted(done) == [1, 2, 3, 4, 5, 6]  # each generation taken once, none skipped or reused
    newest = AccountLease(ledger, "acct-1").newest()
    assert newest is not None and newest.generation == 6 and newest.released


def test_accounts_do_not_share_a_lease(ledger: RowLedger) -> None:
    first, second = AccountLease(ledger, "acct-1"), AccountLease(ledger, "acct-2")
    with first.hold("a", "row-a", wait=5), second.hold("b", "row-b", wait=5) as other:
        assert other.generation == 1


def test_a_held_lease_makes_a_waiter_time_out_having_taken_nothing(ledger: RowLedger) -> None:
    with AccountLease(ledger, "acct-1").hold("holder", "row-a", wait=5):
        waiter = AccountLease(ledger, "acct-1")
        with pytest.raises(LeaseTimeout, match=r"row-b.*stayed held \(by holder, for row row-a\)"):
            waiter.acquire("waiter", "row-b", wait=1.0)  # the holder beats every 0.2 s: never stale
    newest = AccountLease(ledger, "acct-1").newest()
    assert newest is not None and newest.generation == 1 and newest.released


_HOLD_FOREVER = """
import sys, time
from talking_heads.row import lease
from talking_heads.row.ledger import RowLedger
lease.LEASE_BEAT_SECONDS = 0.2
with lease.AccountLease(RowLedger(sys.argv[1], sys.argv[2] or None), "acct-1").hold("doomed", "row-x", wait=30):
    print("HELD", flush=True)
    time.sleep(600)
"""


class _Lines(logging.Handler):
    """The lines a logger wrote (caplog misses them once Airflow's logging config stops propagation)."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def test_a_holder_killed_mid_hold_is_taken_over_once_its_heartbeat_stops(ledger: RowLedger) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "plugins"), str(REPO)])}
    root = ledger.layout.root  # Airflow 3.1's ObjectStoragePath has no .conn_id: storage_options has it
    storage = getattr(root, "conn_id", None) or root.storage_options.get("conn_id") or ""
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD_FOREVER, str(ledger.layout.root), storage],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert holder.stdout is not None
        held = any(line.strip() == "HELD" for line in iter(holder.stdout.readline, ""))
        assert held, "the holder never took the lease"
        log, seen = logging.getLogger(f"lease-test-{uuid.uuid4().hex}"), _Lines()
        log.addHandler(seen)
        waiter = AccountLease(ledger, "acct-1", log)
        with pytest.raises(LeaseTimeout):  # alive and beating: never taken over
            waiter.acquire("waiter", "row-y", wait=3.0)
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
        started = time.monotonic()
        record = waiter.acquire("waiter", "row-y", wait=30)
        waited = time.monotonic() - started
    finally:
        holder.kill()
    assert record.generation == 2
    assert 3 <= waited < 30, waited  # about LEASE_STALE_SECONDS (4 s) after the last beat
    assert any("took over the submit lease of account acct-1 from doomed (row row-x)" in line for line in seen.lines)
