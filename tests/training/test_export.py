"""ONNX export under the serving contract: probabilities, the penultimate-layer embedding, and
the class labels in the metadata, checked against the native models."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from tessera_dev.samples import Glyphs
from training.export import mlp_embedding, sklearn_to_onnx
from training.families.base import FitOptions
from training.families.keras import fit_keras


def features(digits: Glyphs, count: int) -> tuple[np.ndarray, np.ndarray]:
    # sklearn's 8x8 digits, padded into 28x28 so the shapes are the contract's.
    canvas = np.zeros((count, 28, 28), np.float32)
    canvas[:, 10:18, 10:18] = digits.ink[:count]
    return canvas.reshape(count, 784), digits.labels[:count]


def run_onnx(model: bytes, x: np.ndarray) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["input"]
    names = [o.name for o in session.get_outputs()]
    values = session.run(names, {"input": x})
    return dict(zip(names, values, strict=True)), session.get_modelmeta().custom_metadata_map


@pytest.mark.parametrize(
    ("hidden", "activation", "scaler", "labels"),
    [
        ((40,), "relu", StandardScaler(with_std=False), None),
        ((30, 20), "tanh", StandardScaler(), None),
        ((16,), "logistic", StandardScaler(), ["x", "y"]),
    ],
)
def test_mlp_export_carries_probabilities_embedding_and_classes(
    digits: Glyphs,
    hidden: tuple[int, ...],
    activation: str,
    scaler: object,
    labels: list[str] | None,
) -> None:
    # GIVEN a fitted scaler + MLP pipeline (string labels, also a two-class one)
    x, y = features(digits, 300)
    if labels:
        x, y = x[np.isin(y, ["0", "1"])], np.where(y[np.isin(y, ["0", "1"])] == "0", *labels)
    model = Pipeline(
        [
            ("scale", scaler),
            ("mlp", MLPClassifier(hidden, activation=activation, max_iter=50, random_state=0)),
        ]
    )
    model.fit(x, y)
    classes = [str(c) for c in model.classes_]
    # WHEN it is exported
    outputs, metadata = run_onnx(sklearn_to_onnx(model, classes=classes), x)
    # THEN both outputs match the native model and the labels travel in the metadata
    assert set(outputs) == {"probabilities", "embedding"}
    assert json.loads(metadata["classes"]) == classes
    assert outputs["probabilities"].shape == (len(x), len(classes))
    assert np.abs(outputs["probabilities"] - model.predict_proba(x)).max() < 1e-4
    native_embedding = mlp_embedding(model, x)
    assert outputs["embedding"].shape == (len(x), hidden[-1])
    assert np.abs(outputs["embedding"] - native_embedding).max() < 1e-3


@pytest.mark.slow
def test_keras_dense_export_matches_keras(digits: Glyphs) -> None:
    from training.export import keras_to_onnx

    x, y = features(digits, 400)
    model = fit_keras("dense", x, y, FitOptions(epochs=2))
    outputs, metadata = run_onnx(
        keras_to_onnx(model.native, classes=model.classes, family="dense"), x
    )
    assert json.loads(metadata["classes"]) == [str(i) for i in range(10)]
    assert outputs["embedding"].shape == (400, 32)
    assert np.abs(outputs["probabilities"] - model.probabilities(x)).max() < 1e-4
    assert np.abs(outputs["embedding"] - model.embedding(x)).max() < 1e-3
    assert len(model.history["val_loss"]) == model.epochs_run <= 2
    # where it ran is recorded: this machine has no GPU
    assert model.params["device"] == "CPU"
