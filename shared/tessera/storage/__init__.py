"""The storage port: what the pipeline needs of its bucket, and the typed errors it raises.

Domain code (pipeline steps, dataset, registry, serving) talks to an `ObjectStore`; the S3
adapter (`tessera.storage.s3`) is the only module that talks to botocore, and the in-memory
store (`tessera.storage.memory`) satisfies the same port in tests without moto.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import quote, unquote


class ObjectMissing(Exception):
    """The key holds no object."""


class WriteConflict(Exception):
    """A conditional write lost: the object changed (or appeared) since it was read."""


@dataclass(frozen=True)
class ObjectInfo:
    """What a HEAD or a listing tells about an object; `etag` has no quotes."""

    key: str
    etag: str
    size: int
    metadata: dict[str, str] = field(default_factory=dict)
    content_type: str = ""


@dataclass(frozen=True)
class StoredObject:
    key: str
    body: bytes
    etag: str
    metadata: dict[str, str]
    content_type: str = ""


def encode_metadata(values: dict[str, str]) -> dict[str, str]:
    """S3 user metadata is ASCII: percent-encode so any label survives the round trip."""
    return {name: quote(value, safe="") for name, value in values.items()}


def decode_metadata(values: dict[str, str]) -> dict[str, str]:
    return {name: unquote(value) for name, value in values.items()}


class ObjectStore(Protocol):
    """A bucket: keys to bytes with an ETag and user metadata."""

    bucket: str

    def get(self, key: str) -> StoredObject:
        """The object at `key`; raises `ObjectMissing` when there is none."""
        ...

    def head(self, key: str) -> ObjectInfo | None:
        """The object's size, ETag and metadata, or None when there is none."""
        ...

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
        """Write `body` at `key` and return its ETag. With `if_match` (an ETag) the write
        happens only if the object still has it; with `if_none_match` only if there is no
        object yet; either condition failing raises `WriteConflict`."""
        ...

    def list(self, prefix: str, *, start_after: str = "") -> Iterator[ObjectInfo]:
        """Every object under `prefix`, in key order (metadata is not listed); with
        `start_after`, only the keys after it. Lazy: a caller that stops early lists no more
        pages than it read."""
        ...

    def copy(self, source_key: str, target_key: str) -> None: ...

    def delete(self, key: str) -> None:
        """Remove `key`; removing a missing key is not an error."""
        ...

    def put_json(self, key: str, document: Any) -> str:
        body = json.dumps(document, indent=2, sort_keys=True, default=str).encode()
        return self.put(key, body, content_type="application/json")

    def get_json(self, key: str) -> Any | None:
        """The JSON document at `key`, or None when there is none."""
        try:
            return json.loads(self.get(key).body)
        except ObjectMissing:
            return None
