"""Models and their embedding indexes kept loaded between requests, following the champion
pointer, and the catalog `GET /models` shows."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tessera.config import PIPELINE
from tessera.registry import (
    CHAMPION_FILE,
    EMBEDDINGS_FILE,
    METRICS_FILE,
    MODEL_FILE,
    ModelRegistry,
    is_version,
)
from tessera.serving.model import EMBEDDING, ModelNotFound, OnnxClassifier, SimilarityUnavailable
from tessera.serving.similarity import EmbeddingIndex, IndexUnusable
from tessera.storage import ObjectMissing, ObjectStore

# Versions kept loaded per model: the champion, the previous one and a few pinned by callers.
SESSIONS_PER_MODEL = 4


@dataclass
class _Loaded:
    classifier: OnnxClassifier
    index: EmbeddingIndex | None = None
    index_error: str | None = None


@dataclass
class ModelCache:
    """Follows a model's champion pointer, re-reading it at most every `ttl_seconds`.

    Sessions (and their embedding index) are cached per version, so a promotion is picked up
    without a redeploy and without loading the model on every request. A missing champion is
    remembered for the TTL too, so requests for an untrained model do not each cost a GET.
    """

    registry: ModelRegistry
    ttl_seconds: float
    clock: Callable[[], float] = time.monotonic
    max_versions: int = SESSIONS_PER_MODEL
    _loaded: OrderedDict[str, _Loaded] = field(default_factory=OrderedDict)
    _champion: str | None = None
    _checked_at: float = float("-inf")
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _champion_lock: threading.Lock = field(default_factory=threading.Lock)

    def champion_version(self) -> str:
        with self._champion_lock:
            now = self.clock()
            if now - self._checked_at >= self.ttl_seconds:
                pointer = self.registry.champion()
                self._champion = str(pointer["version"]) if pointer else None
                self._checked_at = now
            if self._champion is None:
                raise ModelNotFound(f"model {self.registry.name!r} has no champion yet")
            return self._champion

    def _entry(self, version: str | None) -> _Loaded:
        if version is not None and not is_version(version):
            raise ModelNotFound(
                f"model {self.registry.name!r} has no version {version!r} "
                "(versions look like 20250101T120000Z-0123abcd)"
            )
        version = version or self.champion_version()
        with self._lock:
            entry = self._loaded.get(version)
            if entry is not None:
                self._loaded.move_to_end(version)
                return entry
            try:
                model = self.registry.model_bytes(version)
            except ObjectMissing:
                raise ModelNotFound(
                    f"model {self.registry.name!r} has no version {version!r}"
                ) from None
            entry = _Loaded(
                OnnxClassifier.from_bytes(model, name=self.registry.name, version=version)
            )
            self._loaded[version] = entry
            while len(self._loaded) > self.max_versions:
                self._loaded.popitem(last=False)
            return entry

    def get(self, version: str | None = None) -> OnnxClassifier:
        return self._entry(version).classifier

    def similarity(self, version: str | None = None) -> tuple[OnnxClassifier, EmbeddingIndex]:
        """The model and its embedding index, the index read from the bucket once per version."""
        entry = self._entry(version)
        classifier = entry.classifier
        if not classifier.has_embedding:
            raise SimilarityUnavailable(
                f"model {classifier.name}/{classifier.version} has no '{EMBEDDING}' output, "
                "so it cannot search by similarity"
            )
        with self._lock:
            if entry.index is None and entry.index_error is None:
                entry.index, entry.index_error = self._read_index(classifier.version)
        if entry.index is None:
            raise SimilarityUnavailable(str(entry.index_error))
        if entry.index.dimension != self._embedding_width(classifier):
            raise SimilarityUnavailable(
                f"{EMBEDDINGS_FILE} of {classifier.name}/{classifier.version} has dimension "
                f"{entry.index.dimension}, the model's embedding has another"
            )
        return classifier, entry.index

    def _read_index(self, version: str) -> tuple[EmbeddingIndex | None, str | None]:
        key = self.registry.key(version, EMBEDDINGS_FILE)
        try:
            data = self.registry.store.get(key).body
        except ObjectMissing:
            return None, f"model {self.registry.name}/{version} has no {EMBEDDINGS_FILE}"
        try:
            return EmbeddingIndex.from_npz(data), None
        except IndexUnusable as error:
            return None, f"model {self.registry.name}/{version}: {error}"

    @staticmethod
    def _embedding_width(classifier: OnnxClassifier) -> int | None:
        for output in classifier.session.get_outputs():
            if output.name == EMBEDDING and isinstance(output.shape[-1], int):
                return int(output.shape[-1])
        return None

    def evict(self) -> None:
        with self._lock:
            self._loaded.clear()


@dataclass
class ModelCatalog:
    """What `GET /models` shows: every model in the registry, its versions, their metrics and
    which version is champion. Re-listed at most every `ttl_seconds`."""

    store: ObjectStore
    ttl_seconds: float
    clock: Callable[[], float] = time.monotonic
    _document: dict[str, Any] | None = None
    _listed_at: float = float("-inf")
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def describe(self) -> dict[str, Any]:
        with self._lock:
            now = self.clock()
            if self._document is None or now - self._listed_at >= self.ttl_seconds:
                self._document = self._list()
                self._listed_at = now
            return self._document

    def _list(self) -> dict[str, Any]:
        prefix = PIPELINE.prefixes.models
        versions: dict[str, dict[str, set[str]]] = {}
        for item in self.store.list(prefix):
            parts = item.key[len(prefix) :].split("/")
            if len(parts) == 2 and parts[1] == CHAMPION_FILE:
                versions.setdefault(parts[0], {})
            elif len(parts) == 3 and is_version(parts[1]):
                versions.setdefault(parts[0], {}).setdefault(parts[1], set()).add(parts[2])
        models = []
        for name in sorted(versions):
            registry = ModelRegistry(self.store, name)
            pointer = registry.champion()
            champion = str(pointer["version"]) if pointer else None
            entries = []
            for version in sorted(versions[name], reverse=True):
                files = versions[name][version]
                if MODEL_FILE not in files:
                    continue
                entries.append(
                    {
                        "version": version,
                        "champion": version == champion,
                        "similarity": EMBEDDINGS_FILE in files,
                        "metrics": registry.metrics(version) if METRICS_FILE in files else None,
                    }
                )
            models.append(
                {
                    "name": name,
                    "champion": champion,
                    "promoted_at": pointer.get("promoted_at") if pointer else None,
                    "versions": entries,
                }
            )
        return {"models": models}
