"""One family fitted, exported to ONNX and checked against itself: the export must agree with
the native model (the parity gate) before anything is registered."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from tessera.dataset import Dataset
from tessera.serving.model import EMBEDDING, INPUT_NAME, PROBABILITIES, OnnxClassifier
from training.errors import TrainingError
from training.export import keras_to_onnx, sklearn_to_onnx
from training.families import fit_family
from training.families.base import FitOptions, FittedModel
from training.families.transfer import TransferModel, transfer_to_onnx
from training.progress import log

PARITY_TOLERANCE = 1e-4


# The embedding is checked too, on a scale relative to its size: it feeds cosine similarity.
EMBEDDING_TOLERANCE = 1e-3


def check_parity(
    native: NDArray[np.float32], exported: NDArray[np.float32]
) -> dict[str, float | int | bool]:
    max_diff = float(np.abs(native - exported).max()) if native.size else 0.0
    disagreements = int((native.argmax(axis=1) != exported.argmax(axis=1)).sum())
    return {
        "max_probability_difference": max_diff,
        "argmax_disagreements": disagreements,
        "tolerance": PARITY_TOLERANCE,
        "passed": disagreements == 0 and max_diff <= PARITY_TOLERANCE,
    }


def accuracy_of(
    classes: list[str], probabilities: NDArray[np.float32], y: NDArray[np.str_]
) -> float:
    predicted = np.asarray(classes)[probabilities.argmax(axis=1)]
    return float((predicted == y).mean())


def export(model: FittedModel) -> bytes:
    if model.family == "mlp":
        return sklearn_to_onnx(model.native, classes=model.classes)
    if isinstance(model.native, TransferModel):
        return transfer_to_onnx(model.native)
    return keras_to_onnx(model.native, classes=model.classes, family=model.family)


def onnx_outputs(
    classifier: OnnxClassifier, x: NDArray[np.float32], *, batch: int = 4096
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    probabilities, embeddings = [], []
    for start in range(0, len(x), batch):
        p, e = classifier.session.run(
            [PROBABILITIES, EMBEDDING], {INPUT_NAME: x[start : start + batch]}
        )
        probabilities.append(np.asarray(p, np.float32))
        embeddings.append(np.asarray(e, np.float32))
    return np.concatenate(probabilities), np.concatenate(embeddings)


def train_family(
    family: str, train: Dataset, test: Dataset, options: FitOptions
) -> tuple[FittedModel, bytes, dict[str, Any], NDArray[np.float32]]:
    """Fit, export and gate one family: (model, onnx, parity, test probabilities)."""
    log(f"{family}: training on {len(train)} rows, testing on {len(test)}")
    x_train, x_test = train.features(), test.features()
    model = fit_family(family, x_train, train.y, options)
    native = model.probabilities(x_test)
    onnx_bytes = export(model)
    exported = OnnxClassifier.from_bytes(onnx_bytes, name=family, version="candidate")
    onnx_probabilities, onnx_embedding = onnx_outputs(exported, x_test)
    parity = check_parity(native, onnx_probabilities)
    native_embedding = model.embedding(x_test)
    scale = max(1.0, float(np.abs(native_embedding).max()))
    parity["max_embedding_difference"] = float(np.abs(native_embedding - onnx_embedding).max())
    parity["passed"] = bool(
        parity["passed"] and parity["max_embedding_difference"] <= EMBEDDING_TOLERANCE * scale
    )
    log(f"{family}: parity {parity}")
    if not parity["passed"]:
        raise TrainingError(
            "parity_failed", f"the {family} ONNX export disagrees with the native model: {parity}"
        )
    return model, onnx_bytes, parity, native


@dataclass(frozen=True)
class Candidate:
    accuracy: float
    model: FittedModel
    onnx: bytes
    parity: dict[str, Any]
    probabilities: NDArray[np.float32]
