"""Fixtures shared by every test: a moto bucket, sample sheets made from sklearn's digits, and
real Lambda event payloads kept as JSON beside the tests."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pytest
from moto import mock_aws

from tessera.config import TILE_BATCH
from tessera.dataset import Row, decode_rows
from tessera.storage import ObjectStore
from tessera.storage.memory import InMemoryObjectStore
from tessera.storage.s3 import S3ObjectStore
from tessera_dev.samples import Glyphs, render_sheet, sklearn_digits

EVENTS = Path(__file__).parent / "events"
BUCKET = "tessera-test"


# Fixtures that put a test against moto: such a test is an integration test.
MOTO_FIXTURES = frozenset({"aws_env", "store", "served", "served_once"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if MOTO_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)


def load_event(name: str) -> dict[str, Any]:
    event: dict[str, Any] = json.loads((EVENTS / name).read_text())
    return event


def sqs_event_for(
    bucket: str, key: str, etag: str = "etag", *, message_id: str = "m1"
) -> dict[str, Any]:
    """The SQS event Lambda delivers for an S3 notification (key url-encoded, as S3 does)."""
    from urllib.parse import quote_plus

    event = copy.deepcopy(load_event("s3_put_via_sqs.json"))
    record = event["Records"][0]
    body = json.loads(record["body"])
    body["Records"][0]["s3"]["bucket"]["name"] = bucket
    body["Records"][0]["s3"]["object"]["key"] = quote_plus(key, safe="/")
    body["Records"][0]["s3"]["object"]["eTag"] = etag
    record["body"] = json.dumps(body)
    record["messageId"] = message_id
    return event


def batch_of(*events: dict[str, Any]) -> dict[str, Any]:
    return {"Records": [record for event in events for record in event["Records"]]}


AWS_TEST_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "TESSERA_BUCKET": BUCKET,
    "POWERTOOLS_LOG_LEVEL": "WARNING",
}


def drop_digit_sheets(runtime: Any, digits: Glyphs, sheets: int = 2) -> None:
    """`sheets` 10x10 sheets of digits, one row per digit (row-labels 0..9), put into a local
    runtime's bucket over the S3 API as a user would, and processed until its queues are idle."""
    s3 = runtime.client("s3")
    for sheet in range(sheets):
        ink = np.concatenate(
            [digits.ink[digits.labels == str(d)][sheet * 10 : sheet * 10 + 10] for d in range(10)]
        )
        s3.put_object(
            Bucket=runtime.bucket,
            Key=f"incoming/train/digits/sheet-{sheet}.png",
            Body=render_sheet(ink, cols=10),
            Metadata={"grid": "10x10", "row-labels": " ".join(str(d) for d in range(10))},
        )
    assert runtime.wait_until_idle(timeout=120)


@contextmanager
def moto_bucket() -> Iterator[S3ObjectStore]:
    """The test environment and an empty bucket on moto, for as long as the block lasts: for
    fixtures wider than one test (module-scoped ones cannot take `monkeypatch`)."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in AWS_TEST_ENV.items():
            patch.setenv(name, value)
        patch.delenv("AWS_ENDPOINT_URL", raising=False)
        with mock_aws():
            boto3.client("s3").create_bucket(Bucket=BUCKET)
            yield S3ObjectStore(bucket=BUCKET)


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in AWS_TEST_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)


@pytest.fixture
def store(aws_env: None) -> Iterator[S3ObjectStore]:
    """The S3 adapter against moto: for tests of the adapter, the handlers and the runtime."""
    with mock_aws():
        boto3.client("s3").create_bucket(Bucket=BUCKET)
        yield S3ObjectStore(bucket=BUCKET)


@pytest.fixture
def memory_store() -> InMemoryObjectStore:
    """The storage port in memory: domain tests need no moto."""
    return InMemoryObjectStore(bucket=BUCKET)


@pytest.fixture(params=["memory", "s3"])
def any_store(request: pytest.FixtureRequest) -> ObjectStore:
    """Both implementations of the storage port, for behaviour that must hold on either."""
    if request.param == "memory":
        return InMemoryObjectStore(bucket=BUCKET)
    store: ObjectStore = request.getfixturevalue("store")
    return store


@pytest.fixture(scope="session")
def digits() -> Glyphs:
    return sklearn_digits()


def digits_sheet(
    digits: Glyphs, label: str, count: int, *, cols: int = 10, offset: int = 0
) -> bytes:
    ink = digits.ink[digits.labels == label][offset : offset + count]
    assert len(ink) == count
    return render_sheet(ink, cols=cols)


def keys_under(store: ObjectStore, prefix: str) -> list[str]:
    return sorted(item.key for item in store.list(prefix))


def tiles_under(store: ObjectStore, prefix: str = "tiles/") -> list[str]:
    """The tile PNGs (not the sheets' tile batches beside them)."""
    return [key for key in keys_under(store, prefix) if key.endswith(".png")]


def tile_batches_under(store: ObjectStore, prefix: str = "tiles/") -> list[str]:
    return [key for key in keys_under(store, prefix) if key.endswith(f"/{TILE_BATCH}")]


def rows_under(store: ObjectStore, prefix: str) -> list[Row]:
    """Every row of every shard under `prefix`, shard by shard."""
    return [
        row
        for key in keys_under(store, prefix)
        for row in decode_rows(store.get(key).body, key=key).as_rows()
    ]


def assert_probabilities(values: list[float]) -> None:
    assert np.isclose(sum(values), 1.0, atol=1e-4)
