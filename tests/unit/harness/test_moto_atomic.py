"""The test S3 server lets exactly one of racing conditional PUTs of a key win, as S3 does
(``tests.harness.moto_atomic``): the ledger's exclusive creates and the submit lease are tested on it."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import pytest
from botocore.exceptions import ClientError
from moto.s3.models import S3Backend

from tests.conftest import S3_BUCKET
from tests.harness.services import s3_client

RACERS = 4


@pytest.fixture
def slow_store(monkeypatch: pytest.MonkeyPatch) -> None:
    """Widen moto's gap between a PUT's existence check and its store, as a preempted thread would."""
    store = S3Backend.put_object

    def slow_put_object(self: Any, *args: Any, **kwargs: Any) -> Any:
        time.sleep(0.05)
        return store(self, *args, **kwargs)

    monkeypatch.setattr(S3Backend, "put_object", slow_put_object)


def _race_conditional_puts(client: Any, key: str) -> list[str]:
    start, answers = threading.Barrier(RACERS), []

    def put(n: int) -> None:
        start.wait()
        try:
            client.put_object(Bucket=S3_BUCKET, Key=key, Body=f"racer-{n}".encode(), IfNoneMatch="*")
            answers.append("created")
        except ClientError as error:
            answers.append(error.response["Error"]["Code"])

    threads = [threading.Thread(target=put, args=(n,)) for n in range(RACERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return sorted(answers)


def test_racing_conditional_puts_of_one_key_have_one_winner(moto_s3: str, slow_store: None) -> None:
    answers = _race_conditional_puts(s3_client(moto_s3), f"race/{uuid.uuid4().hex}")
    assert answers == ["PreconditionFailed"] * (RACERS - 1) + ["created"]
