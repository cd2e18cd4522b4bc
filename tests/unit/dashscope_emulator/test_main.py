"""The command line (:mod:`dashscope_emulator.__main__`)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import uuid

import pytest
import requests

from tests.unit.dashscope_emulator.helpers import INCLUDE_DIR


def test_cli_prints_one_line_and_stops_on_sigterm() -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(INCLUDE_DIR), os.environ.get("PYTHONPATH", "")])}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dashscope_emulator",
            "--port",
            "0",
            "--api-key",
            "sk-cli-a",
            "--api-key",
            "sk-cli-b",
            "--speed",
            "60",
            "--fault-rate",
            "0",
            "--seed",
            "1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        timer = threading.Timer(20, process.kill)
        timer.start()
        line = process.stdout.readline()  # type: ignore[union-attr]
        timer.cancel()
        banner = r"DashScope emulator listening on (http://127\.0\.0\.1:\d+) \(speed 60x, keys: 2\)\n"
        match = re.fullmatch(banner, line)
        assert match, line
        response = requests.get(
            f"{match.group(1)}/api/v1/tasks/{uuid.uuid4()}", headers={"Authorization": "Bearer sk-cli-b"}
        )
        assert response.json()["output"]["task_status"] == "UNKNOWN"
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
        stderr = process.stderr.read()  # type: ignore[union-attr]
        assert "GET /api/v1/tasks/" in stderr and "200" in stderr  # one line per request...
        assert "sk-cli" not in stderr + line  # ...and never the key
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_cli_accounts_option() -> None:
    from dashscope_emulator.__main__ import main, parse_accounts

    assert parse_accounts(["acct=sk-a, sk-b", "other=sk-c", "acct=sk-d"]) == {
        "acct": ["sk-a", "sk-b", "sk-d"],
        "other": ["sk-c"],
    }
    for bad in ("acct", "=sk-a", "acct="):
        with pytest.raises(ValueError, match="NAME=KEY") as caught:
            parse_accounts([bad])
        assert "sk-a" not in str(caught.value)  # a key is never echoed
    assert main(["--port", "0", "--account", "acct"]) == 2  # refused before anything starts
