"""An in-memory implementation of the storage port, for domain tests that need no moto.

It keeps S3's semantics where the pipeline relies on them: ETags are the MD5 of the body,
listings come in key order, conditional writes conflict like S3's, and a missing key raises
`ObjectMissing`.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

from tessera.storage import ObjectInfo, ObjectMissing, ObjectStore, StoredObject, WriteConflict


@dataclass
class InMemoryObjectStore(ObjectStore):
    bucket: str = "memory"
    objects: dict[str, StoredObject] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def get(self, key: str) -> StoredObject:
        with self._lock:
            stored = self.objects.get(key)
        if stored is None:
            raise ObjectMissing(key)
        return stored

    def head(self, key: str) -> ObjectInfo | None:
        with self._lock:
            stored = self.objects.get(key)
        if stored is None:
            return None
        return ObjectInfo(
            key=key,
            etag=stored.etag,
            size=len(stored.body),
            metadata=dict(stored.metadata),
            content_type=stored.content_type,
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
        etag = hashlib.md5(body, usedforsecurity=False).hexdigest()
        with self._lock:
            current = self.objects.get(key)
            if if_match is not None and (current is None or current.etag != if_match):
                raise WriteConflict(key)
            if if_none_match and current is not None:
                raise WriteConflict(key)
            self.objects[key] = StoredObject(
                key=key,
                body=bytes(body),
                etag=etag,
                metadata=dict(metadata or {}),
                content_type=content_type,
            )
        return etag

    def list(self, prefix: str, *, start_after: str = "") -> Iterator[ObjectInfo]:
        with self._lock:
            found = sorted(
                (key, stored)
                for key, stored in self.objects.items()
                if key.startswith(prefix) and key > start_after
            )
        for key, stored in found:
            yield ObjectInfo(key=key, etag=stored.etag, size=len(stored.body))

    def copy(self, source_key: str, target_key: str) -> None:
        source = self.get(source_key)
        self.put(
            target_key, source.body, content_type=source.content_type, metadata=source.metadata
        )

    def delete(self, key: str) -> None:
        with self._lock:
            self.objects.pop(key, None)
