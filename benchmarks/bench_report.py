"""Prints the time to build the cost report (CSV tables + HTML with chart) over 100,000 outcome lines.

.venv/bin/python benchmarks/bench_report.py [--lines 100000] [--files 50]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from talking_heads.reporting.report import write_report


def make_outcomes(root: Path, lines: int, files: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    (root / "outcomes").mkdir(parents=True)
    per_file = lines // files
    for f in range(files):
        model = rng.choice(["emo-v1", "emoji-v1"], per_file, p=[0.7, 0.3])
        status = rng.choice(["succeeded", "failed", "skipped"], per_file, p=[0.8, 0.1, 0.1])
        ratio = np.where(model == "emo-v1", rng.choice(["1:1", "3:4"], per_file), "standard")
        frame = pd.DataFrame(
            {
                "row_id": [f"r{f}-{i}" for i in range(per_file)],
                "model": model,
                "status": status,
                "task_id": [f"t{f}-{i}" for i in range(per_file)],
                "code": np.where(status == "failed", "InvalidURL", None),
                "video_duration": np.round(rng.uniform(2, 60, per_file), 2),
                "video_ratio": ratio,
                "run_id": f"scheduled__2026-11-{1 + f % 28:02d}T00:00:00+00:00",
            }
        )
        frame.to_parquet(root / "outcomes" / f"run{f}.parquet", index=False)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--files", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        make_outcomes(Path(tmp), args.lines, args.files)
        started = time.perf_counter()
        result = write_report(tmp)
        elapsed = time.perf_counter() - started
    print(f"report: lines={args.lines} files={args.files} videos={result['videos']} time={elapsed:.2f}s")


if __name__ == "__main__":
    main()
