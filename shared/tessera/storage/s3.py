"""The S3 adapter of the storage port: the one module that talks to botocore.

botocore reads `AWS_ENDPOINT_URL` itself, so the same code talks to AWS or to the local moto
server.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import botocore.session
from botocore.config import Config
from botocore.exceptions import ClientError
from botocore.utils import determine_content_length

from tessera.storage import ObjectInfo, ObjectMissing, ObjectStore, StoredObject, WriteConflict

# Every code S3 (or moto) answers for "no such object", for GET and for HEAD.
_MISSING = frozenset({"404", "NoSuchKey", "NotFound"})
# Every code S3 answers when a conditional write loses.
_CONFLICT = frozenset({"412", "PreconditionFailed", "ConditionalRequestConflict"})

_clients: dict[str, Any] = {}
_clients_lock = threading.Lock()
# Below this, a PUT sends its body at once instead of waiting for `100 Continue` first.
EXPECT_CONTINUE_FROM = 1024 * 1024


def send_small_bodies_at_once(params: dict[str, Any], **_: Any) -> None:
    """botocore makes every S3 PUT with a body ask `Expect: 100-continue` and wait for the
    answer before sending the body: a round trip more per request (and against the local
    server a write more on each side), which spares a refused request a large upload but is
    pure cost for a 300-byte tile PNG, Split's one request per tile."""
    headers, body = params.get("headers") or {}, params.get("body")
    if "Expect" in headers and body is not None:
        size = determine_content_length(body)
        if size is not None and size < EXPECT_CONTINUE_FROM:
            del headers["Expect"]


def s3_client() -> Any:
    """One S3 client per process and endpoint (clients are thread-safe and cost milliseconds
    to create; keying by endpoint keeps a client from outliving the local server it served)."""
    endpoint = os.environ.get("AWS_ENDPOINT_URL", "")
    with _clients_lock:
        if endpoint not in _clients:
            # botocore directly: boto3 adds only its transfer manager (unused here), which was
            # a tenth of the inference function's cold start.
            client = botocore.session.get_session().create_client(
                "s3", config=Config(retries={"mode": "standard"}, max_pool_connections=32)
            )
            # after botocore's own before-call handler, which adds the header
            client.meta.events.register_last("before-call.s3", send_small_bodies_at_once)
            _clients[endpoint] = client
        return _clients[endpoint]


def _code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


@dataclass
class S3ObjectStore(ObjectStore):
    bucket: str
    client: Any = field(default_factory=s3_client, repr=False)

    def get(self, key: str) -> StoredObject:
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=key)
        except ClientError as error:
            if _code(error) in _MISSING:
                raise ObjectMissing(key) from None
            raise
        return StoredObject(
            key=key,
            body=response["Body"].read(),
            etag=response["ETag"].strip('"'),
            metadata=dict(response.get("Metadata", {})),
            content_type=response.get("ContentType", ""),
        )

    def head(self, key: str) -> ObjectInfo | None:
        try:
            response = self.client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as error:
            if _code(error) in _MISSING:
                return None
            raise
        return ObjectInfo(
            key=key,
            etag=str(response.get("ETag", "")).strip('"'),
            size=int(response.get("ContentLength", 0)),
            metadata=dict(response.get("Metadata", {})),
            content_type=str(response.get("ContentType", "")),
        )

    def put(
        self,
        key: str,
        body: bytes,
        *,
        content_type: str = "application/octet-stream",
        metadata: dict[str, str] | None = None,
        if_match: str | None = None,
        if_none_match: bool = False,
    ) -> str:
        condition: dict[str, str] = {}
        if if_match is not None:
            condition["IfMatch"] = f'"{if_match}"'
        elif if_none_match:
            condition["IfNoneMatch"] = "*"
        try:
            response = self.client.put_object(
                Bucket=self.bucket,
                Key=key,
                Body=body,
                ContentType=content_type,
                Metadata=metadata or {},
                **condition,
            )
        except ClientError as error:
            if _code(error) in _CONFLICT:
                raise WriteConflict(key) from None
            raise
        return str(response.get("ETag", "")).strip('"')

    def list(self, prefix: str, *, start_after: str = "") -> Iterator[ObjectInfo]:
        paginator = self.client.get_paginator("list_objects_v2")
        after = {"StartAfter": start_after} if start_after else {}
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix, **after):
            for item in page.get("Contents", []):
                yield ObjectInfo(
                    key=item["Key"], etag=str(item["ETag"]).strip('"'), size=int(item["Size"])
                )

    def copy(self, source_key: str, target_key: str) -> None:
        self.client.copy_object(
            Bucket=self.bucket,
            Key=target_key,
            CopySource={"Bucket": self.bucket, "Key": source_key},
        )

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=key)
