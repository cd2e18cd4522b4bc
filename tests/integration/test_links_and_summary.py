"""What a person is given after a run (``dag.test()`` against the emulator over HTTP): each task's extra
link resolves to the right object, the summary line has no ``nan``, and the optional summary mail.

* download -> **Stored video**: the stored file (``file://``), or on S3 a presigned URL that serves the
  video's exact bytes without credentials;
* wait -> **DashScope task**: the emulator's task query URL of the row's task (no key in it: asking it
  without the key is refused; with the key it answers that task);
* record_outcomes -> **Outcome table** (this run's CSV) and **Cost report** (the report the cost DAG writes).
"""

from __future__ import annotations

import email
import json
import socketserver
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import requests
from dashscope_emulator import EmulatorServer

from tests.integration.conftest import KEY

REPO_ROOT = Path(__file__).resolve().parents[2]


class _SmtpHandler(socketserver.StreamRequestHandler):
    """Just enough SMTP (RFC 5321) for smtplib: every message's DATA goes to ``server.messages``."""

    def handle(self) -> None:
        self.wfile.write(b"220 localhost test SMTP\r\n")
        while line := self.rfile.readline():
            verb = line.decode(errors="replace").strip().split(" ")[0].upper()
            if verb in ("EHLO", "HELO"):
                self.wfile.write(b"250 localhost\r\n")
            elif verb == "DATA":
                self.wfile.write(b"354 end with .\r\n")
                body = []
                while (data := self.rfile.readline()) not in (b".\r\n", b""):
                    body.append(data)
                self.server.messages.append(b"".join(body).decode(errors="replace"))  # type: ignore[attr-defined]
                self.wfile.write(b"250 queued\r\n")
            elif verb == "QUIT":
                self.wfile.write(b"221 bye\r\n")
                return
            else:
                self.wfile.write(b"250 ok\r\n")


@pytest.fixture
def smtp_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """An SMTP server on 127.0.0.1, set as ``smtp_default``; yields the messages it received."""
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _SmtpHandler)
    server.daemon_threads = True
    server.messages = []  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    extra = {"disable_tls": True, "disable_ssl": True, "from_email": "talking-heads@example.test"}
    monkeypatch.setenv(
        "AIRFLOW_CONN_SMTP_DEFAULT",
        json.dumps({"conn_type": "smtp", "host": "127.0.0.1", "port": server.server_address[1], "extra": extra}),
    )
    try:
        yield server.messages  # type: ignore[attr-defined]
    finally:
        server.shutdown()
        server.server_close()


def _table(path: Path, media_url: str, boxes: dict) -> Path:
    square = boxes["portrait_square.png"]
    common = {"model": "emo-v1", "audio_url": f"{media_url}/voice.wav"}
    rows = [
        {"row_id": "square", "image_url": f"{media_url}/portrait_square.png", **common},
        {"row_id": "face-pose", "image_url": f"{media_url}/portrait_square.png?emulator_error=InvalidFile.FacePose"},
    ]
    for row in rows:
        row.update(common, face_bbox=json.dumps(square["face_bbox"]), ext_bbox=json.dumps(square["ext_bbox"]))
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def _run(day: int, conf: dict[str, Any]) -> Any:
    from tests.harness.airflow_compat import DagBag

    dag = DagBag(str(REPO_ROOT / "dags")).get_dag("talking_heads")
    return dag.test(logical_date=datetime(2026, 10, day, tzinfo=UTC), run_conf={"poll_interval_seconds": 0.2, **conf})


def _links(run_id: str) -> dict[tuple[str, int], dict[str, Any]]:
    """(task_id, map_index) -> {link name: URL}, as the UI gets them: the links' XComs of the run."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    names = {
        "_link_StoredVideoLink": "Stored video",
        "_link_DashScopeTaskLink": "DashScope task",
        "_link_OutcomeTableLink": "Outcome table",
        "_link_CostReportLink": "Cost report",
    }
    found: dict[tuple[str, int], dict[str, Any]] = {}
    with create_session() as session:
        for x in session.query(XComModel).filter(XComModel.run_id == run_id, XComModel.key.in_(list(names))):
            found.setdefault((x.task_id, x.map_index), {})[names[x.key]] = XComModel.deserialize_value(x)
    return found


def _map_index(run_id: str, row_id: str) -> int:
    """The map index of a row's generate steps: its place in the plan task's work items."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        plan = session.query(XComModel).filter_by(run_id=run_id, task_id="plan", key="return_value").one()
        work = XComModel.deserialize_value(plan)
    return [item["row_id"] for item in work].index(row_id)


def test_links_resolve_to_the_video_the_task_and_the_outcomes_and_the_summary_is_mailed(
    airflow_db: str, emulator: EmulatorServer, media: tuple[str, dict], tmp_path: Path, smtp_server: list[str]
) -> None:
    from talking_heads.reporting.outcome_table import outcome_detail
    from talking_heads.storage import safe_name

    table = _table(tmp_path / "table.csv", *media)
    out = tmp_path / "out"
    run = _run(1, {"input_table": str(table), "output_root": str(out), "notify_email": "ops@example.test"})
    outcomes = pd.read_csv(out / "outcomes" / f"{safe_name(run.run_id)}.csv").set_index("row_id")
    links = _links(run.run_id)

    square = _map_index(run.run_id, "square")
    video = links[("generate.download", square)]["Stored video"]
    assert video == f"file://{out / 'videos' / 'square.mp4'}"
    assert Path(video.removeprefix("file://")).read_bytes()[4:8] == b"ftyp"

    for row_id in ("square", "face-pose"):  # the failed task is linked too: that is where to look
        wait = links[("generate.wait", _map_index(run.run_id, row_id))]["DashScope task"]
        task_id = outcomes.loc[row_id, "task_id"]
        assert wait == f"{emulator.base_url}/api/v1/tasks/{task_id}"
        assert KEY not in wait
        assert requests.get(wait, timeout=10).status_code == 401  # the link carries no credential
        answer = requests.get(wait, headers={"Authorization": f"Bearer {KEY}"}, timeout=10).json()
        assert answer["output"]["task_id"] == task_id

    outcome_links = links[("record_outcomes", -1)]
    assert outcome_links["Outcome table"] == f"file://{out / 'outcomes' / (safe_name(run.run_id) + '.csv')}"
    assert outcome_links["Cost report"] == f"file://{out / 'reports' / 'cost_report.html'}"
    from talking_heads.reporting.report import write_report  # the cost DAG's body: the link's page is what it writes

    write_report(str(out))
    assert "DashScope cost report" in Path(outcome_links["Cost report"].removeprefix("file://")).read_text()

    # The summary, mailed through SmtpNotifier (notify_email set), says what the note says.
    assert len(smtp_server) == 1
    mail = email.message_from_string(smtp_server[0])
    assert mail["To"] == "ops@example.test"
    assert mail["Subject"] == f"talking_heads {run.run_id}: 1 succeeded, 1 failed"
    html = "".join(p.get_payload(decode=True).decode() for p in mail.walk() if p.get_content_type() == "text/html")
    assert "1 succeeded, 1 failed, 0 skipped of 2 rows · 5.3 s billed · USD 0.0608" in html

    # A second run: the stored row is skipped, and what a person reads of it has no nan.
    again = _run(2, {"input_table": str(table), "output_root": str(out)})
    second = pd.read_csv(out / "outcomes" / f"{safe_name(again.run_id)}.csv")
    skipped = second[second["status"] == "skipped"].iloc[0]
    assert pd.isna(skipped["code"])
    assert outcome_detail(skipped).startswith("already generated by run ")
    assert "nan" not in " ".join(outcome_detail(line) for _, line in second.iterrows())
    assert len(smtp_server) == 1  # notify_email unset: no mail (off by default)


@pytest.mark.usefixtures("airflow_db", "emulator")
def test_stored_video_link_on_s3_is_presigned(media: tuple[str, dict], aws_default: str, tmp_path: Path) -> None:
    from tests.conftest import S3_BUCKET

    root = f"s3://{S3_BUCKET}/links"
    table = _table(tmp_path / "table.csv", *media)
    run = _run(3, {"input_table": str(table), "output_root": root, "storage_conn_id": "aws_default"})
    links = _links(run.run_id)
    video = links[("generate.download", _map_index(run.run_id, "square"))]["Stored video"]
    assert video.startswith(f"{aws_default}/{S3_BUCKET}/links/videos/square.mp4?")
    assert "Signature=" in video.split("?")[1]
    body = requests.get(video, timeout=10)  # no credentials: the URL itself is the permission
    assert body.ok and body.content[4:8] == b"ftyp"
    table_link = links[("record_outcomes", -1)]["Outcome table"]
    outcomes = pd.read_csv(table_link)  # pandas reads the presigned https URL
    assert outcomes.set_index("row_id").loc["square", "status"] == "succeeded"
