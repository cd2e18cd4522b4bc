"""The per-row ledger: durable progress of each row under ``output_root/state/{row_id}.json``.

It is what keeps money from being spent twice. Every step records what it learnt as soon as it knows
it (write-ahead for submissions), keyed by ``row_id``, so a task retry, a rerun, a cleared task or a
backfill finds the row's real state instead of guessing:

==============  ===============================================================  ==========================
state           meaning                                                          what a new attempt does
==============  ===============================================================  ==========================
``submitting``  a submit request is being sent (written *before* sending)        treat as ``uncertain``
``uncertain``   the submit answer was lost: a task may exist and may be billed   refuse, unless resubmit
``submitted``   the service accepted it: ``task_id`` known                       wait on the same task
``generated``   the task SUCCEEDED: ``video_url`` and usage known, not stored    download, don't resubmit
``succeeded``   the video is stored under ``videos/``                            skip
``failed``      the service (or download) failed; ``billed`` says if paid        resubmit only if unbilled
==============  ===============================================================  ==========================
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal

from airflow.sdk import ObjectStoragePath

from talking_heads.storage import OutputLayout

State = Literal["submitting", "uncertain", "submitted", "generated", "succeeded", "failed"]


def request_fingerprint(model: str, api_input: dict[str, Any], parameters: dict[str, Any] | None) -> str:
    """A stable hash of what would be sent, to notice a row whose content changed under its id."""
    body = json.dumps({"model": model, "input": api_input, "parameters": parameters or {}}, sort_keys=True)
    return hashlib.sha256(body.encode()).hexdigest()[:16]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class RowState:
    """The recorded progress of one row (JSON-serialisable)."""

    row_id: str
    state: State
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
    updated_at: str = field(default_factory=_now)
    history: tuple[str, ...] = ()

    def advance(self, state: State, **changes: Any) -> RowState:
        """A copy in a new state; the history keeps every state the row went through, with when."""
        entry = f"{_now()} {self.state}->{state}" + (f" task={self.task_id}" if self.task_id else "")
        return replace(self, state=state, updated_at=_now(), history=(*self.history, entry), **changes)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> RowState:
        data = json.loads(text)
        data["history"] = tuple(data.get("history", ()))
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


class RowLedger:
    """Reads and writes :class:`RowState` records under ``output_root/state/``."""

    def __init__(self, output_root: str, conn_id: str | None = None) -> None:
        self.layout = OutputLayout(output_root, conn_id)

    def get(self, row_id: str) -> RowState | None:
        path = self.layout.state(row_id)
        try:
            return RowState.from_json(path.read_text())
        except FileNotFoundError:
            return None

    def get_many(self, row_ids: list[str]) -> dict[str, RowState]:
        """States of the given rows that have one: one listing of ``state/``, then one read per hit
        (a 10,000-row table on an object store costs a LIST, not 10,000 GETs)."""
        folder = self.layout.root / "state"
        if not folder.exists():
            return {}
        present = {p.name.removesuffix(".json") for p in folder.iterdir() if p.name.endswith(".json")}
        found = {}
        for row_id in row_ids:
            if row_id in present and (state := self.get(row_id)) is not None:
                found[row_id] = state
        return found

    def put(self, record: RowState) -> RowState:
        _write_atomically(self.layout.state(record.row_id), record.to_json())
        return record


def _write_atomically(path: ObjectStoragePath, text: str) -> None:
    """Object stores commit a PUT whole; on a local disk, write aside and rename into place."""
    if path.protocol in ("file", "local", ""):
        local = path.path
        os.makedirs(os.path.dirname(local), exist_ok=True)
        tmp = f"{local}.{uuid.uuid4().hex}.tmp"
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, local)
    else:
        path.write_text(text)
