"""A row's recorded states, the moves allowed between them, and the record itself (:class:`RowRecord`).

The table of what each step does in each state is :mod:`talking_heads.row`'s docstring.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any


class RowStatus(StrEnum):
    """The recorded state of a row (see the module's table)."""

    SUBMITTING = "submitting"
    UNCERTAIN = "uncertain"
    SUBMITTED = "submitted"
    GENERATED = "generated"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


#: Every move a row may make. A submit starts from nothing, a refused or unbilled failure, or (on
#: purpose) an uncertain one; the wait may see the end of a task whatever an overlapping writer left;
#: a succeeded row never moves again.
TRANSITIONS: dict[RowStatus, frozenset[RowStatus]] = {
    RowStatus.SUBMITTING: frozenset({RowStatus.SUBMITTING, RowStatus.UNCERTAIN, RowStatus.SUBMITTED, RowStatus.FAILED}),
    RowStatus.UNCERTAIN: frozenset(
        {RowStatus.UNCERTAIN, RowStatus.SUBMITTING, RowStatus.SUBMITTED, RowStatus.GENERATED, RowStatus.FAILED}
    ),
    RowStatus.SUBMITTED: frozenset({RowStatus.SUBMITTING, RowStatus.GENERATED, RowStatus.FAILED}),
    RowStatus.GENERATED: frozenset({RowStatus.GENERATED, RowStatus.SUCCEEDED, RowStatus.FAILED}),
    RowStatus.SUCCEEDED: frozenset(),
    RowStatus.FAILED: frozenset({RowStatus.SUBMITTING, RowStatus.GENERATED, RowStatus.FAILED}),
}


#: A submit is being sent, or was sent and its answer lost: a task may exist whose id nobody has.
OPEN_SUBMISSION: frozenset[RowStatus] = frozenset({RowStatus.SUBMITTING, RowStatus.UNCERTAIN})
#: The service made the row's task and its id is recorded: later steps follow it, never send again.
HAS_TASK: frozenset[RowStatus] = frozenset({RowStatus.SUBMITTED, RowStatus.GENERATED, RowStatus.SUCCEEDED})


class OutcomeCode(StrEnum):
    """Every ``code`` the pipeline itself writes into an outcome (the service's codes pass through as-is)."""

    #: the row failed validation (the message names the row and the field)
    INVALID_INPUT = "InvalidInput"
    #: the row's media failed the pre-flight checks (format, size, duration) before any spend
    PREFLIGHT = "PreflightCheck"
    #: the submit answer was lost: a task may exist and be billed
    SUBMISSION_UNCERTAIN = "SubmissionUncertain"
    #: the run ended with the row still in flight
    INCOMPLETE = "Incomplete"
    #: the video was generated (billed) but could not be stored
    STORE_FAILED = "StoreFailed"
    #: the result URL died (24 h) before the video was stored
    RESULT_EXPIRED = "ResultExpired"
    #: the service no longer knows the task (task ids live 24 h); it may have run and been billed
    UNKNOWN = "UNKNOWN"


class RowTransitionError(ValueError):
    """A step tried to move a row in a way :data:`TRANSITIONS` does not allow."""


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class RowRecord:
    """The recorded progress of one row (the ledger's record; JSON-serialisable)."""

    row_id: str
    #: Where the row is; stored under the JSON key ``state`` (the ledger's on-disk format).
    status: RowStatus
    model: str = ""
    fingerprint: str = ""
    #: The connection (API key) the task was submitted with: only that key can query it.
    conn_id: str | None = None
    task_id: str | None = None
    code: str | None = None
    message: str | None = None
    billed: bool = False
    video_url: str | None = None
    video_uri: str | None = None
    video_bytes: int | None = None
    video_sha256: str | None = None
    video_duration: float | None = None
    video_ratio: str | None = None
    run_id: str | None = None
    #: The face detection that gave this row its boxes: ``key``, ``model``, ``ratio``, ``passed`` and who
    #: paid for it (``run_id``, ``row_id``); a detection is billed once per image and ratio, not per row.
    detection: dict[str, Any] | None = None
    #: When the last submit intent was written and its answer seen lost (ISO, UTC); the unclaimed tasks of
    #: that window (None: never looked), whether one was adopted, whether it was sent again (may pay twice).
    #: See :mod:`talking_heads.row.reconcile`.
    intent_at: str | None = None
    lost_at: str | None = None
    candidates: tuple[str, ...] | None = None
    reconciled: bool = False
    resubmitted: bool = False
    #: Who wrote the last submit intent, the row's claim: ``"{run_id} {task_id}[{map_index}] try {n}"``, and
    #: the Airflow deployment it ran in (two deployments may both have a run ``scheduled__2026-11-29...``).
    owner: str | None = None
    deployment: str | None = None
    #: What the row's task should bill, recorded with its claim: the output ratio (``1:1``/``3:4``, or
    #: ``standard`` for emoji-v1) and, for emo-v1, the voice clip's seconds (when the plan measured them). A
    #: lost answer's task is told apart from other rows' by them (:mod:`talking_heads.row.reconcile`).
    expected_ratio: str | None = None
    expected_seconds: float | None = None
    #: 429 answers the submit step waited out for this row (detect and submit), counted in the run's summary.
    throttled: int = 0
    updated_at: str = field(default_factory=now_iso)
    history: tuple[str, ...] = ()
    #: How many times the row was written: the ledger's compare-and-set (0: never stored).
    revision: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "status", RowStatus(self.status))

    @property
    def has_task(self) -> bool:
        """Whether the row's task exists and is known (submitted, generated or succeeded, with its id)."""
        return self.status in HAS_TASK and bool(self.task_id)

    def advance(self, status: RowStatus, **changes: Any) -> RowRecord:
        """A copy in a new status; the history keeps every status the row went through, with when."""
        if status not in TRANSITIONS[self.status]:
            raise RowTransitionError(f"row {self.row_id}: {self.status} -> {status} is not an allowed move")
        entry = f"{now_iso()} {self.status}->{status}" + (f" task={self.task_id}" if self.task_id else "")
        return replace(
            self,
            status=status,
            updated_at=now_iso(),
            history=(*self.history, entry),
            revision=self.revision + 1,
            **changes,
        )

    def lose(self, message: str | None) -> RowRecord:
        """A copy ``uncertain``: the submit answer was lost, seen now (a task may exist)."""
        return self.advance(
            RowStatus.UNCERTAIN, code=OutcomeCode.SUBMISSION_UNCERTAIN, message=message, lost_at=now_iso()
        )

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["state"] = str(data.pop("status"))
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RowRecord:
        data = {("status" if k == "state" else k): v for k, v in data.items()}
        data = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        data["history"] = tuple(data.get("history", ()))
        if data.get("candidates") is not None:
            data["candidates"] = tuple(data["candidates"])
        return cls(**data)
