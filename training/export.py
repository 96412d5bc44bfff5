"""Exporting fitted models to ONNX under the serving contract (see tessera.serving).

Every model gets input `input` float32 (n, 784), output `probabilities` float32 (n, K), a second
output `embedding` float32 (n, D) holding the penultimate layer's activations, and metadata
`classes` (a JSON list of labels in probability order).
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import onnx
from numpy.typing import NDArray
from onnx import helper, numpy_helper
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType

from tessera.config import VECTOR_LENGTH
from tessera.serving.model import EMBEDDING, INPUT_NAME, PROBABILITIES

TARGET_OPSET = 17
_ACTIVATIONS = {"relu": "Relu", "tanh": "Tanh", "logistic": "Sigmoid", "identity": "Identity"}


def _with_metadata(model: onnx.ModelProto, *, classes: list[str], family: str) -> bytes:
    for key, value in (("classes", json.dumps(classes)), ("family", family)):
        entry = model.metadata_props.add()
        entry.key = key
        entry.value = value
    onnx.checker.check_model(model)
    serialized: bytes = model.SerializeToString()
    return serialized


def _check_outputs(model: onnx.ModelProto, producer: str) -> None:
    outputs = [output.name for output in model.graph.output]
    missing = {PROBABILITIES, EMBEDDING} - set(outputs)
    if missing:
        raise ValueError(f"{producer} produced outputs {outputs}, missing {sorted(missing)}")


def split_mlp_pipeline(model: Any) -> tuple[Any | None, Any]:
    """(scaler or None, MLPClassifier) of a fitted pipeline or bare classifier."""
    if hasattr(model, "steps"):
        steps = [step for _, step in model.steps if step not in (None, "passthrough")]
        scaler = steps[0] if len(steps) > 1 else None
        return scaler, steps[-1]
    return None, model


def mlp_embedding(model: Any, x: NDArray[np.float32]) -> NDArray[np.float32]:
    """The native penultimate-layer activations, computed the way MLPClassifier computes them."""
    from sklearn.neural_network._base import ACTIVATIONS

    scaler, mlp = split_mlp_pipeline(model)
    hidden = np.asarray(scaler.transform(x) if scaler is not None else x, dtype=np.float64)
    for weights, bias in zip(mlp.coefs_[:-1], mlp.intercepts_[:-1], strict=True):
        hidden = hidden @ weights + bias
        ACTIVATIONS[mlp.activation](hidden)
    return hidden.astype(np.float32)


def sklearn_to_onnx(model: Any, *, classes: list[str]) -> bytes:
    """A fitted scaler + MLPClassifier pipeline -> ONNX with probabilities and the embedding.

    skl2onnx converts the pipeline (no ZipMap, so `probabilities` is a plain tensor); the
    embedding is appended as our own nodes from the same `input`, because skl2onnx does not
    expose the hidden layer.
    """
    scaler, mlp = split_mlp_pipeline(model)
    onnx_model = convert_sklearn(
        model,
        initial_types=[(INPUT_NAME, FloatTensorType([None, VECTOR_LENGTH]))],
        options={id(mlp): {"zipmap": False}},
        target_opset={"": TARGET_OPSET, "ai.onnx.ml": 3},
    )
    graph = onnx_model.graph
    current = INPUT_NAME
    if scaler is not None:
        # with_mean/with_std off leave mean_/scale_ as None: those steps are the identity.
        mean_ = getattr(scaler, "mean_", None)
        scale_ = getattr(scaler, "scale_", None)
        mean = np.zeros(VECTOR_LENGTH, np.float32) if mean_ is None else mean_.astype(np.float32)
        scale = np.ones(VECTOR_LENGTH, np.float32) if scale_ is None else scale_.astype(np.float32)
        graph.initializer.extend(
            [
                numpy_helper.from_array(mean, "embedding_scaler_mean"),
                numpy_helper.from_array(scale, "embedding_scaler_scale"),
            ]
        )
        graph.node.extend(
            [
                helper.make_node("Sub", [current, "embedding_scaler_mean"], ["embedding_centred"]),
                helper.make_node(
                    "Div", ["embedding_centred", "embedding_scaler_scale"], ["embedding_scaled"]
                ),
            ]
        )
        current = "embedding_scaled"
    layers = list(zip(mlp.coefs_[:-1], mlp.intercepts_[:-1], strict=True))
    for index, (weights, bias) in enumerate(layers):
        last = index == len(layers) - 1
        names = [f"embedding_w{index}", f"embedding_b{index}"]
        graph.initializer.extend(
            [
                numpy_helper.from_array(weights.astype(np.float32), names[0]),
                numpy_helper.from_array(bias.astype(np.float32), names[1]),
            ]
        )
        output = EMBEDDING if last else f"embedding_h{index}"
        graph.node.extend(
            [
                helper.make_node("MatMul", [current, names[0]], [f"embedding_mm{index}"]),
                helper.make_node(
                    "Add", [f"embedding_mm{index}", names[1]], [f"embedding_z{index}"]
                ),
                helper.make_node(_ACTIVATIONS[mlp.activation], [f"embedding_z{index}"], [output]),
            ]
        )
        current = output
    graph.output.append(
        helper.make_tensor_value_info(
            EMBEDDING, onnx.TensorProto.FLOAT, [None, int(mlp.coefs_[-2].shape[1])]
        )
    )
    # skl2onnx also emits the predicted label; serving reads only the contract's outputs.
    for output in list(graph.output):
        if output.name not in (PROBABILITIES, EMBEDDING):
            graph.output.remove(output)
    _check_outputs(onnx_model, "skl2onnx")
    return _with_metadata(onnx_model, classes=classes, family="mlp")


def keras_to_onnx(model: Any, *, classes: list[str], family: str) -> bytes:
    """A two-output Keras model (probabilities, embedding) taking (n, 784) -> ONNX.

    tf2onnx's `from_keras` fails on Keras 3; a `tf.function` with an explicit input signature
    converts cleanly, and its dict keys become the graph's output names.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf
    import tf2onnx

    signature = [tf.TensorSpec((None, VECTOR_LENGTH), tf.float32, name=INPUT_NAME)]

    @tf.function(input_signature=signature)  # type: ignore[untyped-decorator]
    def serve(x: Any) -> dict[str, Any]:
        probabilities, embedding = model(x, training=False)
        return {PROBABILITIES: probabilities, EMBEDDING: embedding}

    onnx_model, _ = tf2onnx.convert.from_function(
        serve, input_signature=signature, opset=TARGET_OPSET
    )
    _check_outputs(onnx_model, "tf2onnx")
    return _with_metadata(onnx_model, classes=classes, family=family)
