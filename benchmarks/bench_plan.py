"""Prints the wall time and peak memory of reading, validating and planning a 10,000-row table.

.venv/bin/python benchmarks/bench_plan.py [--rows 10000]
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
import tracemalloc
from pathlib import Path

import pandas as pd
from talking_heads.row.ledger import RowLedger
from talking_heads.table.plan import plan_run, read_input_table


def make_table(path: Path, rows: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    records = []
    for i in range(rows):
        emo = rng.random() < 0.7
        side = rng.choice([600, 800])
        ext = [50, 50, 50 + side, 50 + (side if rng.random() < 0.5 or not emo else side * 4 // 3)]
        record = {
            "row_id": f"row-{i:06d}",
            "model": "emo-v1" if emo else "emoji-v1",
            "image_url": f"https://media.example.com/{i}.png",
            "face_bbox": json.dumps([150, 150, 400, 420]),
            "ext_bbox": json.dumps(ext),
            "campaign": f"c{i % 17}",
        }
        if emo:
            record |= {"audio_url": f"https://media.example.com/{i}.mp3", "style_level": "normal"}
        else:
            record |= {"driven_id": "mengwa_kaixin"}
        if i % 97 == 0:
            record["face_bbox"] = "[1, 2, 3]"  # a sprinkling of invalid rows
        records.append(record)
    pd.DataFrame(records).to_csv(path, index=False)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=10_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        table = Path(tmp) / "table.csv"
        make_table(table, args.rows)
        tracemalloc.start()
        started = time.perf_counter()
        frame = read_input_table(str(table))
        read_s = time.perf_counter() - started
        plan = plan_run(frame, RowLedger(str(Path(tmp) / "out")))
        total_s = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1]
    generate = sum(1 for e in plan if e.plan == "generate")
    print(
        f"plan: rows={args.rows} to_generate={generate} rejected={args.rows - generate} "
        f"read={read_s:.2f}s validate+plan={total_s - read_s:.2f}s total={total_s:.2f}s "
        f"peak_python_mem={peak / 1e6:.0f}MB"
    )


if __name__ == "__main__":
    main()
