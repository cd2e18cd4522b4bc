"""The per-row ledger: each row's record (:class:`~talking_heads.lifecycle.RowState`) stored under
``output_root/state/{row_id}.json``, and each paid face detection under
``output_root/state/detections/{key}.json`` (keyed by model, ratio and image, not by row, so two rows
or two runs with the same image and ratio share one detection).

It only stores and loads. What the states mean, and which step moves a row from one to another, is
:mod:`talking_heads.lifecycle`.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from typing import Any

from airflow.sdk import ObjectStoragePath

from talking_heads.lifecycle import RowState
from talking_heads.progress import Progress
from talking_heads.storage import OutputLayout


class RowLedger:
    """Reads and writes :class:`RowState` records under ``output_root/state/``."""

    def __init__(self, output_root: str, conn_id: str | None = None) -> None:
        self.layout = OutputLayout(output_root, conn_id)

    def get(self, row_id: str) -> RowState | None:
        path = self.layout.state(row_id)
        try:
            return RowState.from_dict(json.loads(path.read_text()))
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
        progress = Progress("ledger: recorded states read", len(present & set(row_ids)))
        for row_id in row_ids:
            if row_id in present and (state := self.get(row_id)) is not None:
                found[row_id] = state
                progress.step()
        progress.finish()
        return found

    def put(self, record: RowState) -> RowState:
        _write_atomically(self.layout.state(record.row_id), json.dumps(record.to_dict(), sort_keys=True))
        return record

    def get_detection(self, key: str) -> dict[str, Any] | None:
        try:
            return json.loads(self._detection_path(key).read_text())
        except FileNotFoundError:
            return None

    def put_detection(self, key: str, record: dict[str, Any]) -> dict[str, Any]:
        _write_atomically(self._detection_path(key), json.dumps(record, sort_keys=True))
        return record

    def claim_detection(self, key: str, claimant: str) -> bool:
        """Create the detection's claim exclusively: True for the one caller that did (it then detects).

        An exclusive create (``O_EXCL`` on a local disk, ``If-None-Match`` on S3, forbid-overwrite on OSS)
        makes two rows with the same image in one run pay once. Other stores get fsspec's own ``create``
        (an existence check, then a write: best effort), or none at all: then every caller answers True.
        """
        path = self.layout.root / "state" / "detections" / f"{key}.claim"
        path.parent.mkdir(parents=True, exist_ok=True)
        body = json.dumps({"by": claimant}).encode()
        try:
            if path.protocol in ("file", "local", ""):
                # fsspec's local pipe_file(mode="create") checks, then writes: two threads can both pass.
                with open(path.path, "xb") as handle:
                    handle.write(body)
            else:
                path.fs.pipe_file(path.path, body, mode="create")
        except FileExistsError:
            return False
        except (NotImplementedError, TypeError, ValueError):
            path.write_bytes(body)  # no exclusive create here: last writer wins
        return True

    def release_detection(self, key: str) -> None:
        """Drop a claim whose detection call failed unanswered, so another row need not wait for it."""
        path = self.layout.root / "state" / "detections" / f"{key}.claim"
        with contextlib.suppress(FileNotFoundError):
            path.unlink()

    def _detection_path(self, key: str) -> ObjectStoragePath:
        return self.layout.root / "state" / "detections" / f"{key}.json"


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
