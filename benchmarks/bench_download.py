"""Prints peak memory and throughput while storing a 500 MB result video, against a plain streamed copy.

    .venv/bin/python benchmarks/bench_download.py [--mb 500]

A ``--mb`` MB "video" is served over HTTP on 127.0.0.1 (the emulator's static server, keep-alive, as
a result URL would be). Each copy runs in its own fresh process, whose peak RSS (``VmHWM``) is read
before and after the copy:

* ``baseline``: ``requests`` streaming the URL into a local file, 8 MB chunks (nothing else imported);
* ``transfer-local``: the provider's ``download_video`` (``transfers.dashscope_to_object_storage``) into a
  local path (temporary sibling + rename);
* ``transfer-s3``: the same into ``s3://`` on moto in server mode (temporary file, then a multipart upload).

The transfer's processes import Airflow, which alone takes well over 100 MB before a byte is copied, so
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

# Peak RSS is VmHWM: it belongs to the process's own address space (ru_maxrss survives exec, so a child
# would report its parent's peak).
PEAK = """
def peak_kb():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
"""

BASELINE = (
    PEAK
    + """
import sys, time, requests
url, dest = sys.argv[1], sys.argv[2]
before = peak_kb()
started = time.perf_counter()
size = 0
with requests.get(url, stream=True, timeout=60) as response, open(dest, "wb") as out:
    response.raise_for_status()
    for chunk in response.iter_content(chunk_size=8 * 1024 * 1024):
        out.write(chunk)
        size += len(chunk)
seconds = time.perf_counter() - started
print(size, seconds, before, peak_kb())
"""
)

TRANSFER = (
    PEAK
    + """
import sys, time
from dashscope_provider.transfers.dashscope_to_object_storage import download_video
from airflow.sdk import ObjectStoragePath
url, dest, conn_id = sys.argv[1], sys.argv[2], sys.argv[3] or None
target = ObjectStoragePath(dest, conn_id=conn_id) if "://" in dest else dest
ObjectStoragePath("file:///tmp").fs, getattr(target, "fs", None)  # imports done before measuring
before = peak_kb()
started = time.perf_counter()
stored = download_video(url, target)
seconds = time.perf_counter() - started
print(stored.size_bytes, seconds, before, peak_kb())
"""
)


def run(script: str, *args: str, env: dict[str, str] | None = None) -> tuple[int, float, float, float]:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        check=False,
    )
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

    # Copies land in memory (/dev/shm) where there is one: disk write-back would swamp the differences.
    shm = "/dev/shm" if os.path.isdir("/dev/shm") else None
    with tempfile.TemporaryDirectory(dir=shm) as tmp:
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
        boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        ).create_bucket(Bucket="bench")
        env = {
            "AIRFLOW_CONN_BENCH_S3": json.dumps(
                {
                    "conn_type": "aws",
                    "login": "testing",
                    "password": "testing",
                    "extra": {"endpoint_url": endpoint, "region_name": "us-east-1"},
                }
            ),
        }
        try:
            with serve_directory(video.parent) as base_url:
                url = f"{base_url}/video.mp4"
                results = {}
                # Baseline first and again last, each output deleted at once: the page cache's write-back
                # of one copy must not slow down the next.
                for name, script, dest, conn in (
                    ("baseline", BASELINE, root / "copy.mp4", None),
                    ("transfer-local", TRANSFER, root / "copy.mp4", ""),
                    ("transfer-s3", TRANSFER, "s3://bench/video.mp4", "bench_s3"),
                    ("baseline-2", BASELINE, root / "copy.mp4", None),
                ):
                    extra = () if conn is None else (conn,)
                    results[name] = run(script, url, str(dest), *extra, env=env)
                    Path(root / "copy.mp4").unlink(missing_ok=True)
                    os.sync()
        finally:
            moto.stop()

    base_rate = sum(size / seconds for size, seconds, _, _ in (results["baseline"], results["baseline-2"])) / 2e6
    for name, (size, seconds, before, peak) in results.items():
        rate = size / seconds / 1e6
        print(
            f"DOWNLOAD {name:<14} bytes={size} seconds={seconds:.2f} throughput={rate:.0f}MB/s "
            f"({rate / base_rate:.2f}x the baselines' mean) peak_rss={peak:.0f}MB "
            f"rss_growth_during_copy={peak - before:.0f}MB"
        )


if __name__ == "__main__":
    main()
