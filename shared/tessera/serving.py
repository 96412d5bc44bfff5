"""ONNX models at serving time: onnxruntime only (no TensorFlow, scikit-learn or SciPy).

The ONNX contract every exported model keeps:
- input `input`: float32 (n, 784), the normalized tile scaled to [0, 1];
- output `probabilities`: float32 (n, classes); optional output `embedding` (n, D), the
  penultimate layer, which `POST /similar` compares with `embeddings.npz` beside the model;
- metadata `classes`: a JSON list of the class labels in probability order.
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnxruntime as ort
from botocore.exceptions import ClientError
from numpy.typing import NDArray

from tessera.config import PIPELINE
from tessera.registry import CHAMPION_FILE, METRICS_FILE, MODEL_FILE, ModelRegistry, is_version
from tessera.similarity import EMBEDDINGS_FILE, EmbeddingIndex, IndexUnusable
from tessera.storage import ObjectStore

INPUT_NAME = "input"
PROBABILITIES = "probabilities"
EMBEDDING = "embedding"
# One Lambda vCPU per 1,769 MB of memory (Lambda's documented ratio).
LAMBDA_MB_PER_VCPU = 1769
# Versions kept loaded per model: the champion, the previous one and a few pinned by callers.
SESSIONS_PER_MODEL = 4


class ModelNotFound(Exception):
    """The caller named a model or version the registry does not hold."""


class SimilarityUnavailable(Exception):
    """The model has no `embedding` output or no embeddings.npz beside it."""


def _missing(error: ClientError) -> bool:
    return str(error.response.get("Error", {}).get("Code")) in ("NoSuchKey", "404", "NotFound")


def available_vcpus() -> int:
    """The vCPUs this process may use: Lambda's share by memory size, else the CPU affinity."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cpus = max(1, cpus or 1)
    memory = os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE")
    if memory and memory.isdigit():
        return max(1, min(cpus, math.ceil(int(memory) / LAMBDA_MB_PER_VCPU)))
    return cpus


def session_options() -> ort.SessionOptions:
    options = ort.SessionOptions()
    # More threads than vCPUs only adds contention; TESSERA_ORT_THREADS overrides for benchmarks.
    threads = int(os.environ.get("TESSERA_ORT_THREADS", "0")) or available_vcpus()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Spinning workers burn the vCPU a concurrent request (or the local API's other threads)
    # could use, for microseconds of latency on a model this small.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


@dataclass
class OnnxClassifier:
    name: str
    version: str
    session: ort.InferenceSession
    classes: list[str]
    has_embedding: bool = False

    @classmethod
    def from_bytes(cls, model: bytes, *, name: str, version: str) -> OnnxClassifier:
        session = ort.InferenceSession(
            model, sess_options=session_options(), providers=["CPUExecutionProvider"]
        )
        inputs = [item.name for item in session.get_inputs()]
        outputs = [item.name for item in session.get_outputs()]
        if inputs != [INPUT_NAME] or PROBABILITIES not in outputs:
            raise ValueError(
                f"model {name}/{version} breaks the serving contract: inputs {inputs}, "
                f"outputs {outputs}"
            )
        metadata = session.get_modelmeta().custom_metadata_map
        if "classes" not in metadata:
            raise ValueError(f"model {name}/{version} has no 'classes' metadata")
        return cls(
            name=name,
            version=version,
            session=session,
            classes=[str(label) for label in json.loads(metadata["classes"])],
            has_embedding=EMBEDDING in outputs,
        )

    def probabilities(self, x: NDArray[np.float32]) -> NDArray[np.float32]:
        (probabilities,) = self.session.run([PROBABILITIES], {INPUT_NAME: x})
        return np.asarray(probabilities, dtype=np.float32)

    def embed(self, x: NDArray[np.float32]) -> NDArray[np.float32]:
        if not self.has_embedding:
            raise SimilarityUnavailable(
                f"model {self.name}/{self.version} has no '{EMBEDDING}' output"
            )
        (embedding,) = self.session.run([EMBEDDING], {INPUT_NAME: x})
        return np.asarray(embedding, dtype=np.float32).reshape(x.shape[0], -1)

    def probabilities_and_embedding(
        self, x: NDArray[np.float32]
    ) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        """Both outputs from one run: /similar answers with the label and the neighbours."""
        if not self.has_embedding:
            raise SimilarityUnavailable(
                f"model {self.name}/{self.version} has no '{EMBEDDING}' output"
            )
        probabilities, embedding = self.session.run([PROBABILITIES, EMBEDDING], {INPUT_NAME: x})
        return (
            np.asarray(probabilities, dtype=np.float32),
            np.asarray(embedding, dtype=np.float32).reshape(x.shape[0], -1),
        )

    def predict(self, x: NDArray[np.float32], *, top_k: int = 3) -> list[dict[str, Any]]:
        return self.describe(self.probabilities(x), top_k=top_k)

    def describe(self, probabilities: NDArray[np.float32], *, top_k: int) -> list[dict[str, Any]]:
        """Each row of probabilities as its label, confidence and top-k, best first."""
        k = max(1, min(top_k, len(self.classes)))
        # One vectorized sort for the whole batch; tolist() hands Python floats to JSON at once.
        order = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
        chosen = np.take_along_axis(probabilities, order, axis=1).tolist()
        classes = self.classes
        results = []
        for indices, values in zip(order.tolist(), chosen, strict=True):
            top = [
                {"label": classes[i], "probability": p}
                for i, p in zip(indices, values, strict=True)
            ]
            results.append({"label": top[0]["label"], "confidence": values[0], "top": top})
        return results


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
            except ClientError as error:
                if _missing(error):
                    raise ModelNotFound(
                        f"model {self.registry.name!r} has no version {version!r}"
                    ) from None
                raise
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
        except ClientError as error:
            if _missing(error):
                return None, f"model {self.registry.name}/{version} has no {EMBEDDINGS_FILE}"
            raise
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
            parts = item["Key"][len(prefix) :].split("/")
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
