"""Prints how long Airflow takes to parse each DAG file (the target is < 1 s), in a fresh process each.

.venv/bin/python benchmarks/bench_dag_parse.py
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
PROBE = """
import sys, time
import airflow.sdk  # Airflow itself is loaded before any DAG file is parsed
from tests.harness.airflow_compat import DagBag
started = time.perf_counter()
bag = DagBag(sys.argv[1])
elapsed = time.perf_counter() - started
assert not bag.import_errors, bag.import_errors
print(f"{elapsed:.3f}")
"""


def main() -> None:
    for dag_file in sorted((REPO_ROOT / "dags").glob("*.py")):
        runs = [
            float(
                subprocess.run([sys.executable, "-c", PROBE, str(dag_file)], capture_output=True, text=True, check=True)
                .stdout.strip()
                .splitlines()[-1]
            )
            for _ in range(3)
        ]
        print(f"dag_parse: {dag_file.name} best={min(runs):.3f}s runs={[round(r, 3) for r in runs]}")


if __name__ == "__main__":
    main()
