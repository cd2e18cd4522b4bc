"""``oss://`` through Airflow's ObjectStoragePath (``dashscope_provider.fs.oss``), against a strict OSS double.

The double (``tests.harness.oss_double``) checks every request's V1/V4 signature and every presigned URL's
signature and expiry, so a wrong secret or a tampered URL fails here as it would against Alibaba Cloud.
Connections come from ``AIRFLOW_CONN_<ID>`` JSON, as users set them; each test gets its own connection id,
since Airflow caches one store per (protocol, conn_id) for the process. The same round trip runs against S3
(moto in server mode) to show ``oss://`` behaves as ``s3://`` does.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pytest
import requests

from tests.harness.oss_double import MIN_PART_SIZE, OSSDouble

ACCESS_KEY_ID = "LTAI5tOssDoubleTestKey"
ACCESS_KEY_SECRET = "oss-double-test-secret-0123456789"
REGION = "cn-hangzhou"
OSS_BUCKET = "talking-heads-oss"
PART_SIZE = MIN_PART_SIZE  # 100 KiB, OSS's smallest part: small uploads become multipart in tests


@pytest.fixture
def oss_double() -> Iterator[OSSDouble]:
    """A fresh OSS double on a free port of 127.0.0.1, with one bucket."""
    with OSSDouble({ACCESS_KEY_ID: ACCESS_KEY_SECRET}, buckets=[OSS_BUCKET], region=REGION) as double:
        yield double


@pytest.fixture
def make_oss_conn(oss_double: OSSDouble, monkeypatch: pytest.MonkeyPatch) -> Callable[..., str]:
    """Set up a new connection in the environment (``AIRFLOW_CONN_<ID>``) to the double; returns its id.

    By default the Alibaba provider's ``oss`` type with its extras; ``conn_type="generic"`` gives a
    login/password connection. Keyword arguments override extras (``None`` removes one).
    """

    def make(conn_type: str = "oss", **overrides: Any) -> str:
        conn_id = f"oss_{uuid.uuid4().hex[:10]}"
        if conn_type == "oss":
            conn: dict[str, Any] = {
                "conn_type": "oss",
                "extra": {
                    "auth_type": "AK",
                    "access_key_id": ACCESS_KEY_ID,
                    "access_key_secret": ACCESS_KEY_SECRET,
                    "region": REGION,
                    "endpoint": oss_double.endpoint,
                },
            }
        else:
            conn = {
                "conn_type": conn_type,
                "login": overrides.pop("login", ACCESS_KEY_ID),
                "password": overrides.pop("password", ACCESS_KEY_SECRET),
                "extra": {"endpoint": oss_double.endpoint},
            }
        conn["extra"].update(overrides)
        conn["extra"] = {k: v for k, v in conn["extra"].items() if v is not None}
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(conn))
        return conn_id

    return make


@dataclass
class Store:
    name: str
    bucket: str
    conn_id: str
    stored: Callable[[str], bytes | None]  # the bytes the server holds under a key, read past the client

    def root(self) -> Any:
        from airflow.sdk import ObjectStoragePath

        scheme = "s3" if self.name == "s3" else "oss"
        return ObjectStoragePath(f"{scheme}://{self.bucket}/roundtrip-{uuid.uuid4().hex[:8]}/", conn_id=self.conn_id)


@pytest.fixture(params=["oss-v4", "oss-v1", "s3"])
def store(request: pytest.FixtureRequest) -> Store:
    """The stores the round trip runs on: OSS with V4 signatures, OSS with V1 signatures, S3 (moto)."""
    if request.param == "s3":
        from tests.conftest import S3_BUCKET

        conn_id = request.getfixturevalue("aws_conn")
        client = request.getfixturevalue("s3_client")

        def stored_s3(key: str) -> bytes | None:
            try:
                return client.get_object(Bucket=S3_BUCKET, Key=key)["Body"].read()
            except client.exceptions.NoSuchKey:
                return None

        return Store("s3", S3_BUCKET, conn_id, stored_s3)
    double: OSSDouble = request.getfixturevalue("oss_double")
    version = request.param.split("-")[1]
    conn_id = request.getfixturevalue("make_oss_conn")(signature_version=version, part_size=PART_SIZE)

    def stored_oss(key: str) -> bytes | None:
        obj = double.get(OSS_BUCKET, key)
        return None if obj is None else obj.data

    return Store(request.param, OSS_BUCKET, conn_id, stored_oss)


def _payload(size: int) -> bytes:
    return os.urandom(size)


def test_round_trip(store: Store) -> None:
    """Write, read (whole, streamed, ranged), list, exists, stat and delete through ObjectStoragePath."""
    root = store.root()
    video = root / "videos" / "row-1.mp4"
    data = _payload(250_000)  # more than PART_SIZE: a multipart upload on OSS

    assert not video.exists()
    video.write_bytes(data)
    (root / "outcomes" / "run-1.csv").write_text("row_id,status\nrow-1,succeeded\n")

    assert store.stored(video.path.lstrip("/").split("/", 1)[1]) == data  # what the server holds
    assert video.exists()
    assert (root / "videos").exists()
    assert video.is_file()
    assert (root / "videos").is_dir()
    assert video.read_bytes() == data
    with video.open("rb") as handle:
        assert handle.read(10) == data[:10]
        handle.seek(100_000)
        assert handle.read(7) == data[100_000:100_007]
        assert handle.read() == data[100_007:]
    assert video.stat().st_size == len(data)
    assert video.stat().st_mtime > 0
    assert sorted(p.name for p in root.iterdir()) == ["outcomes", "videos"]
    assert [p.name for p in (root / "videos").iterdir()] == ["row-1.mp4"]
    assert (root / "outcomes" / "run-1.csv").read_text().splitlines()[1] == "row-1,succeeded"

    video.unlink()
    assert not video.exists()
    assert not (root / "videos").exists()
    assert [p.name for p in root.iterdir()] == ["outcomes"]


def test_oss_paths_use_this_provider_filesystem_with_v4_by_default(
    make_oss_conn: Callable[..., str], oss_double: OSSDouble
) -> None:
    from airflow.sdk import ObjectStoragePath
    from dashscope_provider.fs.oss import AirflowOSSFileSystem

    from tests.harness.airflow_compat import ProvidersManagerTaskRuntime

    assert "dashscope_provider.fs.oss" in ProvidersManagerTaskRuntime().filesystem_module_names
    path = ObjectStoragePath(f"oss://{OSS_BUCKET}/a.txt", conn_id=make_oss_conn())
    assert isinstance(path.fs, AirflowOSSFileSystem)
    assert path.fs.signature_version == "v4"
    path.write_text("x")
    assert {r.auth for r in oss_double.requests()} == {"v4"}


def test_generic_connection_with_login_and_password(make_oss_conn: Callable[..., str], oss_double: OSSDouble) -> None:
    """login = AccessKey ID, password = secret, extra ``endpoint``; V1 without a region, V4 with one."""
    from airflow.sdk import ObjectStoragePath

    for region, expected in ((None, "v1"), (REGION, "v4")):
        oss_double.clear_log()
        path = ObjectStoragePath(f"oss://{OSS_BUCKET}/generic.txt", conn_id=make_oss_conn("generic", region=region))
        path.write_text("generic")
        assert path.read_text() == "generic"
        assert {r.auth for r in oss_double.requests()} == {expected}


def test_no_connection_reads_the_oss_environment(oss_double: OSSDouble, monkeypatch: pytest.MonkeyPatch) -> None:
    from dashscope_provider.fs.oss import AirflowOSSFileSystem, get_fs

    monkeypatch.setenv("OSS_ACCESS_KEY_ID", ACCESS_KEY_ID)
    monkeypatch.setenv("OSS_ACCESS_KEY_SECRET", ACCESS_KEY_SECRET)
    monkeypatch.setenv("OSS_ENDPOINT", oss_double.endpoint)
    monkeypatch.setenv("OSS_REGION", REGION)
    fs = get_fs(None)
    assert (fs.region, fs.signature_version) == (REGION, "v4")
    fs.pipe_file(f"{OSS_BUCKET}/env.txt", b"from the environment")
    assert fs.cat_file(f"{OSS_BUCKET}/env.txt") == b"from the environment"
    # Constructed with no arguments, as fsspec's registry would: the same settings.
    assert AirflowOSSFileSystem(skip_instance_cache=True).cat_file(f"{OSS_BUCKET}/env.txt") == b"from the environment"


def test_streamed_write_is_a_multipart_upload(make_oss_conn: Callable[..., str], oss_double: OSSDouble) -> None:
    """open("wb") sends parts of part_size and completes on close: never AppendObject, never a partial object."""
    from airflow.sdk import ObjectStoragePath

    path = ObjectStoragePath(f"oss://{OSS_BUCKET}/videos/streamed.mp4", conn_id=make_oss_conn(part_size=PART_SIZE))
    data = _payload(3 * PART_SIZE + 12_345)
    with path.open("wb") as handle:
        for offset in range(0, len(data), 64 * 1024):
            handle.write(data[offset : offset + 64 * 1024])
            assert oss_double.get(OSS_BUCKET, "videos/streamed.mp4") is None  # nothing visible until close

    stored = oss_double.get(OSS_BUCKET, "videos/streamed.mp4")
    assert stored is not None and stored.data == data
    assert stored.object_type == "Multipart" and stored.etag.endswith("-4")
    writes = [(r.method, sorted(r.params)) for r in oss_double.requests() if r.method in ("PUT", "POST")]
    assert writes == [
        ("POST", ["uploads"]),
        ("PUT", ["partNumber", "uploadId"]),
        ("PUT", ["partNumber", "uploadId"]),
        ("PUT", ["partNumber", "uploadId"]),
        ("PUT", ["partNumber", "uploadId"]),
        ("POST", ["uploadId"]),
    ]
    assert oss_double.uploads() == []


def test_small_write_is_one_put(make_oss_conn: Callable[..., str], oss_double: OSSDouble) -> None:
    from airflow.sdk import ObjectStoragePath

    path = ObjectStoragePath(f"oss://{OSS_BUCKET}/state/row-1.json", conn_id=make_oss_conn())
    path.write_text('{"status": "succeeded"}')
    stored = oss_double.get(OSS_BUCKET, "state/row-1.json")
    assert stored is not None and stored.object_type == "Normal"
    assert [(r.method, r.params) for r in oss_double.requests() if r.method in ("PUT", "POST")] == [("PUT", {})]


def test_put_file_larger_than_the_part_size_goes_in_parts(
    make_oss_conn: Callable[..., str], oss_double: OSSDouble, tmp_path: Any
) -> None:
    """How the DashScope transfer stores a video: ``fs.put_file`` from a local file, in parts above the threshold."""
    from airflow.sdk import ObjectStoragePath

    path = ObjectStoragePath(
        f"oss://{OSS_BUCKET}/videos/big.mp4",
        conn_id=make_oss_conn(part_size=PART_SIZE, multipart_threshold=2 * PART_SIZE),
    )
    local = tmp_path / "big.mp4"
    data = _payload(5 * PART_SIZE + 1)
    local.write_bytes(data)
    path.fs.put_file(str(local), path.path, chunksize=8 * 1024 * 1024, max_concurrency=2)  # S3-only options: ignored

    stored = oss_double.get(OSS_BUCKET, "videos/big.mp4")
    assert stored is not None and stored.data == data and stored.etag.endswith("-6")
    parts = [r for r in oss_double.requests() if r.method == "PUT" and "partNumber" in r.params]
    assert [int(r.params["partNumber"]) for r in parts] == [1, 2, 3, 4, 5, 6]
    assert path.fs.size(path.path) == len(data)

    small = tmp_path / "small.bin"
    small.write_bytes(b"s" * 1000)
    oss_double.clear_log()
    path.fs.put_file(str(small), f"{OSS_BUCKET}/small.bin")
    assert [(r.method, r.params) for r in oss_double.requests()] == [("PUT", {})]


def test_failed_write_publishes_nothing_and_aborts(make_oss_conn: Callable[..., str], oss_double: OSSDouble) -> None:
    from airflow.sdk import ObjectStoragePath

    oss_double.put(OSS_BUCKET, "videos/keep.mp4", b"the previous version")
    path = ObjectStoragePath(f"oss://{OSS_BUCKET}/videos/keep.mp4", conn_id=make_oss_conn(part_size=PART_SIZE))
    with pytest.raises(RuntimeError, match="download broke"), path.open("wb") as handle:
        handle.write(_payload(2 * PART_SIZE + 5))  # two parts already uploaded
        raise RuntimeError("download broke")

    assert oss_double.get(OSS_BUCKET, "videos/keep.mp4").data == b"the previous version"
    assert oss_double.uploads() == []
    assert any(r.method == "DELETE" and "uploadId" in r.params for r in oss_double.requests())


def test_exclusive_create_does_not_overwrite(make_oss_conn: Callable[..., str], oss_double: OSSDouble) -> None:
    """``open("xb")`` sends ``x-oss-forbid-overwrite: true``: small (PutObject) and multipart alike."""
    from airflow.sdk import ObjectStoragePath

    conn_id = make_oss_conn(part_size=PART_SIZE)
    path = ObjectStoragePath(f"oss://{OSS_BUCKET}/videos/once.mp4", conn_id=conn_id)
    with path.open("xb") as handle:
        handle.write(b"first")
    for size in (10, 2 * PART_SIZE + 1):
        with pytest.raises(FileExistsError, match="FileAlreadyExists"), path.open("xb") as handle:
            handle.write(b"x" * size)
    assert oss_double.get(OSS_BUCKET, "videos/once.mp4").data == b"first"
    assert oss_double.uploads() == []


def test_ranged_reads_return_exactly_the_requested_bytes(
    make_oss_conn: Callable[..., str], oss_double: OSSDouble
) -> None:
    """fsspec ranges are end-exclusive, oss2's inclusive: ossfs 2025.5 returns one byte too many."""
    from airflow.sdk import ObjectStoragePath

    data = bytes(range(256)) * 4
    oss_double.put(OSS_BUCKET, "range.bin", data)
    path = ObjectStoragePath(f"oss://{OSS_BUCKET}/range.bin", conn_id=make_oss_conn())
    fs = path.fs
    assert fs.cat_file(path.path, 2, 5) == data[2:5]
    assert fs.cat_file(path.path, 1000) == data[1000:]
    assert fs.cat_file(path.path, -10) == data[-10:]
    assert fs.cat_file(path.path, 2000, 3000) == b""
    with fs.open(path.path, "rb", cache_type="none") as handle:
        assert handle.read(3) == data[:3]
        assert handle.read(5) == data[3:8]


def _tamper(url: str, param: str) -> str:
    """The URL with one character of query parameter ``param`` changed."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    changed = []
    for name, value in query:
        if name == param:
            value = ("b" if value[0] != "b" else "c") + value[1:]
        changed.append((name, value))
    return urlunsplit(parts._replace(query=urlencode(changed)))


@pytest.mark.parametrize(("version", "signature_param"), [("v4", "x-oss-signature"), ("v1", "Signature")])
def test_presigned_url(
    version: str, signature_param: str, make_oss_conn: Callable[..., str], oss_double: OSSDouble
) -> None:
    """``fs.sign`` gives a URL anyone can GET; a changed signature or an expired URL gets 403."""
    from airflow.sdk import ObjectStoragePath

    oss_double.put(OSS_BUCKET, "media/portrait 1.png", b"\x89PNG portrait", content_type="image/png")
    path = ObjectStoragePath(
        f"oss://{OSS_BUCKET}/media/portrait 1.png", conn_id=make_oss_conn(signature_version=version)
    )
    url = path.fs.sign(path.path, expiration=600)
    assert url.startswith(f"{oss_double.endpoint}/{OSS_BUCKET}/media/portrait%201.png?")
    assert signature_param in dict(parse_qsl(urlsplit(url).query))
    assert path.sign(expiration=600).startswith(oss_double.endpoint)  # ObjectStoragePath.sign: the same

    answer = requests.get(url, timeout=10)
    assert answer.status_code == 200
    assert answer.content == b"\x89PNG portrait"
    assert answer.headers["Content-Type"] == "image/png"

    tampered = requests.get(_tamper(url, signature_param), timeout=10)
    assert tampered.status_code == 403
    assert "<Code>SignatureDoesNotMatch</Code>" in tampered.text

    other_key = url.replace("portrait%201.png", "portrait%202.png")
    assert requests.get(other_key, timeout=10).status_code == 403

    oss_double.advance(601)
    expired = requests.get(url, timeout=10)
    assert expired.status_code == 403
    assert "<Code>AccessDenied</Code>" in expired.text and "Request has expired" in expired.text


def test_v4_presigned_url_is_limited_to_seven_days(make_oss_conn: Callable[..., str]) -> None:
    from airflow.sdk import ObjectStoragePath

    path = ObjectStoragePath(f"oss://{OSS_BUCKET}/a.png", conn_id=make_oss_conn())
    with pytest.raises(ValueError, match="7 days"):
        path.fs.sign(path.path, expiration=8 * 24 * 3600)


@pytest.mark.parametrize("version", ["v4", "v1"])
def test_wrong_secret_fails_clearly(version: str, make_oss_conn: Callable[..., str], oss_double: OSSDouble) -> None:
    """A wrong secret: PermissionError naming SignatureDoesNotMatch and the connection; never ``exists() == False``."""
    from airflow.sdk import ObjectStoragePath

    oss_double.put(OSS_BUCKET, "outcomes/run-1.csv", b"row_id\n")
    conn_id = make_oss_conn(access_key_secret="not-the-secret", signature_version=version)
    root = ObjectStoragePath(f"oss://{OSS_BUCKET}/outcomes/", conn_id=conn_id)

    with pytest.raises(PermissionError, match="SignatureDoesNotMatch") as raised:
        (root / "run-1.csv").exists()
    assert conn_id in str(raised.value)
    assert "not-the-secret" not in str(raised.value)
    with pytest.raises(PermissionError, match="SignatureDoesNotMatch"):
        (root / "run-1.csv").read_bytes()
    with pytest.raises(PermissionError, match="SignatureDoesNotMatch"):
        (root / "run-2.csv").write_bytes(b"row_id\n")
    with pytest.raises(PermissionError, match="SignatureDoesNotMatch"):
        list(root.iterdir())

    assert oss_double.keys(OSS_BUCKET) == ["outcomes/run-1.csv"]
    refused = oss_double.requests()
    assert refused and all(r.status == 403 and r.code == "SignatureDoesNotMatch" for r in refused)
    assert {r.auth for r in refused} == {version}


def test_unknown_access_key_id_fails_clearly(make_oss_conn: Callable[..., str]) -> None:
    from airflow.sdk import ObjectStoragePath

    path = ObjectStoragePath(f"oss://{OSS_BUCKET}/a.txt", conn_id=make_oss_conn(access_key_id="LTAI-nobody"))
    with pytest.raises(PermissionError, match="InvalidAccessKeyId"):
        path.write_text("x")


def test_connection_errors_are_explained(monkeypatch: pytest.MonkeyPatch) -> None:
    from dashscope_provider.fs.oss import get_fs

    def conn(conn_id: str, **connection: Any) -> str:
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(connection))
        return conn_id

    with pytest.raises(ValueError, match="auth_type 'ECS_RAM_ROLE' is not supported"):
        get_fs(conn("oss_ram", conn_type="oss", extra={"auth_type": "ECS_RAM_ROLE", "region": REGION}))
    with pytest.raises(ValueError, match="AccessKey ID but no secret"):
        get_fs(conn("oss_half", conn_type="oss", extra={"access_key_id": "LTAI", "region": REGION}))
    with pytest.raises(ValueError, match="needs an 'endpoint' or a 'region'"):
        get_fs(conn("oss_nowhere", conn_type="generic", login="LTAI", password="s"))
    with pytest.raises(ValueError, match="V4 signatures need the bucket's region"):
        get_fs(
            conn("oss_v4", conn_type="generic", login="LTAI", password="s", extra={"endpoint": "http://10.0.0.1"}),
            {"signature_version": "v4"},
        )


def test_endpoint_and_region_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    """The region gives the public endpoint; an aliyuncs.com endpoint gives the region (so V4 signatures)."""
    from dashscope_provider.fs.oss import get_fs

    monkeypatch.setenv(
        "AIRFLOW_CONN_OSS_REGION_ONLY",
        json.dumps(
            {
                "conn_type": "oss",
                "extra": {
                    "auth_type": "AK",
                    "access_key_id": "LTAI",
                    "access_key_secret": "s",
                    "region": "oss-ap-southeast-1",  # the "oss-" spelling of a region id is accepted too
                },
            }
        ),
    )
    fs = get_fs("oss_region_only")
    assert fs._endpoint == "https://oss-ap-southeast-1.aliyuncs.com"
    assert (fs.region, fs.signature_version) == ("ap-southeast-1", "v4")

    monkeypatch.setenv(
        "AIRFLOW_CONN_OSS_ENDPOINT_ONLY",
        json.dumps(
            {
                "conn_type": "generic",
                "login": "LTAI",
                "password": "s",
                "extra": {"endpoint": "oss-cn-beijing-internal.aliyuncs.com"},
            }
        ),
    )
    fs = get_fs("oss_endpoint_only")
    assert fs._endpoint == "https://oss-cn-beijing-internal.aliyuncs.com"
    assert (fs.region, fs.signature_version) == ("cn-beijing", "v4")
    url = fs.sign("my-bucket/videos/a.mp4", expiration=60)
    assert url.startswith("https://my-bucket.oss-cn-beijing-internal.aliyuncs.com/videos/a.mp4?")


def test_double_serves_virtual_hosted_requests(oss_double: OSSDouble) -> None:
    """``bucket.<endpoint host>`` addressing, as real OSS: signed by oss2 for a host name, sent to 127.0.0.1."""
    from dashscope_provider.fs.oss import AirflowOSSFileSystem

    oss_double.put(OSS_BUCKET, "v/h.txt", b"virtual")
    fs = AirflowOSSFileSystem(
        endpoint=f"http://{oss_double.service_host}:{oss_double.port}",
        key=ACCESS_KEY_ID,
        secret=ACCESS_KEY_SECRET,
        region=REGION,
        skip_instance_cache=True,
    )
    url = fs.sign(f"{OSS_BUCKET}/v/h.txt", expiration=60)
    parts = urlsplit(url)
    assert parts.hostname == f"{OSS_BUCKET}.{oss_double.service_host}" and parts.path == "/v/h.txt"
    local = urlunsplit(parts._replace(netloc=f"127.0.0.1:{oss_double.port}"))
    answer = requests.get(local, headers={"Host": parts.netloc}, timeout=10)
    assert (answer.status_code, answer.content) == (200, b"virtual")
    missing_bucket = f"missing.{oss_double.service_host}:{oss_double.port}"
    assert requests.get(local, headers={"Host": missing_bucket}, timeout=10).status_code == 404  # NoSuchBucket
    oss_double.create_bucket("other")
    other_bucket = requests.get(
        local, headers={"Host": f"other.{oss_double.service_host}:{oss_double.port}"}, timeout=10
    )
    assert other_bucket.status_code == 403 and "SignatureDoesNotMatch" in other_bucket.text  # the bucket is signed


def test_double_refuses_small_parts_and_unsigned_requests(oss_double: OSSDouble) -> None:
    """The double's own checks: EntityTooSmall for a small non-last part, AccessDenied without a signature."""
    import oss2

    bucket = oss2.Bucket(oss2.AuthV4(ACCESS_KEY_ID, ACCESS_KEY_SECRET), oss_double.endpoint, OSS_BUCKET, region=REGION)
    upload_id = bucket.init_multipart_upload("small-parts.bin").upload_id
    parts = [
        oss2.models.PartInfo(n, bucket.upload_part("small-parts.bin", upload_id, n, b"p" * 1000).etag) for n in (1, 2)
    ]
    with pytest.raises(oss2.exceptions.ServerError) as raised:
        bucket.complete_multipart_upload("small-parts.bin", upload_id, parts)
    assert (raised.value.status, raised.value.code) == (400, "EntityTooSmall")

    answer = requests.get(f"{oss_double.endpoint}/{OSS_BUCKET}/small-parts.bin", timeout=10)
    assert answer.status_code == 403 and "<Code>AccessDenied</Code>" in answer.text


def test_oss_path_has_its_bucket_as_netloc() -> None:
    """Importing the provider makes this filesystem fsspec's ``oss`` class, whose paths are ``bucket/key``
    (ossfs's keep a leading slash: ObjectStoragePath would see no bucket and print ``oss:///b/k``)."""
    import dashscope_provider  # noqa: F401
    from airflow.sdk import ObjectStoragePath

    path = ObjectStoragePath(f"oss://{OSS_BUCKET}/videos/a.mp4")
    assert (path.bucket, path.key, path.path) == (OSS_BUCKET, "videos/a.mp4", f"{OSS_BUCKET}/videos/a.mp4")


def test_registered_implementation_serves_paths_without_a_connection(oss_double: OSSDouble) -> None:
    """After ``register_fsspec_implementation()``, a path without conn_id has its bucket and the OSS_* settings.

    In a fresh interpreter: the registration changes process-wide state (fsspec's registry, upath's caches).
    """
    script = textwrap.dedent(
        f"""
        from dashscope_provider.fs.oss import register_fsspec_implementation

        register_fsspec_implementation()
        from airflow.sdk import ObjectStoragePath

        path = ObjectStoragePath("oss://{OSS_BUCKET}/videos/a.mp4")
        assert (path.bucket, path.key) == ("{OSS_BUCKET}", "videos/a.mp4"), (path.bucket, path.key)
        assert str(path) == "oss://{OSS_BUCKET}/videos/a.mp4", str(path)
        assert not path.exists()
        path.write_bytes(b"no connection")
        assert path.exists() and path.read_bytes() == b"no connection"
        assert [str(p) for p in path.parent.iterdir()] == ["oss://{OSS_BUCKET}/videos/a.mp4"]
        """
    )
    env = {
        **os.environ,
        "OSS_ACCESS_KEY_ID": ACCESS_KEY_ID,
        "OSS_ACCESS_KEY_SECRET": ACCESS_KEY_SECRET,
        "OSS_ENDPOINT": oss_double.endpoint,
        "OSS_REGION": REGION,
        "PYTHONWARNINGS": "ignore",
    }
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert oss_double.get(OSS_BUCKET, "videos/a.mp4").data == b"no connection"
    assert {r.auth for r in oss_double.requests()} == {"v4"}
