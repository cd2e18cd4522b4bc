"""Helpers of the reliability tests: valid rows, ``talking_heads`` runs through ``dag.test()``, and the
bookkeeping that maps the emulator's tasks, billing lines and submit requests back to rows.

Every generated row carries its id in its image URL's query string (``?row=<row_id>``): the static media
server ignores it, and the emulator keeps it in each task's ``input``, so its tasks, billing lines and
submit requests (tagged by the ``emulator`` fixture of ``conftest``) can be grouped by row.
"""

from __future__ import annotations

import itertools
import json
import os
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pandas as pd

REPO_ROOT = Path(__file__).resolve().parents[2]
KEY = "sk-reliability-0123456789abcdef"
SUBMIT_PATH = "/api/v1/services/aigc/image2video/video-synthesis"

# Every dag.test() run of this folder gets its own logical date (dag.test replaces a run of the same date).
_DATES = itertools.count()


@dataclass(frozen=True)
class Media:
    """The sample media served over HTTP: base URL and the face/ext boxes of each image."""

    url: str
    boxes: dict[str, Any]

    def row(self, row_id: str, kind: str = "emo-square", **changes: Any) -> dict[str, Any]:
        """A valid input row of one of three kinds; the image URL carries ``?row=<row_id>``."""
        image, audio, model, extra = {
            "emo-square": ("portrait_square.png", "voice.wav", "emo-v1", {"style_level": "calm"}),
            "emo-halfbody": ("portrait_halfbody.jpg", "voice.mp3", "emo-v1", {}),
            "emoji": ("portrait_emoji.png", None, "emoji-v1", {"driven_id": "mengwa_kaixin"}),
        }[kind]
        row = {
            "row_id": row_id,
            "model": model,
            "image_url": f"{self.url}/{image}?row={row_id}",
            "audio_url": f"{self.url}/{audio}" if audio else None,
            "face_bbox": json.dumps(self.boxes[image]["face_bbox"]),
            "ext_bbox": json.dumps(self.boxes[image]["ext_bbox"]),
            "style_level": None,
            "driven_id": None,
            **extra,
        }
        return {**row, **changes}


# -- running the DAG -------------------------------------------------------------------------------


def talking_heads_dag() -> Any:
    """The DAG, parsed afresh: ``dag.test(run_conf=...)`` leaves a run's conf in the DAG object's
    params, where the next run would inherit it (a wrong connection id, say)."""
    from tests.harness.airflow_compat import DagBag

    return DagBag(str(REPO_ROOT / "dags")).get_dag("talking_heads")


def run_dag(
    table: Path | str, output_root: Path | str, mark_success: str | None = None, **conf: Any
) -> tuple[str, pd.DataFrame | None]:
    """One ``talking_heads`` run through ``dag.test()``; returns its run id and its outcome table (None
    when ``output_root`` is a remote URL: read it from the store).

    ``mark_success``: a regex of task ids that are marked successful without running (``dag.test``'s
    ``mark_success_pattern``), to stop rows part-way as a killed worker or a stopped run would.
    """
    from talking_heads.storage import safe_name

    logical_date = datetime(2027, 1, 1, tzinfo=UTC) + timedelta(days=next(_DATES))
    run_conf = {"input_table": str(table), "output_root": str(output_root), "poll_interval_seconds": 0.2, **conf}
    run = talking_heads_dag().test(logical_date=logical_date, run_conf=run_conf, mark_success_pattern=mark_success)
    if isinstance(output_root, str) and "://" in output_root:
        return run.run_id, None
    return run.run_id, read_outcomes(Path(output_root) / "outcomes" / f"{safe_name(run.run_id)}.csv")


def read_outcomes(path: Path) -> pd.DataFrame:
    """An outcome CSV with every cell as text (row ids such as ``NaN`` or ``007`` stay as written)."""
    return pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])


def write_table(path: Path, rows: list[dict[str, Any]]) -> Path:
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


# -- mapping emulator records to rows --------------------------------------------------------------


def row_of(image_url: str) -> str | None:
    return (parse_qs(urlsplit(image_url).query).get("row") or [None])[0]


def submits(emulator: Any, since: int = 0) -> list[dict[str, Any]]:
    """Submit requests from the emulator's log (from entry ``since`` on), each tagged with its ``row``."""
    return [r for r in emulator.request_log()[since:] if r["method"] == "POST" and r["path"] == SUBMIT_PATH]


def tasks_by_row(emulator: Any) -> dict[str, list[dict[str, Any]]]:
    grouped: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for task in emulator.tasks():
        grouped[row_of(task["input"]["image_url"]) or "?"].append(task)
    return grouped


def bills_by_row(emulator: Any) -> Counter[str]:
    """Billing lines (one per SUCCEEDED task) per row."""
    row_of_task = {t["task_id"]: row_of(t["input"]["image_url"]) or "?" for t in emulator.tasks()}
    return Counter(row_of_task[line["task_id"]] for line in emulator.billing())


def count_leaks(output_root: Path, key: str = KEY) -> int:
    """Places the API key turned up (outputs, task logs, XCom, rendered fields, trigger rows), plus
    temporary files left behind under ``output_root`` (half-written videos or ledger records)."""
    from airflow.models.renderedtifields import RenderedTaskInstanceFields
    from airflow.models.trigger import Trigger
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    leaks = 0
    with create_session() as session:
        stored = [repr(x.value) for x in session.query(XComModel).all()]
        stored += [repr(r.rendered_fields) for r in session.query(RenderedTaskInstanceFields).all()]
        stored += [repr(t.kwargs) for t in session.query(Trigger).all()]
    leaks += sum(key in text for text in stored)
    for folder in (Path(os.environ["AIRFLOW_HOME"]) / "logs", output_root):
        for path in folder.rglob("*"):
            if not path.is_file():
                continue
            if path.suffix in (".part", ".tmp") or (path.suffix != ".mp4" and key.encode() in path.read_bytes()):
                leaks += 1
    return leaks
