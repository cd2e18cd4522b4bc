"""The task record and its timing model (:mod:`dashscope_emulator.tasks`)."""

from __future__ import annotations

from pathlib import Path

from dashscope_emulator.tasks import FAIL_SECONDS, Outcome, Task, run_seconds


def test_run_seconds_and_busy_seconds() -> None:
    assert run_seconds(0) == 8.0 and run_seconds(4) == 18.0
    assert Outcome(video_path=Path("v.mp4"), video_duration=4.0, video_ratio="1:1").busy_seconds() == 18.0
    failed = Outcome("InvalidURL", "bad")
    assert not failed.succeeded and failed.busy_seconds() == FAIL_SECONDS


def test_public_view_shows_outcome_only_when_finished_and_never_a_file_path() -> None:
    task = Task("t-1", "fp", "acct", "emo-v1", {"image_url": "http://h/i.png"}, {}, 0.0)
    task.outcome = Outcome(video_path=Path("/cache/v.mp4"), video_duration=4.0, video_ratio="1:1")
    view = task.public()
    assert (view["status"], view["video_duration"], view["account"], view["key_fingerprint"]) == (
        "PENDING",
        None,
        "acct",
        "fp",
    )
    task.status = "SUCCEEDED"
    assert task.public()["video_duration"] == 4.0
    assert "/cache/" not in str(task.public())
