"""Media from any store: presigned store URLs, local files uploaded once, no signature in any text."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pandas as pd
import pytest
import requests
from talking_heads.row.media import (
    MediaSigner,
    kind_of,
    local_media_problem,
    private_address_problem,
    redact,
    resolve_relative,
    service_is_public,
)
from talking_heads.storage import OutputLayout, as_storage_path
from talking_heads.table.validation import RowRequest

from tests.unit.conftest import BUCKET

EMOJI = {"row_id": "r", "model": "emoji-v1", "driven_id": "mengwa_kaixin"}


def _request(image_url: str) -> RowRequest:
    return RowRequest(image_url=image_url, **EMOJI)


def test_kinds() -> None:
    assert [kind_of(u) for u in ("https://h/p.png", "/data/p.png", "file:///data/p.png", "s3://b/p.png")] == [
        "http",
        "local",
        "local",
        "store",
    ]


def test_relative_paths_are_relative_to_the_table() -> None:
    frame = pd.DataFrame(
        {
            "image_url": ["portraits/ada.png", "https://h/p.png", "/abs/p.png", "s3://b/p.png", None],
            "audio_url": ["./voice.wav", None, "javascript:x", "12345", "oss://b/v.wav"],
        }
    )
    local = resolve_relative(frame, "/data/tables/t.csv")
    assert local["image_url"].tolist()[:4] == ["/data/tables/portraits/ada.png", *frame["image_url"].tolist()[1:4]]
    assert local["audio_url"].tolist()[0] == "/data/tables/./voice.wav"
    assert local["audio_url"].tolist()[2:] == ["javascript:x", "/data/tables/12345", "oss://b/v.wav"]
    stored = resolve_relative(frame, "s3://bucket/tables/t.csv")
    assert stored["image_url"][0] == "s3://bucket/tables/portraits/ada.png"


def test_local_files_need_an_object_store_output_root(tmp_path: Path) -> None:
    request = _request(str(tmp_path / "p.png"))
    problem = local_media_problem(request, as_storage_path(str(tmp_path)))
    assert problem is not None and problem.startswith("field 'image_url'") and "object store" in problem
    assert local_media_problem(request, as_storage_path("s3://bucket/out")) is None
    assert local_media_problem(_request("https://h/p.png"), as_storage_path(str(tmp_path))) is None


def test_private_addresses_are_refused_for_the_real_service() -> None:
    assert service_is_public("https://dashscope.aliyuncs.com")
    assert service_is_public("https://ws-1.cn-beijing.maas.aliyuncs.com")
    assert not service_is_public("http://127.0.0.1:8000")
    for url in ("http://127.0.0.1:8766/p.png", "http://10.1.2.3/p.png", "http://169.254.169.254/latest/meta-data"):
        problem = private_address_problem(_request(url))
        assert problem is not None and problem.startswith("field 'image_url'"), url
    assert "link-local" in (private_address_problem(_request("http://169.254.169.254/x")) or "")
    assert private_address_problem(_request("https://8.8.8.8/p.png")) is None
    assert private_address_problem(_request("s3://bucket/p.png")) is None  # presigned by its store


def test_redact_takes_every_signature_out() -> None:
    text = "InvalidURL: https://b.s3.amazonaws.com/p.png?X-Amz-Signature=abc&X-Amz-Credential=k and http://h/x?s=1"
    assert redact(text) == "InvalidURL: https://b.s3.amazonaws.com/p.png?<redacted> and http://h/x?<redacted>"


def test_store_urls_are_presigned_and_local_files_uploaded_once(aws_conn: str, s3_client: Any, tmp_path: Path) -> None:
    s3_client.put_object(Bucket=BUCKET, Key="portraits/p.png", Body=b"portrait bytes")
    signer = MediaSigner(OutputLayout(f"s3://{BUCKET}/{tmp_path.name}", aws_conn), aws_conn, ttl=600)

    before = time.time()
    signed = signer.url_for(f"s3://{BUCKET}/portraits/p.png")
    query = parse_qs(urlsplit(signed).query)
    assert signed.startswith("http") and "Signature" in query
    assert int(before) + 600 <= int(query["Expires"][0]) <= time.time() + 601  # valid for the ttl asked
    assert requests.get(signed, timeout=10).content == b"portrait bytes"  # the service can fetch it

    clip = tmp_path / "voice.wav"
    clip.write_bytes(b"RIFF clip")
    first = signer.url_for(str(clip))
    assert requests.get(first, timeout=10).content == b"RIFF clip"

    def uploaded() -> list[str]:
        return [
            o["Key"] for o in s3_client.list_objects_v2(Bucket=BUCKET, Prefix=f"{tmp_path.name}/inputs/")["Contents"]
        ]

    keys = uploaded()
    assert len(keys) == 1 and keys[0].endswith(".wav")
    copy = tmp_path / "same-bytes.wav"
    copy.write_bytes(b"RIFF clip")
    signer.url_for(f"file://{copy}")
    assert uploaded() == keys
    assert signer.identity(str(clip)) == signer.identity(str(copy))  # the same image is detected once


@pytest.mark.parametrize("location", ["s3://no-such-bucket/p.png"])
def test_presigning_does_not_fetch(aws_conn: str, location: str, tmp_path: Path) -> None:
    # Presigning is local: a missing object is found by the pre-flight check or the service, not here.
    signer = MediaSigner(OutputLayout(f"s3://{BUCKET}/{tmp_path.name}", aws_conn), aws_conn)
    assert "no-such-bucket" in signer.url_for(location)
