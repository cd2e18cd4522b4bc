"""What the pipeline's test modules share: a small input table of valid emo-v1 rows."""

from __future__ import annotations

import pandas as pd

#: A valid emo-v1 row (its media are never fetched: pre-flight is not asked for) with one extra column.
ROW = {
    "model": "emo-v1",
    "image_url": "http://m/p.png",
    "audio_url": "http://m/v.wav",
    "face_bbox": "[10, 10, 50, 50]",
    "ext_bbox": "[0, 0, 100, 100]",
    "note": "carried",
}


def table_frame(*ids: str) -> pd.DataFrame:
    """An input table of :data:`ROW` rows with these row ids, in order."""
    return pd.DataFrame([{"row_id": i, **ROW} for i in ids])
