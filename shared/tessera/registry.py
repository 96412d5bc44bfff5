"""The model registry in the bucket.

models/<name>/<version>/   model.onnx, metrics.json, report.html, model_card.md, plots,
                           config.json, embeddings.npz: everything one training run produced
                           (the file names below are the only place these names are spelled)
models/<name>/champion.json          the pointer serving follows (one conditional PUT: atomic)
models/<name>/champion-history/      every pointer ever written, oldest first by key

Promotion rule: a candidate replaces the champion only when it is at least as accurate as the
champion *measured on the candidate's own evaluation set* (the caller evaluates the champion's
model on the same held-out rows). The pointer is written with a conditional PUT on the ETag
that was read, so two runs promoting at once cannot both win on stale information.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tessera.config import PIPELINE
from tessera.storage import ObjectMissing, ObjectStore, WriteConflict

MODEL_FILE = "model.onnx"
METRICS_FILE = "metrics.json"
CHAMPION_FILE = "champion.json"
REPORT_FILE = "report.html"
MODEL_CARD_FILE = "model_card.md"
CONFIG_FILE = "config.json"
EMBEDDINGS_FILE = "embeddings.npz"
REVIEW_FILE = "review.json"  # the training job's label review, read by the console
# report.html's one style sheet: the console's content policy allows exactly it (by hash), so a
# report opened from the signed-in page keeps its look without allowing any other inline style.
REPORT_STYLE = (
    "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin:1em 0}"
    "td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}img{max-width:100%}"
    ".warning{background:#fff3cd;border:1px solid #e0b400;padding:6px 10px}"
)
HISTORY = "champion-history/"
# What may move a champion (training, the console): IAM resource patterns over every model.
CHAMPION_PATTERN = f"{PIPELINE.prefixes.models}*/{CHAMPION_FILE}"
CHAMPION_HISTORY_PATTERN = f"{PIPELINE.prefixes.models}*/{HISTORY}"
PROMOTION_ATTEMPTS = 3
_VERSION = re.compile(r"^\d{8}T\d{6}Z-[0-9a-f]{6,16}$")


def new_version(fingerprint: str, *, now: datetime | None = None) -> str:
    """Sortable by time, and names the data it was trained on."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{fingerprint[:8]}"


def is_version(value: str) -> bool:
    return bool(_VERSION.fullmatch(value))


@dataclass
class ModelRegistry:
    store: ObjectStore
    name: str

    @property
    def prefix(self) -> str:
        return f"{PIPELINE.prefixes.models}{self.name}/"

    def key(self, version: str, filename: str) -> str:
        return f"{self.prefix}{version}/{filename}"

    def put_artifact(self, version: str, filename: str, body: bytes, content_type: str) -> str:
        key = self.key(version, filename)
        self.store.put(key, body, content_type=content_type)
        return key

    def model_bytes(self, version: str) -> bytes:
        return self.store.get(self.key(version, MODEL_FILE)).body

    def metrics(self, version: str) -> dict[str, Any] | None:
        document = self.store.get_json(self.key(version, METRICS_FILE))
        return document if isinstance(document, dict) else None

    def champion(self) -> dict[str, Any] | None:
        document = self.store.get_json(self.prefix + CHAMPION_FILE)
        return document if isinstance(document, dict) else None

    def versions(self) -> list[str]:
        found = set()
        for item in self.store.list(self.prefix):
            parts = item.key[len(self.prefix) :].split("/")
            if len(parts) == 2 and parts[1] == MODEL_FILE and is_version(parts[0]):
                found.add(parts[0])
        return sorted(found)

    def champion_with_etag(self) -> tuple[dict[str, Any] | None, str | None]:
        try:
            stored = self.store.get(self.prefix + CHAMPION_FILE)
        except ObjectMissing:
            return None, None
        document = json.loads(stored.body)
        return (document if isinstance(document, dict) else None), stored.etag

    def history(self) -> list[dict[str, Any]]:
        """Every pointer ever written, oldest first."""
        keys = sorted(item.key for item in self.store.list(self.prefix + HISTORY))
        return [document for key in keys if isinstance(document := self.store.get_json(key), dict)]

    def promote_if_better(
        self,
        version: str,
        *,
        accuracy: float,
        evaluation: dict[str, Any],
        champion_accuracy: Callable[[dict[str, Any]], float],
    ) -> PromotionDecision:
        """Promote `version` unless the champion is more accurate on the same evaluation set.

        `champion_accuracy(pointer)` measures the current champion on the candidate's evaluation
        rows. If another run moves the pointer between our read and our write, the conditional
        PUT fails and the decision is taken again against the new champion.
        """
        for _ in range(PROMOTION_ATTEMPTS):
            pointer, etag = self.champion_with_etag()
            measured = champion_accuracy(pointer) if pointer is not None else None
            if not should_promote(accuracy, measured):
                return PromotionDecision(
                    promoted=False, champion_before=pointer, champion_accuracy=measured
                )
            try:
                self._write_pointer(version, accuracy, evaluation, pointer, etag, measured)
            except WriteConflict:
                continue
            return PromotionDecision(
                promoted=True, champion_before=pointer, champion_accuracy=measured
            )
        raise PromotionConflict(
            f"champion of {self.name!r} kept changing during {PROMOTION_ATTEMPTS} attempts"
        )

    def promote(
        self, version: str, *, accuracy: float, evaluation: dict[str, Any]
    ) -> dict[str, Any]:
        """Point champion.json at `version` unconditionally (an operator's rollback)."""
        previous, etag = self.champion_with_etag()
        return self._write_pointer(version, accuracy, evaluation, previous, etag, None)

    def _write_pointer(
        self,
        version: str,
        accuracy: float,
        evaluation: dict[str, Any],
        previous: dict[str, Any] | None,
        etag: str | None,
        previous_accuracy: float | None,
    ) -> dict[str, Any]:
        now = datetime.now(UTC)
        pointer = {
            "model": self.name,
            "version": version,
            "accuracy": accuracy,
            "evaluation": evaluation,
            "promoted_at": now.isoformat(),
            "previous_version": previous["version"] if previous else None,
            "previous_accuracy_on_this_evaluation": previous_accuracy,
        }
        body = json.dumps(pointer, indent=2, sort_keys=True).encode()
        # If-Match / If-None-Match make the read-decide-write a compare-and-swap.
        self.store.put(
            self.prefix + CHAMPION_FILE,
            body,
            content_type="application/json",
            if_match=etag or None,
            if_none_match=not etag,
        )
        # Written after the pointer, so the history holds only pointers that were in force.
        history_key = f"{self.prefix}{HISTORY}{now.strftime('%Y%m%dT%H%M%S%fZ')}-{version}.json"
        self.store.put_json(history_key, pointer)
        return pointer


def should_promote(candidate_accuracy: float, champion_accuracy: float | None) -> bool:
    """At least as accurate as the champion on the same evaluation set (ties promote: newer
    data wins when the held-out accuracy cannot tell the two apart)."""
    return champion_accuracy is None or candidate_accuracy >= champion_accuracy


class PromotionConflict(Exception):
    """Concurrent promotions kept moving the champion pointer."""


@dataclass(frozen=True)
class PromotionDecision:
    promoted: bool
    champion_before: dict[str, Any] | None
    champion_accuracy: float | None
