"""Command line: ``python -m dashscope_emulator --port 8000 --api-key sk-a --speed 60``.

Prints one line ``DashScope emulator listening on http://HOST:PORT (speed Nx, keys: K)`` to stdout and
serves until SIGTERM or SIGINT. Keys come from ``--api-key`` (repeatable) and ``--account
NAME=KEY[,KEY...]`` (repeatable: keys of one Alibaba Cloud account, which share its rate limits and its
one running task), else from ``$DASHSCOPE_EMULATOR_API_KEYS`` (comma-separated), else the single key
``sk-emulator``; they are never printed. ``--fault-rate R`` makes each request fail with probability
R: a submit half of the time with a 5xx (no task) and half of the time by a dropped connection (task
created); a query with a 5xx. ``--free-quota NAME=N`` (repeatable) makes an account free-only: N
submits, then 429 ``Throttling.AllocationQuota`` "Free allocated quota exceeded." (NAME: an
``--account`` name, or the fingerprint of an ``--api-key``).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading

from dashscope_emulator.server import EmulatorServer

DESCRIPTION = (
    "A local emulator of the DashScope video-synthesis API (emo-v1, emoji-v1) and its face-detect call, "
    "for tests and demos."
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m dashscope_emulator", description=DESCRIPTION)
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port (0 = any free port; default 8000)")
    parser.add_argument(
        "--api-key",
        action="append",
        dest="api_keys",
        default=[],
        metavar="KEY",
        help="an accepted API key (repeatable; default $DASHSCOPE_EMULATOR_API_KEYS or sk-emulator)",
    )
    parser.add_argument(
        "--account",
        action="append",
        dest="accounts",
        default=[],
        metavar="NAME=KEY[,KEY...]",
        help="keys of one account: they share its limits and queue (repeatable; other keys: one account each)",
    )
    parser.add_argument("--speed", type=float, default=1.0, help="simulated seconds per wall second (default 1)")
    parser.add_argument(
        "--fault-rate",
        type=float,
        default=0.0,
        metavar="R",
        help="probability in [0, 1] that a request is faulted (default 0)",
    )
    parser.add_argument(
        "--free-quota",
        action="append",
        dest="free_quotas",
        default=[],
        metavar="NAME=N",
        help="account NAME is free-only: N submits, then 429 'Free allocated quota exceeded.' (repeatable)",
    )
    parser.add_argument("--seed", type=int, default=None, help="seed for the fault dice (reproducible runs)")
    parser.add_argument("--quiet", action="store_true", help="no per-request log lines on stderr")
    return parser.parse_args(argv)


def parse_accounts(values: list[str]) -> dict[str, list[str]]:
    """``["acct=sk-a,sk-b", ...]`` -> ``{"acct": ["sk-a", "sk-b"]}``; ValueError (without the keys) if malformed."""
    accounts: dict[str, list[str]] = {}
    for value in values:
        name, sep, keys = value.partition("=")
        found = [key.strip() for key in keys.split(",") if key.strip()]
        if not sep or not name.strip() or not found:
            raise ValueError(f"--account needs NAME=KEY[,KEY...] (account {name.strip()!r})")
        accounts.setdefault(name.strip(), []).extend(found)
    return accounts


def parse_free_quotas(values: list[str]) -> dict[str, int]:
    """``["acct=3", ...]`` -> ``{"acct": 3}``; ValueError if malformed."""
    quotas: dict[str, int] = {}
    for value in values:
        name, sep, number = value.partition("=")
        if not sep or not name.strip() or not number.strip().isdigit():
            raise ValueError(f"--free-quota needs NAME=N, N a whole number (got {value!r})")
        quotas[name.strip()] = int(number)
    return quotas


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not 0.0 <= args.fault_rate <= 1.0:
        print("--fault-rate must be in [0, 1]", file=sys.stderr)
        return 2
    try:
        accounts = parse_accounts(args.accounts)
        free_quota = parse_free_quotas(args.free_quotas)
        logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(message)s")
        emulator = EmulatorServer(
            api_keys=args.api_keys or None,
            accounts=accounts or None,
            host=args.host,
            port=args.port,
            speed=args.speed,
            seed=args.seed,
            log_requests=not args.quiet,
            free_quota=free_quota or None,
        )
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    rate = args.fault_rate
    emulator.set_faults(submit_5xx=rate / 2, drop_submit=rate / 2, query_5xx=rate, seed=args.seed)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    emulator.start()
    summary = f"speed {args.speed:g}x, keys: {emulator.key_count}"
    if accounts:
        summary += f", accounts: {len(emulator.accounts())}"
    print(f"DashScope emulator listening on {emulator.base_url} ({summary})", flush=True)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        emulator.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
