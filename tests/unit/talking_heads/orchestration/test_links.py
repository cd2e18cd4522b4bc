"""The extra links of talking_heads' steps (talking_heads.orchestration.links): each link's URL for what its
step returned, under a local output root (a ``file://`` path) and on S3 (moto: a presigned URL that serves
the object without credentials, valid for the links' TTL).

Airflow builds a link in the worker from the step's XCom ``return_value``, read through the task runner's
supervisor; no supervisor runs here, so ``XCom.get_value`` answers what the step returned (the serialized
links themselves are checked in ``tests/unit/dags/test_extra_links.py``, and opened in
``tests/integration/test_links_and_summary.py``)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from airflow.sdk.bases.operator import BaseOperator
from talking_heads.orchestration import links
from talking_heads.orchestration.links import (
    LINK_TTL_SECONDS,
    CostReportLink,
    OutcomeTableLink,
    StoredVideoLink,
    browsable_url,
)

from tests.unit.conftest import BUCKET

LINKS = [(StoredVideoLink, "uri"), (OutcomeTableLink, "outcomes"), (CostReportLink, "report")]


class _Step(BaseOperator):
    """A step of the DAG as its link sees it: an operator with (or without) a storage connection."""

    def __init__(self, storage_conn_id: str | None = None, **kwargs: Any) -> None:
        super().__init__(task_id="step", **kwargs)
        self.storage_conn_id = storage_conn_id


@pytest.fixture
def returned(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """What the step returned (its XCom ``return_value``), as the links read it."""
    value: dict[str, Any] = {}

    def get_value(*, ti_key: Any, key: str) -> Any:
        assert key == "return_value"
        return value

    monkeypatch.setattr(links.XCom, "get_value", get_value)
    return value


@pytest.mark.parametrize(("link", "field"), LINKS)
def test_each_link_opens_the_local_file_its_step_returned(
    link: type[links._ReturnedUriLink], field: str, returned: dict[str, Any], tmp_path: Path
) -> None:
    returned[field] = f"file://{tmp_path}/thing"
    assert link().get_link(_Step(), ti_key=None) == f"file://{tmp_path}/thing"  # type: ignore[arg-type]
    returned[field] = str(tmp_path / "plain path")
    assert link().get_link(_Step(), ti_key=None) == f"file://{tmp_path}/plain path"  # type: ignore[arg-type]


@pytest.mark.parametrize(("link", "field"), LINKS)
def test_each_link_presigns_its_object_on_s3(
    link: type[links._ReturnedUriLink],
    field: str,
    returned: dict[str, Any],
    aws_conn: str,
    s3_client: Any,
    tmp_path: Path,
) -> None:
    key = f"{tmp_path.name}/{field}/object"
    s3_client.put_object(Bucket=BUCKET, Key=key, Body=field.encode())
    returned[field] = f"s3://{BUCKET}/{key}"
    before = time.time()
    url = link().get_link(_Step(storage_conn_id=aws_conn), ti_key=None)  # type: ignore[arg-type]
    assert url.startswith("http") and key in url
    query = parse_qs(urlsplit(url).query)
    expires = int(query["Expires"][0]) if "Expires" in query else before + int(query["X-Amz-Expires"][0])
    assert int(before) + LINK_TTL_SECONDS <= expires <= time.time() + LINK_TTL_SECONDS + 1
    assert requests.get(url, timeout=10).content == field.encode()  # no credentials needed


@pytest.mark.parametrize(("link", "field"), LINKS)
def test_a_step_that_returned_nothing_has_no_link(
    link: type[links._ReturnedUriLink], field: str, returned: dict[str, Any]
) -> None:
    assert link().get_link(_Step(), ti_key=None) == ""  # type: ignore[arg-type]
    returned.update({other: "file:///x" for _, other in LINKS if other != field})
    assert link().get_link(_Step(), ti_key=None) == ""  # type: ignore[arg-type]


def test_the_links_have_distinct_names() -> None:
    names = [link.name for link, _ in LINKS]
    assert len(set(names)) == len(names) and all(names)


def test_a_store_that_cannot_presign_links_the_plain_uri(tmp_path: Path) -> None:
    assert browsable_url("memory://bucket/videos/r.mp4") == "memory://bucket/videos/r.mp4"
    assert browsable_url(str(tmp_path / "v.mp4")) == f"file://{tmp_path}/v.mp4"
