"""Two ``talking_heads`` runs started at once over the same table and output root (#16), each in a process of
its own with its own metadata database (two deployments, or a backfill and a scheduled run), against one
emulator: every row is generated once, succeeds in one run and is ``skipped`` (or ``succeeded``, same task)
in the other, and no row ends ``failed`` or ``uncertain``. Repeated, on a local disk and on S3 (moto).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from io import StringIO
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from tests.conftest import S3_BUCKET, repetitions
from tests.harness.cluster import copy_sqlite
from tests.harness.reliability import REPO_ROOT, Media, read_outcomes, tasks_by_row, write_table
from tests.harness.services import s3_client, s3_connection

#: How many times the two runs are started together, per store: 10 in the full tier, once every day
#: (OVERLAP_REPETITIONS overrides it).
REPETITIONS = int(os.environ.get("OVERLAP_REPETITIONS", str(repetitions(10))))
KINDS = ("emo-square", "emoji", "emo-halfbody", "emo-square", "emoji", "emo-halfbody")


def _home(folder: Path, migrated_db: str) -> dict[str, str]:
    """An Airflow home of its own, with a copy of the session's migrated SQLite database."""
    folder.mkdir(parents=True)
    copy_sqlite(Path(migrated_db.removeprefix("sqlite:///")), folder / "airflow.db")
    return {
        "AIRFLOW_HOME": str(folder),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{folder}/airflow.db",
    }


def _start(home: dict[str, str], logical_date: datetime, conf: dict[str, Any], log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, **home, "PYTHONPATH": str(REPO_ROOT)}
    args = json.dumps({"logical_date": logical_date.isoformat(), "conf": conf})
    return subprocess.Popen(
        [sys.executable, "-m", "tests.harness.overlap_run", args],
        cwd=REPO_ROOT,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )


def _run_ids(*logs: Path) -> list[str]:
    """The run ids the runner processes printed (``OVERLAP RUN {...}``), in the order of ``logs``."""
    return [
        json.loads(line.removeprefix("OVERLAP RUN "))["run_id"]
        for log in logs
        for line in log.read_text().splitlines()
        if line.startswith("OVERLAP RUN ")
    ]


def _outcomes(output_root: str, run_id: str, s3: Any) -> pd.DataFrame:
    from talking_heads.storage import safe_name

    name = f"outcomes/{safe_name(run_id)}.csv"
    if output_root.startswith("s3://"):
        key = f"{output_root.removeprefix(f's3://{S3_BUCKET}/').rstrip('/')}/{name}"
        body = s3.get_object(Bucket=S3_BUCKET, Key=key)["Body"].read().decode()
        return pd.read_csv(StringIO(body), dtype=str, keep_default_na=False, na_values=[""])
    return read_outcomes(Path(output_root) / name)


@pytest.mark.timeout(120 + 90 * REPETITIONS)  # about 40 s a repetition on 2 cores
@pytest.mark.parametrize("store", ["local", "s3"])
def test_two_runs_at_once_over_one_output_root_generate_each_row_once(
    store: str, media: Media, emulator: Any, airflow_db: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    s3 = None
    if store == "s3":
        endpoint = request.getfixturevalue("moto_s3")
        os.environ["AIRFLOW_CONN_AWS_DEFAULT"] = json.dumps(s3_connection(endpoint))
        request.addfinalizer(lambda: os.environ.pop("AIRFLOW_CONN_AWS_DEFAULT", None))
        s3 = s3_client(endpoint)
    homes = [_home(tmp_path / f"deployment-{side}", airflow_db) for side in "AB"]
    for repetition in range(REPETITIONS):
        rows = [media.row(f"{store}{repetition}-r{i}", kind) for i, kind in enumerate(KINDS)]
        table = write_table(tmp_path / f"table-{repetition}.csv", rows)
        output_root = (
            f"s3://{S3_BUCKET}/overlap-{uuid.uuid4().hex[:8]}/" if s3 else str(tmp_path / f"output-{repetition}")
        )
        conf = {
            "input_table": str(table),
            "output_root": output_root,
            "poll_interval_seconds": 0.2,
            "preflight_checks": False,
            "storage_conn_id": "aws_default" if s3 else None,
        }
        # A backfill's date and the scheduled run's: two run ids, started together.
        dates = [datetime(2027, 3, 1, tzinfo=UTC) + timedelta(days=repetition + 40 * i) for i in range(2)]
        logs = [tmp_path / f"run-{repetition}-{side}.log" for side in "AB"]
        runs = [_start(home, date, conf, log) for home, date, log in zip(homes, dates, logs, strict=True)]
        for run, log in zip(runs, logs, strict=True):
            assert run.wait(timeout=600) == 0, log.read_text()[-3000:]
        run_ids = _run_ids(*logs)
        assert len(run_ids) == 2, [log.read_text()[-2000:] for log in logs]
        a, b = (_outcomes(output_root, run_id, s3).set_index("row_id") for run_id in run_ids)
        tasks = tasks_by_row(emulator)
        for row in rows:
            row_id = row["row_id"]
            statuses = sorted([a.loc[row_id, "status"], b.loc[row_id, "status"]])
            context = f"repetition {repetition}, row {row_id}: {a.loc[row_id].to_dict()} / {b.loc[row_id].to_dict()}"
            assert statuses in (["skipped", "succeeded"], ["succeeded", "succeeded"]), context
            assert len(tasks[row_id]) == 1, context  # generated once, whichever run sent it
            assert a.loc[row_id, "task_id"] == b.loc[row_id, "task_id"] == tasks[row_id][0]["task_id"], context


class _BlackHole:
    """A TCP server on 127.0.0.1 that takes requests and never answers: a submit sent to it hangs after
    sending, as one does when the network drops the answer (the run is then killed while it waits)."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.server.getsockname()[1]}"
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                self.held.append(self.server.accept()[0])

    def close(self) -> None:
        for held in self.held:
            held.close()
        self.server.close()


def _claims(output_root: Path) -> list[dict[str, Any]]:
    found = []
    for path in (output_root / "state").glob("*.json"):
        with contextlib.suppress(ValueError):  # a record being replaced: read again next time
            if (record := json.loads(path.read_text()))["state"] == "submitting":
                found.append(record)
    return found


def test_a_run_killed_while_it_holds_a_claim_does_not_hold_up_the_other(
    media: Media, emulator: Any, airflow_db: str, tmp_path: Path
) -> None:
    rows = [media.row(f"kill-r{i}", kind) for i, kind in enumerate(KINDS[:3])]
    table = write_table(tmp_path / "table.csv", rows)
    output_root = tmp_path / "output"
    conf = {"input_table": str(table), "output_root": str(output_root), "poll_interval_seconds": 0.2}
    homes = [_home(tmp_path / f"deployment-{side}", airflow_db) for side in "AB"]
    hole = _BlackHole()
    try:
        # Run B's service answers nothing: it claims its first row, sends it, and waits; then it is killed.
        key = json.loads(os.environ["AIRFLOW_CONN_DASHSCOPE_DEFAULT"])["password"]
        to_hole = {
            "AIRFLOW_CONN_DASHSCOPE_DEFAULT": json.dumps({"conn_type": "dashscope", "host": hole.url, "password": key})
        }
        run_b = _start({**homes[1], **to_hole}, datetime(2027, 6, 1, tzinfo=UTC), conf, tmp_path / "run-B.log")
        deadline = time.monotonic() + 120
        while not (claims := _claims(output_root)) and time.monotonic() < deadline:
            time.sleep(0.2)
        run_b.kill()
        run_b.wait(30)
        assert len(claims) == 1, (tmp_path / "run-B.log").read_text()[-3000:]
        claimed = claims[0]["row_id"]
        # Run A finds B's claim fresh, waits for it until it is stale (8 s here), then settles the row as an
        # uncertain submission: looked for in the task list, not sent again. B also died holding the account's
        # submit lease, which A takes over once B's beats have stopped for 5 s (30 s by default: A waited it
        # out); the emulator lists a task as soon as it exists, so reconciliation's pauses are short too.
        stale_soon = {
            **homes[0],
            "TALKING_HEADS_CLAIM_TIMEOUT_SECONDS": "8",
            "TALKING_HEADS_LEASE_STALE_SECONDS": "5",
            "TALKING_HEADS_RECONCILE_PAUSE_SECONDS": "0.2",
        }
        began = time.monotonic()
        run_a = _start(stale_soon, datetime(2027, 6, 2, tzinfo=UTC), conf, tmp_path / "run-A.log")
        assert run_a.wait(timeout=600) == 0, (tmp_path / "run-A.log").read_text()[-3000:]
        assert time.monotonic() - began < 300
    finally:
        hole.close()
    (run_id,) = _run_ids(tmp_path / "run-A.log")
    outcomes = _outcomes(str(output_root), run_id, None).set_index("row_id")
    line = outcomes.loc[claimed]
    assert line["status"] == "failed" and line["code"] == "SubmissionUncertain", line.to_dict()
    assert claims[0]["run_id"] in line["message"] and "was lost" in line["message"]
    tasks = tasks_by_row(emulator)
    assert claimed not in tasks  # B's request never reached the service, and A did not send it again
    for row in rows:
        if row["row_id"] != claimed:
            assert outcomes.loc[row["row_id"], "status"] == "succeeded" and len(tasks[row["row_id"]]) == 1
