"""The result-video transfer (function and operator): streaming, atomic, retried, without DashScope credentials."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
import requests
from dashscope_provider.exceptions import DashScopeResultExpired
from dashscope_provider.hooks.dashscope import DashScopeHook
from dashscope_provider.retry import RetryPolicy
from dashscope_provider.transfers.dashscope_to_object_storage import (
    DashScopeVideoToObjectStorageOperator,
    download_video,
)

from tests.harness.services import QuietHandler, serve_http
from tests.unit.conftest import BUCKET, CONN_ID, is_result, logged_requests

pytestmark = pytest.mark.usefixtures("no_key_in_logs")


def _sha256(url: str) -> tuple[int, str]:
    body = requests.get(url, timeout=10).content
    return len(body), hashlib.sha256(body).hexdigest()


@pytest.fixture
def emo_video_url(dashscope_conn: str, make_hook: Any, emo_input: dict[str, Any], wait_terminal: Any) -> str:
    hook = make_hook()
    task = wait_terminal(hook, hook.submit_task("emo-v1", emo_input).task_id)
    assert task.video_url
    return task.video_url


@pytest.fixture
def emoji_video_url(dashscope_conn: str, emoji_input: dict[str, Any], make_hook: Any, wait_terminal: Any) -> str:
    hook = make_hook()
    task = wait_terminal(hook, hook.submit_task("emoji-v1", emoji_input).task_id)
    assert task.video_url
    return task.video_url


# -- download_video ---------------------------------------------------------------------------------


def test_download_video_to_local_path(emo_video_url: str, tmp_path: Path, emulator: Any) -> None:
    destination = tmp_path / "videos" / "row-1.mp4"
    video_url = emo_video_url
    stored = download_video(video_url, str(destination), chunk_size=64 * 1024)
    size, digest = _sha256(video_url)
    assert (stored.size_bytes, stored.sha256) == (size, digest)
    assert stored.uri == str(destination)
    assert destination.read_bytes()[4:8] == b"ftyp"  # an MP4
    assert hashlib.sha256(destination.read_bytes()).hexdigest() == digest
    assert sorted(p.name for p in destination.parent.iterdir()) == ["row-1.mp4"]  # no temporary left
    # The pre-signed URL got no DashScope credentials.
    result_requests = logged_requests(emulator, is_result, 2)
    assert result_requests and all(r["key_fingerprint"] is None for r in result_requests)


def test_download_video_to_s3(emo_video_url: str, aws_conn: str, s3_client: Any) -> None:
    from airflow.sdk import ObjectStoragePath

    destination = ObjectStoragePath(f"s3://{BUCKET}/videos/x.mp4", conn_id=aws_conn)
    video_url = emo_video_url
    stored = download_video(video_url, destination)
    size, digest = _sha256(video_url)
    assert (stored.uri, stored.size_bytes, stored.sha256) == (f"s3://{BUCKET}/videos/x.mp4", size, digest)
    body = s3_client.get_object(Bucket=BUCKET, Key="videos/x.mp4")["Body"].read()
    assert (len(body), hashlib.sha256(body).hexdigest()) == (size, digest)
    keys = [o["Key"] for o in s3_client.list_objects_v2(Bucket=BUCKET, Prefix="videos/").get("Contents", [])]
    assert "videos/x.mp4" in keys and not any(k.endswith(".part") for k in keys)


def test_large_video_goes_to_s3_as_a_multipart_upload(aws_conn: str, s3_client: Any, tmp_path: Path) -> None:
    """Past two parts' size the upload is multipart (small parts, bounded memory); the object is whole."""
    from airflow.sdk import ObjectStoragePath
    from dashscope_emulator import serve_directory
    from dashscope_provider.transfers.dashscope_to_object_storage import UPLOAD_PART_SIZE

    served = tmp_path / "served"
    served.mkdir()
    payload = hashlib.sha256(b"seed").digest() * (UPLOAD_PART_SIZE * 5 // 2 // 32 + 7)  # 2.5 parts and a bit
    (served / "big.mp4").write_bytes(payload)
    with serve_directory(served) as base_url:
        destination = ObjectStoragePath(f"s3://{BUCKET}/videos/big.mp4", conn_id=aws_conn)
        stored = download_video(f"{base_url}/big.mp4", destination)
    head = s3_client.head_object(Bucket=BUCKET, Key="videos/big.mp4")
    assert head["ETag"].strip('"').endswith("-3")  # three parts: S3's multipart ETag is <md5>-<parts>
    body = s3_client.get_object(Bucket=BUCKET, Key="videos/big.mp4")["Body"].read()
    assert body == payload
    assert (stored.size_bytes, stored.sha256) == (len(payload), hashlib.sha256(payload).hexdigest())


def test_download_expired_url(emo_video_url: str, emulator: Any, tmp_path: Path) -> None:
    emulator.advance(25 * 3600)  # result URLs live 24 h
    destination = tmp_path / "late.mp4"
    with pytest.raises(DashScopeResultExpired) as info:
        download_video(emo_video_url, str(destination))
    assert info.value.status_code == 403
    assert "Request has expired" in str(info.value)
    assert "Signature=" not in str(info.value)  # the signed query string is left out
    assert list(tmp_path.iterdir()) == []  # nothing, not even a partial file


def test_download_tampered_url_is_not_retried(emo_video_url: str, emulator: Any, tmp_path: Path) -> None:
    with pytest.raises(DashScopeResultExpired):
        download_video(emo_video_url.replace("Signature=", "Signature=x"), str(tmp_path / "v.mp4"))
    assert len(logged_requests(emulator, is_result)) == 1


class _FlakyStorage(QuietHandler):
    """Serves one 1000-byte file: first a 503, then a body cut short, then the whole file."""

    protocol_version = "HTTP/1.1"
    body = bytes(range(256)) * 3 + bytes(232)
    answers: list[str] = []

    def do_GET(self) -> None:
        turn = ("503", "truncated", "ok")[min(len(self.answers), 2)]
        self.answers.append(turn)
        if turn == "503":
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "video/mp4")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body if turn == "ok" else self.body[:500])
        self.close_connection = True


def test_download_retries_5xx_and_truncated_bodies(tmp_path: Path) -> None:
    _FlakyStorage.answers = []
    with serve_http(_FlakyStorage) as base_url:
        stored = download_video(
            f"{base_url}/v.mp4?Expires=1&Signature=abc",
            str(tmp_path / "v.mp4"),
            chunk_size=128,
            retry_policy=RetryPolicy(max_attempts=4, initial_wait=0.05, max_wait=0.5),
        )
    assert _FlakyStorage.answers == ["503", "truncated", "ok"]
    assert (stored.size_bytes, stored.sha256) == (1000, hashlib.sha256(_FlakyStorage.body).hexdigest())
    assert (tmp_path / "v.mp4").read_bytes() == _FlakyStorage.body
    assert [p.name for p in tmp_path.iterdir()] == ["v.mp4"]


# -- the operator -------------------------------------------------------------------------------------


def test_download_operator_local(emoji_video_url: str, tmp_path: Path) -> None:
    video_url = emoji_video_url
    destination = tmp_path / "out" / "emoji.mp4"
    op = DashScopeVideoToObjectStorageOperator(task_id="download", video_url=video_url, destination=str(destination))
    result = op.execute({})  # type: ignore[arg-type]
    assert result == {"uri": str(destination), "size_bytes": _sha256(video_url)[0], "sha256": _sha256(video_url)[1]}
    assert destination.stat().st_size == result["size_bytes"]


def test_download_operator_s3(emoji_video_url: str, aws_conn: str, s3_client: Any) -> None:
    video_url = emoji_video_url
    op = DashScopeVideoToObjectStorageOperator(
        task_id="download", video_url=video_url, destination=f"s3://{BUCKET}/op/emoji.mp4", conn_id=aws_conn
    )
    result = op.execute({})  # type: ignore[arg-type]
    size, digest = _sha256(video_url)
    assert result == {"uri": f"s3://{BUCKET}/op/emoji.mp4", "size_bytes": size, "sha256": digest}
    body = s3_client.get_object(Bucket=BUCKET, Key="op/emoji.mp4")["Body"].read()
    assert hashlib.sha256(body).hexdigest() == digest


def test_download_operator_expired(emoji_video_url: str, emulator: Any, tmp_path: Path) -> None:
    emulator.advance(2 * 86_400)
    op = DashScopeVideoToObjectStorageOperator(
        task_id="download", video_url=emoji_video_url, destination=str(tmp_path / "x.mp4")
    )
    with pytest.raises(DashScopeResultExpired):
        op.execute({})  # type: ignore[arg-type]
    assert not (tmp_path / "x.mp4").exists()


def test_download_operator_needs_no_dashscope_connection(
    emoji_video_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The URL is pre-signed: no DashScope connection is read (there is no dashscope_default here).
    monkeypatch.delenv(f"AIRFLOW_CONN_{CONN_ID.upper()}")
    monkeypatch.delenv("AIRFLOW_CONN_DASHSCOPE_DEFAULT", raising=False)
    calls: list[str] = []
    monkeypatch.setattr(DashScopeHook, "get_connection", classmethod(lambda cls, conn_id: calls.append(conn_id)))
    op = DashScopeVideoToObjectStorageOperator(
        task_id="download", video_url=emoji_video_url, destination=str(tmp_path / "v.mp4")
    )
    assert op.execute({})["size_bytes"] > 0  # type: ignore[arg-type]
    assert calls == []
