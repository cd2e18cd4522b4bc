"""Paths under ``output_root`` (talking_heads.storage): the layout's places for a local root and an S3 root
(moto), where writing through them lands; file-name-safe run ids; plain URLs without a conn id."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from talking_heads.storage import OutputLayout, as_storage_path, plain_url, safe_name

from tests.unit.conftest import BUCKET

RUN = "manual__2026-11-23T14:00:00+00:00"


@pytest.mark.parametrize(
    ("run_id", "safe"),
    [
        (RUN, "manual__2026-11-23T14_00_00_00_00"),
        ("scheduled__2026-11-23", "scheduled__2026-11-23"),
        ("a/b\\c d", "a_b_c_d"),
        ("../../etc", ".._.._etc"),  # no separator survives: it stays one name in its folder
        ("", "run"),
        ("+++", "run"),
    ],
)
def test_safe_name_leaves_one_file_name(run_id: str, safe: str) -> None:
    assert safe_name(run_id) == safe
    assert "/" not in safe and "\\" not in safe and ":" not in safe


def test_a_local_root_lays_out_videos_outcomes_state_and_runs(tmp_path: Path) -> None:
    layout = OutputLayout(str(tmp_path))
    places = {
        "video": layout.video("r-1"),
        "state": layout.state("r-1"),
        "revision": layout.revision("r-1", 7),
        "outcomes": layout.outcomes(RUN, "csv"),
        "plan": layout.plan(RUN),
        "quota": layout.quota_exhausted(RUN, "acct/1"),
    }
    assert {name: plain_url(path) for name, path in places.items()} == {
        "video": f"file://{tmp_path}/videos/r-1.mp4",
        "state": f"file://{tmp_path}/state/r-1.json",
        "revision": f"file://{tmp_path}/state/revisions/r-1/000007.json",
        "outcomes": f"file://{tmp_path}/outcomes/manual__2026-11-23T14_00_00_00_00.csv",
        "plan": f"file://{tmp_path}/runs/manual__2026-11-23T14_00_00_00_00/plan.json",
        "quota": f"file://{tmp_path}/runs/manual__2026-11-23T14_00_00_00_00/quota_exhausted/acct_1.json",
    }
    # Revisions sort in the order they were written.
    assert sorted(str(layout.revision("r", n)) for n in (10, 9, 100)) == [
        str(layout.revision("r", n)) for n in (9, 10, 100)
    ]
    layout.plan(RUN).parent.mkdir(parents=True)
    layout.plan(RUN).write_text("{}")
    assert (tmp_path / "runs" / "manual__2026-11-23T14_00_00_00_00" / "plan.json").read_text() == "{}"


def test_a_relative_or_home_path_is_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert plain_url(as_storage_path("out/videos")) == f"file://{tmp_path}/out/videos"
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert plain_url(as_storage_path("~/out")) == f"file://{tmp_path}/home/out"
    assert plain_url(as_storage_path(f"file://{tmp_path}/x")) == f"file://{tmp_path}/x"
    assert os.path.isabs(as_storage_path("rel").path)


def test_an_s3_root_writes_into_its_bucket_and_its_urls_carry_no_conn_id(
    aws_conn: str, s3_client: Any, tmp_path: Path
) -> None:
    root = f"s3://{BUCKET}/{tmp_path.name}"
    layout = OutputLayout(root, aws_conn)
    assert plain_url(layout.video("r-1")) == f"{root}/videos/r-1.mp4"
    assert plain_url(layout.outcomes(RUN, "parquet")) == f"{root}/outcomes/manual__2026-11-23T14_00_00_00_00.parquet"
    assert aws_conn not in plain_url(layout.state("r-1"))
    layout.state("r-1").write_text('{"state": "submitted"}')
    body = s3_client.get_object(Bucket=BUCKET, Key=f"{tmp_path.name}/state/r-1.json")["Body"].read()
    assert body == b'{"state": "submitted"}'
    # A rendered empty conn id param means "none", not a connection named "".
    empty = as_storage_path(root, "")  # Airflow 3.1's ObjectStoragePath keeps it in storage_options only
    assert getattr(empty, "conn_id", None) is None and empty.storage_options.get("conn_id") is None
