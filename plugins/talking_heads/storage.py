"""Paths under ``output_root``, for any fsspec URL (``file://``, ``s3://``, ``oss://``, ...)."""

from __future__ import annotations

import os
import re

from airflow.sdk import ObjectStoragePath

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def as_storage_path(url: str, conn_id: str | None = None) -> ObjectStoragePath:
    """Return an ``ObjectStoragePath`` for a URL or a plain local path (made absolute)."""
    if "://" not in url:
        url = "file://" + os.path.abspath(os.path.expanduser(url))
    return ObjectStoragePath(url, conn_id=conn_id or None)  # a rendered empty param means "none"


def plain_url(path: ObjectStoragePath) -> str:
    """``s3://bucket/key`` for a path: ``str()`` would embed its conn id (``s3://aws_default@bucket/...``)."""
    return f"{'file' if path.protocol in ('file', 'local', '') else path.protocol}://{path.path}"


def safe_name(text: str) -> str:
    """A file-name-safe rendering of a run id such as ``manual__2026-11-23T14:00:00+00:00``."""
    return _UNSAFE.sub("_", text).strip("_") or "run"


class OutputLayout:
    """The contract's layout under ``output_root``: ``videos/``, ``outcomes/``, ``state/``."""

    def __init__(self, output_root: str, conn_id: str | None = None) -> None:
        self.root = as_storage_path(output_root, conn_id)

    def video(self, row_id: str) -> ObjectStoragePath:
        return self.root / "videos" / f"{row_id}.mp4"

    def state(self, row_id: str) -> ObjectStoragePath:
        return self.root / "state" / f"{row_id}.json"

    def revision(self, row_id: str, revision: int) -> ObjectStoragePath:
        """Revision ``n`` of a row's record, created exclusively: the ledger's compare-and-set."""
        return self.root / "state" / "revisions" / row_id / f"{revision:06d}.json"

    def outcomes(self, run_id: str, suffix: str) -> ObjectStoragePath:
        return self.root / "outcomes" / f"{safe_name(run_id)}.{suffix}"

    def plan(self, run_id: str) -> ObjectStoragePath:
        return self.root / "runs" / safe_name(run_id) / "plan.json"

    def quota_exhausted(self, run_id: str, account: str) -> ObjectStoragePath:
        """Written when an account's free quota runs out in a run: its remaining rows are not submitted."""
        return self.root / "runs" / safe_name(run_id) / "quota_exhausted" / f"{safe_name(account)}.json"
