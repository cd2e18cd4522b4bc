"""Assets of ``talking_heads``: the input table it reads, and the outcomes and videos it produces, so
other DAGs (the cost report) can be scheduled on them and lineage shows where tables come from.

The input table and the output root are run parameters, so each asset event carries them in its
``extra``.
"""

from __future__ import annotations

from airflow.sdk import Asset

INPUT_TABLE = Asset(name="talking_heads_input_table", group="talking_heads")
OUTCOMES = Asset(name="talking_heads_outcomes", group="talking_heads")
VIDEOS = Asset(name="talking_heads_videos", group="talking_heads")
