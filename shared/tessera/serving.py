"""ONNX models at serving time: onnxruntime only (no TensorFlow, scikit-learn or SciPy).

The ONNX contract every exported model keeps:
- input `input`: float32 (n, 784), the normalized tile scaled to [0, 1];
- output `probabilities`: float32 (n, classes); optional output `embedding`;
- metadata `classes`: a JSON list of the class labels in probability order.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray

from tessera.registry import ModelRegistry

INPUT_NAME = "input"
PROBABILITIES = "probabilities"
EMBEDDING = "embedding"


class ModelNotFound(Exception):
    pass


def _session_options() -> ort.SessionOptions:
    options = ort.SessionOptions()
    # Lambda gives one vCPU per 1,769 MB: more threads than cores only adds contention.
    threads = int(os.environ.get("TESSERA_ORT_THREADS", "1"))
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return options


@dataclass
class OnnxClassifier:
    name: str
    version: str
    session: ort.InferenceSession
    classes: list[str]

    @classmethod
    def from_bytes(cls, model: bytes, *, name: str, version: str) -> OnnxClassifier:
        session = ort.InferenceSession(
            model, sess_options=_session_options(), providers=["CPUExecutionProvider"]
        )
        metadata = session.get_modelmeta().custom_metadata_map
        if "classes" not in metadata:
            raise ValueError(f"model {name}/{version} has no 'classes' metadata")
        return cls(
            name=name, version=version, session=session, classes=json.loads(metadata["classes"])
        )

    @property
    def has_embedding(self) -> bool:
        return any(output.name == EMBEDDING for output in self.session.get_outputs())

    def probabilities(self, x: NDArray[np.float32]) -> NDArray[np.float32]:
        (probabilities,) = self.session.run([PROBABILITIES], {INPUT_NAME: x})
        return np.asarray(probabilities, dtype=np.float32)

    def predict(self, x: NDArray[np.float32], *, top_k: int = 3) -> list[dict[str, Any]]:
        probabilities = self.probabilities(x)
        k = max(1, min(top_k, len(self.classes)))
        results = []
        for row in probabilities:
            order = np.argsort(-row)[:k]
            results.append(
                {
                    "label": self.classes[int(order[0])],
                    "confidence": float(row[order[0]]),
                    "top": [
                        {"label": self.classes[int(i)], "probability": float(row[i])} for i in order
                    ],
                }
            )
        return results


@dataclass
class ModelCache:
    """Follows a model's champion pointer, re-reading it at most every `ttl_seconds`.

    Sessions are cached per version, so a promotion is picked up without a redeploy and
    without loading the model on every request.
    """

    registry: ModelRegistry
    ttl_seconds: float
    clock: Any = time.monotonic
    _sessions: dict[str, OnnxClassifier] = field(default_factory=dict)
    _champion: str | None = None
    _checked_at: float = float("-inf")
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def champion_version(self) -> str:
        now = self.clock()
        if self._champion is None or now - self._checked_at >= self.ttl_seconds:
            pointer = self.registry.champion()
            if pointer is None:
                raise ModelNotFound(f"model {self.registry.name!r} has no champion yet")
            self._champion = str(pointer["version"])
            self._checked_at = now
        return self._champion

    def get(self, version: str | None = None) -> OnnxClassifier:
        version = version or self.champion_version()
        with self._lock:
            if version not in self._sessions:
                try:
                    model = self.registry.model_bytes(version)
                except Exception as error:
                    if "NoSuchKey" in str(error) or "404" in str(error):
                        raise ModelNotFound(
                            f"model {self.registry.name!r} has no version {version!r}"
                        ) from None
                    raise
                self._sessions[version] = OnnxClassifier.from_bytes(
                    model, name=self.registry.name, version=version
                )
            return self._sessions[version]
