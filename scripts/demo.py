"""The README's first command (via ./demo.sh): run ``talking_heads`` once and report where things went.

Without a ``dashscope_default`` connection and without ``DASHSCOPE_API_KEY``, the project's DashScope
emulator is started on 127.0.0.1 and used, with the sample media served beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
SAMPLE_TABLE = REPO_ROOT / "include" / "sample" / "talking_heads_sample.csv"
SAMPLE_MEDIA_DIR = REPO_ROOT / "include" / "sample" / "media"
SAMPLE_MEDIA_PORT = 8766  # the port the bundled sample table's URLs point at
EMULATOR_KEY = "sk-emulator"


def _connection_from_environment() -> str | None:
    """The connection the run will use, if the user configured one (env var or DASHSCOPE_API_KEY)."""
    if os.environ.get("AIRFLOW_CONN_DASHSCOPE_DEFAULT"):
        return "AIRFLOW_CONN_DASHSCOPE_DEFAULT"
    key = os.environ.get("DASHSCOPE_API_KEY")
    if key:
        host = os.environ.get("DASHSCOPE_BASE_URL", "https://dashscope.aliyuncs.com")
        os.environ["AIRFLOW_CONN_DASHSCOPE_DEFAULT"] = json.dumps(
            {"conn_type": "dashscope", "host": host, "password": key}
        )
        return f"DASHSCOPE_API_KEY at {host}"
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--input-table", default=str(SAMPLE_TABLE))
    parser.add_argument("--output-root", default=str(REPO_ROOT / "demo-output"))
    parser.add_argument(
        "--storage-conn-id", default=None, help="Airflow connection of the store behind an s3:// or oss:// output root"
    )
    parser.add_argument("--fresh", action="store_true", help="delete a local output root first")
    parser.add_argument("--speed", type=float, default=30.0, help="emulator speed factor (simulated time)")
    args = parser.parse_args()

    from dashscope_emulator import EmulatorServer, make_samples, serve_directory

    if args.fresh and "://" not in args.output_root:
        shutil.rmtree(args.output_root, ignore_errors=True)

    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True, capture_output=True)

    emulator = None
    source = _connection_from_environment()
    if source is None:
        emulator = EmulatorServer(api_keys=[EMULATOR_KEY], port=0, speed=args.speed).start()
        os.environ["AIRFLOW_CONN_DASHSCOPE_DEFAULT"] = json.dumps(
            {"conn_type": "dashscope", "host": emulator.base_url, "password": EMULATOR_KEY}
        )
        source = f"the local DashScope emulator at {emulator.base_url} (speed {args.speed:g}x)"
    print(f"==> DashScope: {source}", flush=True)

    make_samples(SAMPLE_MEDIA_DIR)
    conf = {
        "input_table": args.input_table,
        "output_root": args.output_root,
        "storage_conn_id": args.storage_conn_id,
        "poll_interval_seconds": 1,
    }
    with serve_directory(SAMPLE_MEDIA_DIR, port=SAMPLE_MEDIA_PORT) as media_url:
        print(f"==> Sample media served at {media_url}", flush=True)
        print(f"==> airflow dags test talking_heads --conf '{json.dumps(conf)}'", flush=True)
        log_path = REPO_ROOT / ".airflow" / "demo-last-run.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("w") as log:
            run = subprocess.run(
                [sys.executable, "-m", "airflow", "dags", "test", "talking_heads", "--conf", json.dumps(conf)],
                stdout=log,
                stderr=subprocess.STDOUT,
                check=False,
            )
            # The report DAG follows talking_heads through its outcomes Asset in a deployment; dags
            # test runs one DAG, so the demo runs it next.
            report_conf = {"output_root": args.output_root, "storage_conn_id": args.storage_conn_id}
            print(f"==> airflow dags test dashscope_cost_report --conf '{json.dumps(report_conf)}'", flush=True)
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "airflow",
                    "dags",
                    "test",
                    "dashscope_cost_report",
                    "--conf",
                    json.dumps(report_conf),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                check=False,
            )
    if emulator is not None:
        emulator.stop()
    root = args.output_root
    return _report(root, args.storage_conn_id, log_path, run.returncode, time.monotonic() - started)


def _report(root: str, storage_conn_id: str | None, log_path: Path, returncode: int, seconds: float) -> int:
    import pandas as pd
    from talking_heads.reporting.outcome_table import outcome_detail
    from talking_heads.storage import as_storage_path, plain_url

    output_root = as_storage_path(root, storage_conn_id)
    folder = output_root / "outcomes"
    # Run ids start with when the run was made (manual__2026-11-29T...), so names sort in run order.
    found = folder.iterdir() if folder.exists() else ()
    outcomes = sorted((p for p in found if p.name.endswith(".csv")), key=lambda p: p.name)
    if returncode != 0 and not outcomes:
        print(f"!! The run failed before writing outcomes (exit {returncode}); see {log_path}")
        return 1
    with outcomes[-1].open("rb") as handle:
        frame = pd.read_csv(handle)
    counts = frame["status"].value_counts().to_dict()
    done = frame[frame["status"] == "succeeded"]
    print(f"==> Videos:   {plain_url(output_root / 'videos')}")
    print(f"==> Outcomes: {plain_url(outcomes[-1])} (and .parquet)")
    print(f"==> Report:   {plain_url(output_root / 'reports' / 'cost_report.html')} (and reports/*.csv)")
    print(f"==> Run log:  {log_path}")
    for _, row in frame.iterrows():
        detail = outcome_detail(row)
        print(f"    {row['row_id']:<24} {row['status']:<9} {detail}")
    cost = done["cost_usd"].fillna(0).sum()
    unknown = int(done["cost_usd"].isna().sum())
    print(
        f"SUMMARY rows={len(frame)} succeeded={counts.get('succeeded', 0)} failed={counts.get('failed', 0)} "
        f"skipped={counts.get('skipped', 0)} seconds={done['video_duration'].sum():.2f} "
        f"cost_usd={cost:.4f}"
        + (f" (+{unknown} rows with no known unit price)" if unknown else "")
        + f" wall={seconds:.0f}s"
        + f" detections={int(frame['detection_images'].fillna(0).sum()) if 'detection_images' in frame else 0}"
    )
    return 0 if returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
