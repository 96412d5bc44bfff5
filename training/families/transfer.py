"""The `transfer` family: a champion's features, a new head. People bring a few sheets of their
own symbols, not 60,000 examples; a model trained on digits already knows strokes.

The base is the champion's exported ONNX, not its Keras weights: every family exports the same
contract (`input` (n, 784) -> `probabilities`, `embedding`), so any champion, scikit-learn or
Keras, can be a base, and its features are computed exactly as serving computes them. The head
is a multinomial logistic regression on the standardized embedding, its strength picked on a
held-out part of the training rows. The base is not fine-tuned (`fine_tuned: false` in the
version's parameters): that would need its framework's weights, which an ONNX champion does not
carry; what a head alone reaches is measured by `tessera bench training` (seed-sheet column CV,
few-shot curve on digits a base never saw).
The export is one ONNX graph, base and head together, under the same contract and parity gate.
"""

from __future__ import annotations

import contextlib
import json
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from numpy.typing import NDArray
from onnx import helper, numpy_helper
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from tessera.names import validate_model_name
from tessera.registry import EMBEDDINGS_FILE, MODEL_FILE, ModelRegistry
from tessera.serving.model import EMBEDDING, PROBABILITIES, OnnxClassifier
from tessera.serving.similarity import EmbeddingIndex, IndexUnusable
from tessera.storage import ObjectMissing, ObjectStore
from training.errors import TrainingError
from training.families.base import FitOptions, FittedModel, Floats, Labels, validation_split
from training.progress import log

# Inverse regularization strengths tried for the head, weakest first.
HEAD_STRENGTHS = (0.01, 0.1, 1.0, 10.0)
_BATCH = 4096


@dataclass(frozen=True)
class BaseModel:
    """A champion to transfer from: its name, version, ONNX bytes, the session that computes
    its embedding (loaded once) and the tile keys it was trained on (from its embeddings.npz,
    for the leakage check)."""

    name: str
    version: str
    onnx: bytes
    session: OnnxClassifier = field(repr=False, compare=False)
    training_sources: frozenset[str] = frozenset()

    @property
    def classes(self) -> list[str]:
        return self.session.classes


@dataclass
class TransferModel:
    base: BaseModel
    scaler: StandardScaler
    head: LogisticRegression
    classes: list[str]

    def embed(self, x: Floats) -> Floats:
        return embed(self.base.session, x)

    def probabilities(self, x: Floats) -> Floats:
        features = self.scaler.transform(self.embed(x))
        return np.asarray(self.head.predict_proba(features), dtype=np.float32)


def load_base_model(store: ObjectStore, name: str) -> BaseModel:
    """A model's champion as a base, with the tile keys it was trained on; a clear error when
    there is no champion or its files cannot be read."""
    registry = ModelRegistry(store, validate_model_name(name))
    pointer = registry.champion()
    if pointer is None:
        raise TrainingError(
            "base_model_not_found", f"model {name!r} has no champion to transfer from"
        )
    version = str(pointer["version"])
    try:
        onnx_bytes = registry.model_bytes(version)
    except ObjectMissing:
        raise TrainingError(
            "base_unreadable", f"the champion {name}/{version} has no {MODEL_FILE}"
        ) from None
    sources: frozenset[str] = frozenset()
    with contextlib.suppress(ObjectMissing, IndexUnusable):
        index = EmbeddingIndex.from_npz(store.get(registry.key(version, EMBEDDINGS_FILE)).body)
        sources = frozenset(str(source) for source in index.sources)
    return BaseModel(
        name=name,
        version=version,
        onnx=onnx_bytes,
        session=base_session(name, version, onnx_bytes),
        training_sources=sources,
    )


def check_no_leakage(base: BaseModel, test_sources: NDArray[np.str_]) -> None:
    """A base trained on this run's held-out rows would make its accuracy a lie."""
    seen = sorted(base.training_sources & {str(source) for source in test_sources})
    if seen:
        raise TrainingError(
            "base_saw_test_rows",
            f"the base {base.name}/{base.version} was trained on {len(seen)} of this run's "
            f"held-out rows (e.g. {seen[0]}): its features would leak them into the evaluation",
        )


def embed(session: OnnxClassifier, x: Floats) -> Floats:
    parts = [session.embed(x[start : start + _BATCH]) for start in range(0, len(x), _BATCH)]
    return np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)


def base_session(name: str, version: str, model: bytes) -> OnnxClassifier:
    """The base under the serving contract, with an embedding to transfer, or a clear error."""
    try:
        session = OnnxClassifier.from_bytes(model, name=name, version=version)
    except ValueError as error:  # the contract's own check: inputs, outputs, classes
        raise TrainingError("base_contract", str(error)) from None
    except Exception as error:  # onnxruntime refuses damaged bytes with many exception types
        raise TrainingError(
            "base_unreadable", f"base model {name}/{version} cannot be loaded: {error}"
        ) from None
    if not session.has_embedding:
        raise TrainingError(
            "base_contract", f"base model {name}/{version} has no '{EMBEDDING}' output to transfer"
        )
    return session


def _head(strength: float, seed: int) -> LogisticRegression:
    return LogisticRegression(C=strength, max_iter=2000, random_state=seed)


def fit_transfer(x: Floats, y: Labels, options: FitOptions) -> FittedModel:
    if options.base is None:
        raise TrainingError("base_model_required", "the transfer family needs --base-model NAME")
    base: BaseModel = options.base
    started = time.perf_counter()
    session = base.session
    classes = [str(c) for c in np.unique(y)]
    x_fit, x_val, y_fit, y_val = validation_split(x, y, fraction=0.2, seed=options.seed)
    fit_features, val_features = embed(session, x_fit), embed(session, x_val)
    scaler = StandardScaler().fit(fit_features)
    history: dict[str, list[float]] = {"val_accuracy": [], "accuracy": []}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for strength in HEAD_STRENGTHS:
            head = _head(strength, options.seed).fit(scaler.transform(fit_features), y_fit)
            history["accuracy"].append(float(head.score(scaler.transform(fit_features), y_fit)))
            history["val_accuracy"].append(float(head.score(scaler.transform(val_features), y_val)))
        best = int(np.argmax(history["val_accuracy"]))
        strength = HEAD_STRENGTHS[best]
        log(
            f"transfer: head strengths {list(HEAD_STRENGTHS)} validation accuracy "
            f"{[round(a, 4) for a in history['val_accuracy']]}; C={strength}"
        )
        # The chosen head refitted on every training row.
        features = embed(session, x)
        scaler = StandardScaler().fit(features)
        head = _head(strength, options.seed).fit(scaler.transform(features), y)
    model = TransferModel(base=base, scaler=scaler, head=head, classes=classes)
    return FittedModel(
        family="transfer",
        classes=classes,
        native=model,
        probabilities=model.probabilities,
        embedding=model.embed,
        history=history,
        best_epoch=best + 1,
        epochs_run=len(HEAD_STRENGTHS),
        params={
            "base_model": base.name,
            "base_version": base.version,
            "base_classes": base.classes,
            "head": "multinomial logistic regression on the standardized embedding",
            "head_strength_C": strength,
            "head_strengths_tried": list(HEAD_STRENGTHS),
            "fine_tuned": False,
        },
        seconds=round(time.perf_counter() - started, 2),
    )


def _initializer(name: str, values: NDArray[Any]) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(values, dtype=np.float32), name=name)


def transfer_to_onnx(model: TransferModel) -> bytes:
    """The base graph with the head on its embedding: one model, the serving contract's outputs
    (the new `probabilities`, the base's `embedding`) and the new classes in its metadata."""
    graph_model = onnx.load_from_string(model.base.onnx)
    graph = graph_model.graph
    # The base's own probabilities become an internal tensor nothing reads (onnxruntime prunes
    # it); the name `probabilities` is the head's.
    renamed = f"base_{PROBABILITIES}"
    for node in graph.node:
        node.output[:] = [renamed if name == PROBABILITIES else name for name in node.output]
        node.input[:] = [renamed if name == PROBABILITIES else name for name in node.input]
    for output in list(graph.output):
        if output.name == PROBABILITIES:
            graph.output.remove(output)
    coefficients = np.asarray(model.head.coef_, dtype=np.float64)
    intercepts = np.asarray(model.head.intercept_, dtype=np.float64)
    if coefficients.shape[0] == 1:
        # Two classes: a logistic regression's one logit z gives softmax([-z/2, z/2]) =
        # [1 - sigmoid(z), sigmoid(z)], exactly its predict_proba.
        coefficients = np.concatenate([-coefficients / 2, coefficients / 2])
        intercepts = np.concatenate([-intercepts / 2, intercepts / 2])
    scale = np.where(model.scaler.scale_ == 0, 1.0, model.scaler.scale_)
    graph.initializer.extend(
        [
            _initializer("head_mean", model.scaler.mean_),
            _initializer("head_scale", scale),
            _initializer("head_weights", coefficients.T),
            _initializer("head_bias", intercepts),
        ]
    )
    graph.node.extend(
        [
            helper.make_node("Sub", [EMBEDDING, "head_mean"], ["head_centred"]),
            helper.make_node("Div", ["head_centred", "head_scale"], ["head_standardized"]),
            helper.make_node("MatMul", ["head_standardized", "head_weights"], ["head_product"]),
            helper.make_node("Add", ["head_product", "head_bias"], ["head_logits"]),
            helper.make_node("Softmax", ["head_logits"], [PROBABILITIES], axis=-1),
        ]
    )
    graph.output.insert(
        0,
        helper.make_tensor_value_info(
            PROBABILITIES, onnx.TensorProto.FLOAT, [None, len(model.classes)]
        ),
    )
    del graph_model.metadata_props[:]
    for key, value in (
        ("classes", json.dumps(model.classes)),
        ("family", "transfer"),
        ("base_model", model.base.name),
        ("base_version", model.base.version),
    ):
        entry = graph_model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(graph_model)
    serialized: bytes = graph_model.SerializeToString()
    return serialized
