"""Prints the submit throughput of one account with the account's submit lease and without it.

    .venv/bin/python benchmarks/bench_lease.py [--rows 40] [--workers 8] [--store local|s3|both]

Setup: the emulator with one key (one account) at its documented submit limit (emo-v1: 5 per second), a
``--rows`` table of emo-v1 rows with boxes, submitted by ``--workers`` threads at once through the
pipeline's own submit step (``talking_heads.row.submit.submit_row``: claim, lease, POST, record), the way
that many submit task processes of a pool would. Once with the lease (the shipped behaviour), once
without it (``account_lease`` replaced by a no-op: what main did before), on a local output root and
on S3 (moto in server mode). The lease serializes the POSTs of one account; the account runs one task
at a time anyway and accepts 5 submits a second, so the lease should cost (almost) nothing.

One ``LEASE`` line per store and mode: rows, wall seconds, submits per second, the slowest submit step,
and the most submits the emulator saw in flight at once (1 with the lease, by construction).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from dashscope_emulator import EmulatorServer, make_samples, serve_directory

KEY = "sk-bench-lease-0123456789"
CONN_ID = "dashscope_default"
BUCKET = "bench-lease"


def _rows(media_url: str, boxes: dict[str, Any], count: int) -> list[Any]:
    from talking_heads.row.payloads import WorkItem
    from talking_heads.table.validation import RowRequest

    square = boxes["portrait_square.png"]
    return [
        WorkItem(
            RowRequest(
                row_id=f"row-{i:04d}",
                model="emo-v1",
                image_url=f"{media_url}/portrait_square.png?row=row-{i:04d}",
                audio_url=f"{media_url}/voice.wav",
                face_bbox=square["face_bbox"],
                ext_bbox=square["ext_bbox"],
            ),
            CONN_ID,
        )
        for i in range(count)
    ]


def _submit_all(
    output_root: str, storage: str | None, items: list[Any], workers: int, in_flight: InFlight
) -> list[float]:
    """Every row through the submit step, ``workers`` at once; each step's seconds."""
    from dashscope_provider.hooks.dashscope import DashScopeHook
    from talking_heads.row.ledger import RowLedger
    from talking_heads.row.media import MediaSigner
    from talking_heads.row.submit import submit_row

    ledger, log = RowLedger(output_root, storage), logging.getLogger("bench_lease")

    def one(item: Any) -> float:
        started = time.monotonic()
        submit_row(
            ledger,
            item,
            hook_for=lambda conn_id: in_flight.wrap(DashScopeHook(dashscope_conn_id=conn_id)),
            default_conn_id=CONN_ID,
            run_id="bench",
            resubmit_uncertain=False,
            signer=MediaSigner(storage),
            log=log,
        )
        return time.monotonic() - started

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(one, items))


class InFlight:
    """Counts the submit POSTs in flight at once (the hook's submit_task calls), and the most seen."""

    def __init__(self) -> None:
        self.lock, self.now, self.most = threading.Lock(), 0, 0

    def wrap(self, hook: Any) -> Any:
        post = hook.submit_task

        def counted(*args: Any, **kwargs: Any) -> Any:
            with self.lock:
                self.now += 1
                self.most = max(self.most, self.now)
            try:
                return post(*args, **kwargs)
            finally:
                with self.lock:
                    self.now -= 1

        hook.submit_task = counted
        return hook


def _measure(mode: str, store: str, root: str, storage: str | None, items: list[Any], args: Any, emu: Any) -> None:
    from talking_heads.row import submit as submit_step

    in_flight = InFlight()
    off = contextlib.nullcontext() if mode == "on" else _no_lease(submit_step)
    with off:
        started = time.monotonic()
        steps = _submit_all(root, storage, items, args.workers, in_flight)
        wall = time.monotonic() - started
    print(
        f"LEASE store={store} lease={mode} rows={len(items)} workers={args.workers} wall={wall:.2f}s "
        f"submits_per_s={len(items) / wall:.2f} slowest_step={max(steps):.2f}s "
        f"most_in_flight={in_flight.most} tasks={len(emu.tasks())}"
    )


@contextlib.contextmanager
def _no_lease(submit_step: Any) -> Any:
    saved = submit_step.account_lease
    submit_step.account_lease = lambda context, hook: contextlib.nullcontext()
    try:
        yield
    finally:
        submit_step.account_lease = saved


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=40)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--store", choices=("local", "s3", "both"), default="both")
    args = parser.parse_args()
    logging.getLogger("dashscope_provider").setLevel(logging.WARNING)
    stores = ("local", "s3") if args.store == "both" else (args.store,)
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        make_samples(tmp)
        boxes = json.loads((Path(tmp) / "samples.json").read_text())
        media_url = stack.enter_context(serve_directory(tmp))
        for mode in ("on", "off"):
            emulator = stack.enter_context(EmulatorServer(api_keys=[KEY], port=0, speed=1000))
            os.environ[f"AIRFLOW_CONN_{CONN_ID.upper()}"] = json.dumps(
                {"conn_type": "dashscope", "host": emulator.base_url, "password": KEY}
            )
            for store in stores:
                root, storage = _root(store, tmp, stack)
                _measure(mode, store, root, storage, _rows(media_url, boxes, args.rows), args, emulator)


def _root(store: str, tmp: str, stack: contextlib.ExitStack) -> tuple[str, str | None]:
    if store == "local":
        return str(Path(tmp) / f"out-{uuid.uuid4().hex[:8]}"), None
    if not hasattr(_root, "endpoint"):
        from moto.server import ThreadedMotoServer

        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        stack.callback(server.stop)
        host, port = server.get_host_and_port()
        _root.endpoint = f"http://{host}:{port}"  # type: ignore[attr-defined]
        os.environ["AIRFLOW_CONN_BENCH_S3"] = json.dumps(
            {
                "conn_type": "aws",
                "login": "testing",
                "password": "testing",
                "extra": {"endpoint_url": _root.endpoint, "region_name": "us-east-1"},  # type: ignore[attr-defined]
            }
        )
        import boto3

        boto3.client(
            "s3",
            endpoint_url=_root.endpoint,  # type: ignore[attr-defined]
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name="us-east-1",
        ).create_bucket(Bucket=BUCKET)
    return f"s3://{BUCKET}/out-{uuid.uuid4().hex[:8]}", "bench_s3"


if __name__ == "__main__":
    main()
