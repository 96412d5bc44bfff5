"""What a pipeline step did with one object, and the quarantine every unusable object goes to.

An `InvalidInput` never escapes a step: the object is quarantined with its reason and the step
counts as done, so a bad upload is neither retried forever nor silently dropped. Any other
exception is transient and propagates, so the message is retried and, in the end,
dead-lettered.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tessera.config import PIPELINE
from tessera.errors import InvalidInput
from tessera.storage import ObjectStore


@dataclass(frozen=True)
class Outcome:
    key: str
    status: str  # "split", "vectorized", "unchanged", "quarantined", "empty", "predicted"
    detail: dict[str, Any]


def quarantine_key(key: str) -> str:
    return PIPELINE.prefixes.quarantine + key


def quarantine(
    store: ObjectStore,
    key: str,
    error: InvalidInput,
    *,
    stage: str,
    etag: str = "",
    extra: dict[str, Any] | None = None,
) -> str:
    """Copy a bad object under quarantine/ with a JSON reason beside it; return the reason key.

    The original stays where it was: quarantine never loses the user's upload.
    """
    target = quarantine_key(key)
    reason_key = target + ".reason.json"
    if store.head(key) is not None:
        store.copy(key, target)
    store.put_json(
        reason_key,
        {
            "source_key": key,
            "source_etag": etag,
            "stage": stage,
            "quarantined_at": datetime.now(UTC).isoformat(),
            **error.as_dict(),
            **(extra or {}),
        },
    )
    return reason_key


def quarantined(
    store: ObjectStore,
    key: str,
    error: InvalidInput,
    *,
    stage: str,
    etag: str = "",
    status: str = "quarantined",
    extra: dict[str, Any] | None = None,
) -> Outcome:
    """Quarantine `key` and say so: the outcome every step returns for unusable input."""
    reason = quarantine(store, key, error, stage=stage, etag=etag, extra=extra)
    return Outcome(key, status, {"reason_key": reason, **error.as_dict()})


def too_large(store: ObjectStore, key: str) -> InvalidInput | None:
    """Refused before it is read: an object over the image byte limit."""
    head = store.head(key)
    limit = PIPELINE.limits.max_image_bytes
    if head is not None and head.size > limit:
        return InvalidInput("object_too_large", f"{head.size} bytes is over the limit of {limit}")
    return None
