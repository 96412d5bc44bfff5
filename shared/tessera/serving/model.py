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
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray

from tessera.config import Env

INPUT_NAME = "input"


PROBABILITIES = "probabilities"


EMBEDDING = "embedding"


# One Lambda vCPU per 1,769 MB of memory (Lambda's documented ratio).
LAMBDA_MB_PER_VCPU = 1769


class ModelNotFound(Exception):
    """The caller named a model or version the registry does not hold."""


class SimilarityUnavailable(Exception):
    """The model has no `embedding` output or no embeddings.npz beside it."""


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
    threads = int(os.environ.get(Env.ORT_THREADS, "0")) or available_vcpus()
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
