"""Typed payloads that cross XCom (or the run's plan file) between the steps of ``talking_heads``.

Each is a frozen dataclass with ``to_dict``/``from_dict``: XCom stores plain JSON, the steps work with
types. None of them carries a secret: no API key, and no signed video URL (that stays in the ledger).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

from talking_heads.table.validation import RowRequest

if TYPE_CHECKING:
    from talking_heads.row.states import RowRecord


@dataclass(frozen=True)
class PlanEntry:
    """What the plan decided for one input row, in table order (kept in ``runs/{run}/plan.json``).

    ``plan`` is ``generate`` (with its ``request``) or ``done`` (with its final ``outcome``); ``columns``
    are the input's extra columns, carried through to the outcome table.
    """

    row_id: str | None
    model: str | None
    plan: Literal["generate", "done"]
    request: RowRequest | None = None
    outcome: dict[str, Any] | None = None
    estimated_cost_usd: float | None = None
    columns: dict[str, Any] = field(default_factory=dict)
    #: The voice clip's length as the pre-flight measured it (emo-v1 bills about that many seconds).
    audio_seconds: float | None = None

    def settle(self, outcome: dict[str, Any]) -> PlanEntry:
        """This entry, done before any spend with the given outcome."""
        return replace(self, plan="done", request=None, outcome=outcome)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"row_id": self.row_id, "model": self.model, "plan": self.plan}
        if self.request is not None:
            data["request"] = self.request.model_dump()
        if self.outcome is not None:
            data["outcome"] = {k: (str(v) if k == "code" and v is not None else v) for k, v in self.outcome.items()}
        if self.estimated_cost_usd is not None:
            data["estimated_cost_usd"] = self.estimated_cost_usd
        if self.audio_seconds is not None:
            data["audio_seconds"] = self.audio_seconds
        data["columns"] = self.columns
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PlanEntry:
        request = data.get("request")
        return cls(
            row_id=data.get("row_id"),
            model=data.get("model"),
            plan=data["plan"],
            request=RowRequest(**request) if request else None,
            outcome=data.get("outcome"),
            estimated_cost_usd=data.get("estimated_cost_usd"),
            audio_seconds=data.get("audio_seconds"),
            columns=data.get("columns") or {},
        )


@dataclass(frozen=True)
class WorkItem:
    """A row handed to the generate steps: its validated request and the connection the plan chose."""

    request: RowRequest
    conn_id: str | None = None
    #: The voice clip's length, when the plan measured it: recorded with the claim, so a lost answer can
    #: be told apart from another row's by the task's billed seconds (:mod:`talking_heads.row.reconcile`).
    audio_seconds: float | None = None

    @property
    def row_id(self) -> str:
        return self.request.row_id

    def to_dict(self) -> dict[str, Any]:
        data = {"row_id": self.row_id, "request": self.request.model_dump(), "conn_id": self.conn_id}
        if self.audio_seconds is not None:
            data["audio_seconds"] = self.audio_seconds
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WorkItem:
        return cls(
            request=RowRequest(**data["request"]),
            conn_id=data.get("conn_id") or None,
            audio_seconds=data.get("audio_seconds"),
        )


@dataclass(frozen=True)
class Submission:
    """The submit step's result: the row's DashScope task and the connection (key) that created it."""

    row_id: str
    task_id: str
    conn_id: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Submission:
        return cls(row_id=data["row_id"], task_id=data["task_id"], conn_id=data.get("conn_id") or "")


@dataclass(frozen=True)
class WaitResult:
    """The wait step's result: the row's task succeeded, with the service's usage."""

    row_id: str
    task_id: str
    video_duration: float | None = None
    video_ratio: str | None = None

    @classmethod
    def of(cls, state: RowRecord) -> WaitResult:
        return cls(state.row_id, state.task_id or "", state.video_duration, state.video_ratio)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WaitResult:
        return cls(
            row_id=data["row_id"],
            task_id=data["task_id"],
            video_duration=data.get("video_duration"),
            video_ratio=data.get("video_ratio"),
        )
