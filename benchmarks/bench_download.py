"""Prints peak memory and throughput while storing a 500 MB result video, against a plain streamed copy.

    .venv/bin/python benchmarks/bench_download.py [--mb 500]

A ``--mb`` MB "video" is served over HTTP on 127.0.0.1 (the emulator's static server, keep-alive, as
a result URL would be). Each copy runs in its own fresh process, whose peak RSS (``ru_maxrss``) is
read when it ends:

* ``baseline``: ``requests`` streaming the URL into a local file, 8 MB chunks (nothing else imported);
* ``hook-local``: ``DashScopeHook.download_video`` into a local path (temporary sibling + rename);
* ``hook-s3``: the same into ``s3://`` on moto in server mode (temporary file, then a multipart upload).

The hook's processes import Airflow, which alone takes well over 100 MB before a byte is copied, so
the figure that shows whether memory stays flat whatever the video size is the growth during the copy
(peak RSS minus RSS after the imports), printed beside the absolute peak.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

BASELINE = """
import resource, sys, time, requests
url, dest = sys.argv[1], sys.argv[2]
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
started = time.perf_counter()
size = 0
with requests.get(url, stream=True, timeout=60) as response, open(dest, "wb") as out:
    response.raise_for_status()
    for chunk in response.iter_content(chunk_size=8 * 1024 * 1024):
        out.write(chunk)
        size += len(chunk)
seconds = time.perf_counter() - started
print(size, seconds, before, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""

HOOK = """
import resource, sys, time
from dashscope_provider.hooks.dashscope import DashScopeHook
from airflow.sdk import ObjectStoragePath
url, dest, conn_id = sys.argv[1], sys.argv[2], sys.argv[3] or None
hook = DashScopeHook()
target = ObjectStoragePath(dest, conn_id=conn_id) if "://" in dest else dest
target.fs if hasattr(target, "fs") else None  # import the store's libraries before measuring
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
started = time.perf_counter()
stored = hook.download_video(url, target)
seconds = time.perf_counter() - started
print(stored.size_bytes, seconds, before, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def run(script: str, *args: str, env: dict[str, str] | None = None) -> tuple[int, float, float, float]:
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(script), *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, check=False)  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-3000:])
    size, seconds, before_kb, peak_kb = done.stdout.split()[-4:]
    return int(size), float(seconds), int(before_kb) / 1024, int(peak_kb) / 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=int, default=500)
    args = parser.parse_args()

    import boto3
    from dashscope_emulator import serve_directory
    from moto.server import ThreadedMotoServer

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        video = root / "served" / "video.mp4"
        video.parent.mkdir()
        with video.open("wb") as out:  # random-ish bytes: nothing along the way can compress them
            block = os.urandom(1024 * 1024)
            for i in range(args.mb):
                out.write(block[i % 997 :] + block[: i % 997])
        moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
        moto.start()
        endpoint = f"http://127.0.0.1:{moto._server.server_port}"
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing",
                     aws_secret_access_key="testing").create_bucket(Bucket="bench")  # fmt: skip
        env = {
            "AIRFLOW_CONN_BENCH_S3": json.dumps({"conn_type": "aws", "login": "testing", "password": "testing",
                                                 "extra": {"endpoint_url": endpoint, "region_name": "us-east-1"}}),
            # The hook reads no DashScope credential for a download, but is built from a connection id.
            "AIRFLOW_CONN_DASHSCOPE_DEFAULT": json.dumps({"conn_type": "dashscope", "host": "http://127.0.0.1:9",
                                                          "password": "unused"}),
        }  # fmt: skip
        try:
            with serve_directory(video.parent) as base_url:
                url = f"{base_url}/video.mp4"
                results = {
                    "baseline": run(BASELINE, url, str(root / "baseline.mp4")),
                    "hook-local": run(HOOK, url, str(root / "hook.mp4"), "", env=env),
                    "hook-s3": run(HOOK, url, "s3://bench/video.mp4", "bench_s3", env=env),
                }
        finally:
            moto.stop()

    base_size, base_seconds, _, _ = results["baseline"]
    base_rate = base_size / base_seconds / 1e6
    for name, (size, seconds, before, peak) in results.items():
        rate = size / seconds / 1e6
        print(f"DOWNLOAD {name:<10} bytes={size} seconds={seconds:.2f} throughput={rate:.0f}MB/s "
              f"({rate / base_rate:.2f}x baseline) peak_rss={peak:.0f}MB rss_growth_during_copy={peak - before:.0f}MB")


if __name__ == "__main__":
    main()
