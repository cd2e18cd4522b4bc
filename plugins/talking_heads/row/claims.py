"""A row's claim: the submit intent a run writes before it sends, naming who sent it and when.

Another run that finds a fresh claim waits for it (:func:`await_claim`), then follows the task it
made. A claim older than :data:`CLAIM_TIMEOUT_SECONDS`, or left by an earlier try of the same step, is a
lost answer: its owner is gone (:func:`stale_claim_message`). What became of a claim is written only if
the row is still that claim's (:func:`record_if_claimed`): an overlapping writer may have moved it on.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime

from airflow.configuration import conf

from talking_heads.row.ledger import RowLedger
from talking_heads.row.reconcile import lost_answer_message
from talking_heads.row.states import RowRecord, RowStatus

#: A submit intent (the row's claim) younger than this is taken for alive, and another run waits for it.
#: Longer than one submit can take: the hook keeps retrying a throttled call for 120 s, and each of its
#: attempts may wait 10 + 60 s for an answer. Older, or written by an earlier try of this very step, the
#: claim's owner is gone and its answer lost.
CLAIM_TIMEOUT_SECONDS = float(os.environ.get("TALKING_HEADS_CLAIM_TIMEOUT_SECONDS", "600"))
#: How often a run that waits for another run's claim reads the row again.
CLAIM_POLL_SECONDS = 2.0


def deployment_id() -> str:
    """This Airflow deployment, as a short digest of its metadata database's address (never the address: it
    may hold a password). Two deployments writing to one output root have two databases."""
    address = conf.get("database", "sql_alchemy_conn", fallback="") or ""
    return hashlib.sha256(address.encode()).hexdigest()[:12]


def claim_age(record: RowRecord, now: datetime | None = None) -> float | None:
    """Seconds since the row's claim (submit intent) was written, if it is still fresh; else None."""
    if not record.intent_at:
        return None
    age = ((now or datetime.now(UTC)) - datetime.fromisoformat(record.intent_at)).total_seconds()
    return age if age < CLAIM_TIMEOUT_SECONDS else None


def own_run(record: RowRecord, run_id: str) -> bool:
    """Whether the row's claim was made by this very run (an earlier try of this step: its owner is gone)."""
    return record.run_id == run_id and record.deployment in (None, deployment_id())


def claimed_elsewhere(record: RowRecord, run_id: str) -> bool:
    """Whether another run (or deployment) is sending the row right now: its fresh claim."""
    return record.status == RowStatus.SUBMITTING and not own_run(record, run_id) and claim_age(record) is not None


def await_claim(ledger: RowLedger, claim: RowRecord, log: logging.Logger) -> RowRecord | None:
    """Wait for another run's fresh claim to end (submitted, refused, or lost) or to go stale."""
    log.info(
        "Row %s is being submitted by the overlapping run %s (%s, since %s): waiting for its task, at most %g s",
        claim.row_id,
        claim.run_id,
        claim.owner,
        claim.intent_at,
        CLAIM_TIMEOUT_SECONDS,
    )
    current: RowRecord | None = claim
    while current is not None and current.revision == claim.revision and claim_age(current) is not None:
        time.sleep(CLAIM_POLL_SECONDS)
        current = ledger.get(claim.row_id)
    return current


def stale_claim_message(record: RowRecord, run_id: str) -> str | None:
    """Why a claim nobody answered is a lost answer (None for an earlier try of this very step)."""
    if own_run(record, run_id):
        return None  # an earlier try of this step: its answer was lost when it ended
    return lost_answer_message(
        f"run {record.run_id} ({record.owner}) claimed the row at {record.intent_at} and recorded no answer within "
        f"{CLAIM_TIMEOUT_SECONDS:g} s"
    )


def record_if_claimed(
    ledger: RowLedger,
    row_id: str,
    owner: str,
    move: Callable[[RowRecord], RowRecord],
    *also: RowStatus,
) -> RowRecord | None:
    """Record what became of this claim, unless another writer has moved the row on (then leave it)."""
    statuses = (RowStatus.SUBMITTING, *also)

    def change(current: RowRecord | None) -> RowRecord | None:
        if current is None or current.owner != owner or current.status not in statuses:
            return None
        return move(current)

    return ledger.update(row_id, change)
