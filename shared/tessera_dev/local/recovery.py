"""Work that was queued when the local runtime stopped: SQS messages live only in moto's
memory, so after a restore an object whose step never finished would wait forever. Each such
object gets its S3 event again; what already has an outcome gets none (the steps are
idempotent, so a second run would be harmless, only wasted)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote_plus

from tessera.config import PIPELINE
from tessera.dataset import SHEETS, sheet_shard_key
from tessera.errors import InvalidInput
from tessera.pipeline.outcome import quarantine_key
from tessera.pipeline.tile_batch import sheet_of_tile_batch
from tessera.sheets.spec import LABELS_MANIFEST_SUFFIX, sheet_id_for
from tessera_dev.local.persistence import Stored
from tessera_dev.local.resources import ProvisionedQueue


@dataclass(frozen=True)
class _Restored:
    """What was restored, indexed for the questions below."""

    etags: dict[str, str]  # key -> ETag
    split_sheets: frozenset[str]  # the ids of sheets with a manifest under datasets/*/sheets/

    @classmethod
    def of(cls, objects: list[Stored]) -> _Restored:
        manifests = (
            record.key.rsplit("/", 1)[-1].removesuffix(".json")
            for record in objects
            if record.key.startswith(PIPELINE.prefixes.datasets)
            and f"/{SHEETS}" in record.key
            and record.key.endswith(".json")
        )
        return cls({r.key: r.etag for r in objects}, frozenset(manifests))

    def quarantined(self, key: str) -> bool:
        return quarantine_key(key) + ".reason.json" in self.etags

    def split(self, key: str) -> bool:
        etag = self.etags.get(key)
        return etag is not None and sheet_id_for(key, etag) in self.split_sheets


# Whether the step that listens under a prefix has an outcome for an object.
Finished = Callable[[str, _Restored], bool]


def _split_done(key: str, restored: _Restored) -> bool:
    """A sheet is done once split (its manifest is named by its key and ETag) or quarantined.
    A labels manifest is done once its sheet is split or absent: it can only split its sheet,
    so one whose sheet stays quarantined for another reason is sent again, harmlessly."""
    if key.endswith(LABELS_MANIFEST_SUFFIX):
        sheet = key.removesuffix(LABELS_MANIFEST_SUFFIX)
        return sheet not in restored.etags or restored.split(sheet)
    return restored.split(key) or restored.quarantined(key)


def _vectorize_done(key: str, restored: _Restored) -> bool:
    """A tile batch is done once its sheet has a shard (or the batch is quarantined). The
    shard is its last write, so a shard there means the batch's every outcome is there."""
    try:
        dataset, sheet_id = sheet_of_tile_batch(key)
    except InvalidInput:  # not a batch Split wrote: Vectorize would only quarantine it
        return restored.quarantined(key)
    return sheet_shard_key(dataset, sheet_id) in restored.etags or restored.quarantined(key)


def _predict_done(key: str, restored: _Restored) -> bool:
    prediction = f"{PIPELINE.prefixes.predictions}{key}.json"
    return prediction in restored.etags or restored.quarantined(key)


FINISHED: dict[str, Finished] = {
    "split": _split_done,
    "vectorize": _vectorize_done,
    "batch_predict": _predict_done,
}


def unfinished(
    queues: list[ProvisionedQueue], objects: list[Stored]
) -> list[tuple[ProvisionedQueue, Stored]]:
    """Each restored object a queue listens for whose step has no outcome yet."""
    restored = _Restored.of(objects)
    pending = []
    for queue in queues:
        done = FINISHED[queue.spec.function]
        for record in objects:
            if not record.key.startswith(queue.spec.prefix):
                continue
            if queue.spec.suffixes and not record.key.endswith(queue.spec.suffixes[0]):
                continue
            if not done(record.key, restored):
                pending.append((queue, record))
    return _one_per_sheet(pending)


def _one_per_sheet(
    pending: list[tuple[ProvisionedQueue, Stored]],
) -> list[tuple[ProvisionedQueue, Stored]]:
    """A sheet and its labels manifest both unfinished: the manifest's event splits the sheet
    with its labels, so the sheet's own event is left out."""
    manifests = {r.key for _, r in pending if r.key.endswith(LABELS_MANIFEST_SUFFIX)}
    return [(q, r) for q, r in pending if r.key + LABELS_MANIFEST_SUFFIX not in manifests]


def s3_event(bucket: str, record: Stored, queue: ProvisionedQueue, size: int) -> dict[str, Any]:
    """The notification S3 (and moto) sends for an upload, as the handlers parse it."""
    return {
        "Records": [
            {
                "eventVersion": "2.1",
                "eventSource": "aws:s3",
                "awsRegion": queue.arn.split(":")[3],
                "eventTime": datetime.now(UTC).isoformat(timespec="milliseconds"),
                "eventName": "ObjectCreated:Put",
                "s3": {
                    "s3SchemaVersion": "1.0",
                    "configurationId": queue.spec.name,
                    "bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"},
                    "object": {
                        "key": quote_plus(record.key),
                        "size": size,
                        "eTag": record.etag.strip('"'),
                    },
                },
            }
        ]
    }


def resend_unfinished(
    sqs: Any, s3: Any, bucket: str, queues: list[ProvisionedQueue], objects: list[Stored]
) -> list[str]:
    """Send each unfinished object's event to its queue again; the keys sent."""
    sent = []
    for queue, record in unfinished(queues, objects):
        size = int(s3.head_object(Bucket=bucket, Key=record.key)["ContentLength"])
        body = json.dumps(s3_event(bucket, record, queue, size))
        sqs.send_message(QueueUrl=queue.url, MessageBody=body)
        sent.append(record.key)
    return sent
