"""The model registry in the bucket.

models/<name>/<version>/   model.onnx, metrics.json, and whatever else a run produced
models/<name>/champion.json          the pointer serving follows (one PUT: atomic)
models/<name>/champion-history/      every pointer ever written, oldest first by key
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tessera.config import PIPELINE
from tessera.storage import ObjectStore

MODEL_FILE = "model.onnx"
METRICS_FILE = "metrics.json"
CHAMPION_FILE = "champion.json"
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
            parts = item["Key"][len(self.prefix) :].split("/")
            if len(parts) == 2 and parts[1] == MODEL_FILE and is_version(parts[0]):
                found.add(parts[0])
        return sorted(found)

    def promote(
        self, version: str, *, accuracy: float, evaluation: dict[str, Any]
    ) -> dict[str, Any]:
        """Point champion.json at `version`, keeping the previous pointer in the history."""
        previous = self.champion()
        now = datetime.now(UTC)
        pointer = {
            "model": self.name,
            "version": version,
            "accuracy": accuracy,
            "evaluation": evaluation,
            "promoted_at": now.isoformat(),
            "previous_version": previous["version"] if previous else None,
        }
        history_key = f"{self.prefix}champion-history/{now.strftime('%Y%m%dT%H%M%S%fZ')}.json"
        self.store.put_json(history_key, pointer)
        self.store.put_json(self.prefix + CHAMPION_FILE, pointer)
        return pointer
