"""The pipeline bucket behind a small interface, and the quarantine every bad object goes to.

boto3 reads `AWS_ENDPOINT_URL` itself, so the same code talks to AWS or to the local moto server.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, unquote

import botocore.session
from botocore.config import Config
from botocore.exceptions import ClientError

from tessera.config import PIPELINE
from tessera.errors import InvalidInput

_clients: dict[str, Any] = {}
_clients_lock = threading.Lock()


def s3_client() -> Any:
    """One S3 client per process and endpoint (clients are thread-safe and cost milliseconds
    to create; keying by endpoint keeps a client from outliving the local server it served)."""
    endpoint = os.environ.get("AWS_ENDPOINT_URL", "")
    with _clients_lock:
        if endpoint not in _clients:
            # botocore directly: boto3 adds only its transfer manager (unused here), which was
            # a tenth of the inference function's cold start.
            _clients[endpoint] = botocore.session.get_session().create_client(
                "s3", config=Config(retries={"mode": "standard"}, max_pool_connections=32)
            )
        return _clients[endpoint]


def encode_metadata(values: dict[str, str]) -> dict[str, str]:
    """S3 user metadata is ASCII: percent-encode so any label survives the round trip."""
    return {name: quote(value, safe="") for name, value in values.items()}


def decode_metadata(values: dict[str, str]) -> dict[str, str]:
    return {name: unquote(value) for name, value in values.items()}


@dataclass(frozen=True)
class StoredObject:
    key: str
    body: bytes
    etag: str
    metadata: dict[str, str]
    content_type: str = ""


@dataclass
class ObjectStore:
    bucket: str
    client: Any = field(default_factory=s3_client)

    def get(self, key: str) -> StoredObject:
        response = self.client.get_object(Bucket=self.bucket, Key=key)
        return StoredObject(
            key=key,
            body=response["Body"].read(),
            etag=response["ETag"].strip('"'),
            metadata=dict(response.get("Metadata", {})),
            content_type=response.get("ContentType", ""),
        )

    def head(self, key: str) -> dict[str, Any] | None:
        try:
            response: dict[str, Any] = self.client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as error:
            if error.response["Error"]["Code"] in ("404", "NoSuchKey", "NotFound"):
                return None
            raise
        return response

    def put(
        self,
        key: str,
        body: bytes,
        *,
        content_type: str = "application/octet-stream",
        metadata: dict[str, str] | None = None,
    ) -> None:
        self.client.put_object(
            Bucket=self.bucket,
            Key=key,
            Body=body,
            ContentType=content_type,
            Metadata=metadata or {},
        )

    def put_json(self, key: str, document: Any) -> None:
        body = json.dumps(document, indent=2, sort_keys=True, default=str).encode()
        self.put(key, body, content_type="application/json")

    def get_json(self, key: str) -> Any | None:
        try:
            return json.loads(self.get(key).body)
        except ClientError as error:
            if error.response["Error"]["Code"] in ("NoSuchKey", "404"):
                return None
            raise

    def list(self, prefix: str) -> Iterator[dict[str, Any]]:
        """Every object under a prefix: dicts with Key, ETag, Size, LastModified."""
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            yield from page.get("Contents", [])

    def copy(self, source_key: str, target_key: str) -> None:
        self.client.copy_object(
            Bucket=self.bucket,
            Key=target_key,
            CopySource={"Bucket": self.bucket, "Key": source_key},
        )

    def quarantine(self, key: str, error: InvalidInput, *, stage: str, etag: str = "") -> str:
        """Copy a bad object under quarantine/ with a JSON reason beside it; return the reason key.

        The original stays where it was: quarantine never loses the user's upload.
        """
        target = PIPELINE.prefixes.quarantine + key
        reason_key = target + ".reason.json"
        if self.head(key) is not None:
            self.copy(key, target)
        self.put_json(
            reason_key,
            {
                "source_key": key,
                "source_etag": etag,
                "stage": stage,
                "quarantined_at": datetime.now(UTC).isoformat(),
                **error.as_dict(),
            },
        )
        return reason_key
