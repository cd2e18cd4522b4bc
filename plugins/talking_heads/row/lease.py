"""The account's submit lease: at most one submit per Alibaba Cloud account has its answer outstanding.

Why: the task list carries no input, so a submit whose answer was lost can be matched to its task only by
model and creation time (:mod:`talking_heads.row.reconcile`). When several submits of one account are in
flight together and one crash loses them all, their tasks are indistinguishable, and each row stays
``uncertain``. With the lease, a crash loses at most one answer per account, and its task is the one
unclaimed task of its window: reconcilable by construction.

The lease is held from just before the row's claim is written until the answer (a task id, or an error)
is recorded, across every worker, run and deployment that shares the output root. It costs no
throughput: an account runs one task at a time and accepts 5 submits a second; a submit holds the lease
for one POST (tens of milliseconds).

Layout under ``{output_root}/state/leases/{account}/``: generation ``n`` of the lease is ``{n}.json``,
created exclusively (:func:`~talking_heads.row.ledger.create_exclusively`: ``link()``, S3
``If-None-Match``, OSS forbid-overwrite), never deleted, so a number is never taken twice. Its holder
rewrites it while it holds it (a heartbeat, from a thread) and marks it released at the end. The next
generation may be taken once the current one is released, or gone stale: its heartbeat has not moved for
:data:`LEASE_STALE_SECONDS` by the waiter's own clock (no clock is compared across machines), or it was
taken more than :data:`LEASE_MAX_SECONDS` ago. ``current`` beside them is a hint of the newest number.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from datetime import datetime

from airflow.sdk import ObjectStoragePath

from talking_heads.row.ledger import RowLedger, create_exclusively, read_whole, write_atomically
from talking_heads.row.states import now_iso

#: A held lease's holder rewrites it this often (from a thread: the POST itself blocks).
LEASE_BEAT_SECONDS = float(os.environ.get("TALKING_HEADS_LEASE_BEAT_SECONDS", "5"))
#: A lease whose heartbeat a waiter has not seen move for this long is a dead holder's: it is taken over.
LEASE_STALE_SECONDS = float(os.environ.get("TALKING_HEADS_LEASE_STALE_SECONDS", "30"))
#: Longer than one submit can take with all its retries (as the row's claim): then taken over, beat or not.
LEASE_MAX_SECONDS = 600.0
#: How often a waiting submit looks at the lease again (with jitter, so waiters do not move in step).
LEASE_POLL_SECONDS = 0.2
#: How long a submit waits for the lease before its step fails (nothing sent; the task's retry waits again).
LEASE_WAIT_SECONDS = float(os.environ.get("TALKING_HEADS_LEASE_WAIT_SECONDS", "1800"))


class LeaseTimeout(RuntimeError):
    """The account's lease stayed held by others for the whole wait; nothing was sent."""

    request_not_sent = True


@dataclass(frozen=True)
class LeaseRecord:
    """One generation of an account's lease: who holds it (``holder``, the row), since when, its
    heartbeat count, and whether it was released."""

    generation: int
    holder: str
    row_id: str
    taken_at: str
    beats: int = 0
    released: bool = False

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def from_json(cls, body: bytes) -> LeaseRecord:
        data = json.loads(body)
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


class AccountLease:
    """The submit lease of one account under one output root (see the module's docstring)."""

    def __init__(self, ledger: RowLedger, account: str, log: logging.Logger | None = None) -> None:
        digest = hashlib.sha256(account.encode()).hexdigest()[:16]
        self.folder: ObjectStoragePath = ledger.layout.root / "state" / "leases" / digest
        self.account = account
        self.log = log or logging.getLogger(__name__)
        #: (generation, beats) -> when this process first saw it: a heartbeat that does not move goes stale.
        self._seen: dict[tuple[int, int], float] = {}

    @contextlib.contextmanager
    def hold(self, holder: str, row_id: str, wait: float | None = None) -> Iterator[LeaseRecord]:
        """Take the lease (waiting while another holds it), keep it beating, release it on the way out."""
        record = self.acquire(holder, row_id, LEASE_WAIT_SECONDS if wait is None else wait)
        beat = _Heartbeat(self, record)
        beat.start()
        try:
            yield record
        finally:
            beat.stop()
            self._write(replace(beat.record, released=True))

    def acquire(self, holder: str, row_id: str, wait: float) -> LeaseRecord:
        """Take the next generation once the current one is free; :class:`LeaseTimeout` after ``wait`` s."""
        deadline, waited = time.monotonic() + wait, False
        while True:
            current = self.newest()
            if current is None or self._free(current):
                mine = LeaseRecord((current.generation if current else 0) + 1, holder, row_id, now_iso())
                if create_exclusively(self._path(mine.generation), mine.to_json()):
                    self._hint(mine.generation)
                    self._log_taken(mine, current, waited)
                    return mine
                continue  # another waiter took it first: look again at once
            if time.monotonic() > deadline:
                raise LeaseTimeout(
                    f"row {row_id}: the submit lease of account {self.account} stayed held (by {current.holder}, "
                    f"for row {current.row_id}) for {wait:g} s; nothing was sent"
                )
            waited = True
            time.sleep(LEASE_POLL_SECONDS * (0.5 + random.random()))

    def newest(self) -> LeaseRecord | None:
        """The newest generation: from the hint, then forward while a next one exists."""
        generation, record = self._read_hint(), None
        while (found := self._read(generation + 1)) is not None:
            generation, record = generation + 1, found
        if record is None and generation > 0:
            record = self._read(generation)
        return record

    def _free(self, current: LeaseRecord) -> bool:
        if current.released:
            return True
        now = time.monotonic()
        first_seen = self._seen.setdefault((current.generation, current.beats), now)
        taken = time.time() - _epoch(current.taken_at)
        return now - first_seen > LEASE_STALE_SECONDS or taken > LEASE_MAX_SECONDS

    def _log_taken(self, mine: LeaseRecord, before: LeaseRecord | None, waited: bool) -> None:
        if before is not None and not before.released:
            self.log.warning(
                "Row %s: took over the submit lease of account %s from %s (row %s), whose holder stopped "
                "beating: its submit's answer, if any, was lost and is reconciled by that row",
                mine.row_id,
                self.account,
                before.holder,
                before.row_id,
            )
        elif waited:
            self.log.info("Row %s: took the submit lease of account %s after waiting", mine.row_id, self.account)

    def _write(self, record: LeaseRecord) -> None:
        # Atomic, as every ledger write: a reader never sees a half-rewritten lease.
        write_atomically(self._path(record.generation), record.to_json().decode())

    def _read(self, generation: int) -> LeaseRecord | None:
        try:
            return LeaseRecord.from_json(read_whole(self._path(generation)))
        except FileNotFoundError:
            return None
        except ValueError:  # being written (a store without atomic writes): as unreadable, look again
            return None

    def _read_hint(self) -> int:
        try:
            return int(read_whole(self.folder / "current"))
        except (FileNotFoundError, ValueError):
            return 0

    def _hint(self, generation: int) -> None:
        with contextlib.suppress(OSError):  # only a hint: a reader goes forward from it
            (self.folder / "current").write_text(str(generation))

    def _path(self, generation: int) -> ObjectStoragePath:
        return self.folder / f"{generation:012d}.json"


class _Heartbeat:
    """Rewrites the held lease every :data:`LEASE_BEAT_SECONDS` until stopped, so waiters see it alive."""

    def __init__(self, lease: AccountLease, record: LeaseRecord) -> None:
        self.lease, self.record = lease, record
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lease-{record.generation}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(LEASE_BEAT_SECONDS):
            self.record = replace(self.record, beats=self.record.beats + 1)
            try:
                self.lease._write(self.record)
            except Exception as error:  # a missed beat only brings the takeover nearer
                self.lease.log.warning("Submit lease heartbeat not written: %s", error)


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()
