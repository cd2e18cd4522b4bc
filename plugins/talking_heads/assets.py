"""Assets that ``talking_heads`` produces, so other DAGs (the cost report) can be scheduled on them.

The output root is a run parameter, so each asset event carries it in its ``extra``.
"""

from __future__ import annotations

from airflow.sdk import Asset

OUTCOMES = Asset(name="talking_heads_outcomes", group="talking_heads")
VIDEOS = Asset(name="talking_heads_videos", group="talking_heads")
