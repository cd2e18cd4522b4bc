"""The per-row ledger: each row's record (:class:`~talking_heads.row.states.RowRecord`) stored under
``output_root/state/{row_id}.json``, and each paid face detection under
``output_root/state/detections/{key}.json`` (keyed by model, ratio and image, not by row, so two rows
or two runs with the same image and ratio share one detection).

It only stores and loads. What the states mean, and which step moves a row from one to another, is
:mod:`talking_heads.row`.

Writes are a compare-and-set, so no move overwrites a newer one (two overlapping runs, a zombie try):
a record read at revision ``n`` is written as revision ``n + 1``, and first created *exclusively* as
``state/revisions/{row_id}/{n+1}.json``. Only one writer can create it; the others get a
:class:`LedgerConflict` carrying the row's newer record, and decide again from it. ``state/{row_id}.json``
is then a copy of the newest revision, for fast reads. The exclusive create is ``link()`` (as
``O_EXCL``) on a local disk, ``If-None-Match: *`` on S3, ``x-oss-forbid-overwrite`` on OSS, and fsspec's
``mode="create"`` elsewhere: exclusive where the store's filesystem implements it as such (for GCS, a
generation match; gcsfs is not installed here, so untested), else an existence check, then a write
(today's last-writer-wins behaviour, said in docs/storage.md).
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from airflow.sdk import ObjectStoragePath

from talking_heads.progress import Progress
from talking_heads.row.states import RowRecord
from talking_heads.storage import OutputLayout

#: How many newer revisions a conflicting writer reads forward at most (a row moves a handful of times).
_MAX_REVISIONS = 10_000


class LedgerConflict(Exception):
    """Another writer moved the row first; ``current`` is the row's newer record (decide again from it)."""

    def __init__(self, row_id: str, current: RowRecord) -> None:
        super().__init__(f"row {row_id} was moved by another writer to {current.status} (revision {current.revision})")
        self.row_id = row_id
        self.current = current


class RowLedger:
    """Reads and writes :class:`RowRecord` records under ``output_root/state/``."""

    def __init__(self, output_root: str, conn_id: str | None = None) -> None:
        self.layout = OutputLayout(output_root, conn_id)

    def get(self, row_id: str) -> RowRecord | None:
        path = self.layout.state(row_id)
        try:
            return RowRecord.from_dict(json.loads(read_whole(path)))
        except FileNotFoundError:
            return None

    def get_many(self, row_ids: list[str]) -> dict[str, RowRecord]:
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

    def put(self, record: RowRecord) -> RowRecord:
        """Record ``record`` if nobody wrote the row since the record it was made from was read.

        ``record.revision`` is one more than the revision it was made from (:meth:`RowRecord.advance`
        counts); a new record is revision 1. Raises :class:`LedgerConflict` when that revision exists.
        """
        if record.revision < 1:
            record = replace(record, revision=1)
        body = json.dumps(record.to_dict(), sort_keys=True)
        if not create_exclusively(self.layout.revision(record.row_id, record.revision), body.encode()):
            raise LedgerConflict(record.row_id, self._newest(record.row_id, record.revision))
        write_atomically(self.layout.state(record.row_id), body)
        return record

    def update(
        self, row_id: str, change: Callable[[RowRecord | None], RowRecord | None], attempts: int = 50
    ) -> RowRecord | None:
        """Apply ``change`` to the row's newest record until it lands: ``change(current)`` returns the new
        record, or None to leave the row as it is (then ``current`` is returned)."""
        current = self.get(row_id)
        for _ in range(attempts):
            if (record := change(current)) is None:
                return current
            try:
                return self.put(record)
            except LedgerConflict as conflict:
                current = conflict.current
        raise RuntimeError(f"row {row_id}: the ledger kept moving under {attempts} writes in a row")

    def _newest(self, row_id: str, taken: int) -> RowRecord:
        """The newest revision from ``taken`` on; ``state/{row_id}.json`` is brought up to it, in case the
        writer that made it died before copying it there."""
        newest = None
        for revision in range(taken, taken + _MAX_REVISIONS):
            try:
                newest = read_whole(self.layout.revision(row_id, revision)).decode()
            except FileNotFoundError:
                break
        if newest is None:  # refused, yet gone: only a store that deletes behind our back does this
            if (copy := self.get(row_id)) is not None:
                return copy
            raise RuntimeError(f"row {row_id}: revision {taken} was refused but cannot be read")
        record = RowRecord.from_dict(json.loads(newest))
        copy = self.get(row_id)
        if copy is None or copy.revision < record.revision:
            write_atomically(self.layout.state(row_id), newest)
        return record

    def get_detection(self, key: str) -> dict[str, Any] | None:
        try:
            return json.loads(read_whole(self._detection_path(key)))
        except FileNotFoundError:
            return None

    def put_detection(self, key: str, record: dict[str, Any]) -> dict[str, Any]:
        write_atomically(self._detection_path(key), json.dumps(record, sort_keys=True))
        return record

    def claim_detection(self, key: str, claimant: str) -> bool:
        """Create the detection's claim exclusively: True for the one caller that did (it then detects).

        An exclusive create (``O_EXCL`` on a local disk, ``If-None-Match`` on S3, forbid-overwrite on OSS)
        makes two rows with the same image in one run pay once. Other stores get fsspec's own ``create``
        (an existence check, then a write: best effort), or none at all: then every caller answers True.
        """
        path = self.layout.root / "state" / "detections" / f"{key}.claim"
        return create_exclusively(path, json.dumps({"by": claimant}).encode())

    def release_detection(self, key: str) -> None:
        """Drop a claim whose detection call failed unanswered, so another row need not wait for it."""
        path = self.layout.root / "state" / "detections" / f"{key}.claim"
        with contextlib.suppress(FileNotFoundError):
            path.unlink()

    def _detection_path(self, key: str) -> ObjectStoragePath:
        return self.layout.root / "state" / "detections" / f"{key}.json"


def read_whole(path: ObjectStoragePath) -> bytes:
    """The object's bytes in one read. Not ``open()``: on S3 that reads the ETag first and then fails with
    ``FileExpired`` when another writer replaces the record in between (a compare-and-set loser must see
    the winner's record, not an error)."""
    return path.fs.cat_file(path.path)


def create_exclusively(path: ObjectStoragePath, body: bytes) -> bool:
    """Create ``path`` unless it exists: True for the one caller that did.

    ``link()`` on a local disk (exclusive like ``O_EXCL``, and the content is there before the name;
    fsspec's local ``mode="create"`` checks, then writes: two threads could both pass), ``If-None-Match: *``
    on S3, forbid-overwrite on OSS, fsspec's ``mode="create"`` elsewhere.
    A store that has no such mode at all is written unconditionally (last writer wins) and answers True.
    """
    if path.protocol in ("file", "local", ""):
        # Written aside, then hard-linked into place: link() fails if the name exists, and a reader never
        # sees the file before its content.
        os.makedirs(os.path.dirname(path.path), exist_ok=True)
        aside = f"{path.path}.{uuid.uuid4().hex}.tmp"
        with open(aside, "wb") as handle:
            handle.write(body)
        try:
            os.link(aside, path.path)
        except FileExistsError:
            return False
        finally:
            os.unlink(aside)
        return True
    try:
        path.fs.pipe_file(path.path, body, mode="create")
    except FileExistsError:
        return False
    except (NotImplementedError, TypeError, ValueError):
        path.write_bytes(body)
    return True


def write_atomically(path: ObjectStoragePath, text: str) -> None:
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
