"""The emulator's sample media for the tests: served over HTTP, and input-table rows that point at it.

* :func:`served_samples`: renders the sample media into a folder and serves it; yields the base URL and
  the boxes of ``samples.json``;
* :func:`sample_row`: an input-table row for one sample portrait, its boxes taken from ``samples.json``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from dashscope_emulator import make_samples, serve_directory


@contextmanager
def served_samples(folder: str | os.PathLike[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Write the sample media into ``folder`` and serve it; yields ``(base_url, boxes)`` (samples.json)."""
    make_samples(folder)
    boxes = json.loads((Path(folder) / "samples.json").read_text())
    with serve_directory(folder, port=0) as base_url:
        yield base_url, boxes


def sample_row(
    media_url: str,
    boxes: Mapping[str, Any],
    row_id: str,
    model: str,
    image: str,
    audio: str | None = None,
    *,
    driven_id: str | None = None,
    emulator_error: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """An input row for the sample ``image`` (and ``audio``) under ``media_url``, with its boxes as JSON.

    ``emulator_error`` asks the emulator to fail the image's check with that code; ``extra`` columns
    come last. Columns left out (no audio, no ``driven_id``) are not in the row.
    """
    row: dict[str, Any] = {"row_id": row_id, "model": model, "image_url": f"{media_url}/{image}"}
    if emulator_error:
        row["image_url"] += f"?emulator_error={emulator_error}"
    if audio:
        row["audio_url"] = f"{media_url}/{audio}"
    if driven_id:
        row["driven_id"] = driven_id
    row["face_bbox"] = json.dumps(boxes[image]["face_bbox"])
    row["ext_bbox"] = json.dumps(boxes[image]["ext_bbox"])
    return {**row, **extra}
