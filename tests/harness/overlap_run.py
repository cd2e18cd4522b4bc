"""One ``talking_heads`` run through ``dag.test()`` in a process of its own: one side of an overlapping-runs
test (``tests/reliability/test_overlapping_runs.py``). The caller gives the process its own Airflow home and
metadata database in the environment, as a second deployment would have.

    python -m tests.harness.overlap_run '{"logical_date": "...", "conf": {...}}'

Prints ``OVERLAP RUN {"run_id": ..., "state": ...}`` when the run ends.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime


def main(argv: list[str]) -> None:
    args = json.loads(argv[1])
    from tests.harness.reliability import talking_heads_dag  # after the environment: airflow reads it at import

    run = talking_heads_dag().test(logical_date=datetime.fromisoformat(args["logical_date"]), run_conf=args["conf"])
    print("OVERLAP RUN " + json.dumps({"run_id": run.run_id, "state": str(run.state)}), flush=True)


if __name__ == "__main__":
    main(sys.argv)
