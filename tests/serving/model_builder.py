"""Small ONNX models under the serving contract, built here so the inference tests do not wait
on the training package: a scikit-learn MLP fitted on the bundled digits, rewritten by hand as
an ONNX graph whose hidden layer is the `embedding` output."""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass

import numpy as np
import onnx
from numpy.typing import NDArray
from onnx import TensorProto, helper, numpy_helper
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier
from threadpoolctl import threadpool_limits

from tessera.imaging.normalize import normalize_tile, to_vector
from tessera.serving.similarity import encode_index
from tessera_dev.samples import sklearn_digits

HIDDEN = 32


@dataclass(frozen=True)
class TrainedDigits:
    """A fitted MLP, its training rows and the tiles (dark ink on paper) they came from."""

    mlp: MLPClassifier
    x: NDArray[np.float32]  # (n, 784) model inputs in [0, 1]
    labels: NDArray[np.str_]
    tiles: NDArray[np.float32]  # (n, 28, 28) paper-white tiles, as a camera would see them
    classes: list[str]


def digit_tiles(count: int = 600) -> tuple[NDArray[np.float32], NDArray[np.str_]]:
    """Sklearn's 8x8 digits, upsampled to 28x28 paper tiles (dark ink on white)."""
    glyphs = sklearn_digits()
    ink = glyphs.ink[:count]
    big = np.kron(ink, np.ones((3, 3), dtype=np.float32))  # 24x24
    tiles = np.ones((len(ink), 28, 28), dtype=np.float32)
    tiles[:, 2:26, 2:26] = 1.0 - big
    return tiles, glyphs.labels[:count]


def model_inputs(tiles: NDArray[np.float32]) -> NDArray[np.float32]:
    rows = []
    for tile in tiles:
        normalized = normalize_tile(tile)
        assert normalized is not None
        rows.append(to_vector(normalized).astype(np.float32) / 255.0)
    return np.stack(rows)


def train_digits(count: int = 600, *, seed: int = 0) -> TrainedDigits:
    tiles, labels = digit_tiles(count)
    x = model_inputs(tiles)
    mlp = MLPClassifier(hidden_layer_sizes=(HIDDEN,), max_iter=150, random_state=seed)
    # One BLAS thread: on a shared machine, threads fighting for cores make the fit 10x slower.
    with threadpool_limits(limits=1), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        mlp.fit(x, labels)
    return TrainedDigits(
        mlp=mlp, x=x, labels=labels, tiles=tiles, classes=[str(c) for c in mlp.classes_]
    )


def mlp_to_onnx(mlp: MLPClassifier, classes: list[str], *, with_embedding: bool = True) -> bytes:
    """input (n, 784) -> relu(x W1 + b1) = embedding -> softmax(h W2 + b2) = probabilities."""
    w1, w2 = (w.astype(np.float32) for w in mlp.coefs_)
    b1, b2 = (b.astype(np.float32) for b in mlp.intercepts_)
    nodes = [
        helper.make_node("Gemm", ["input", "W1", "B1"], ["pre_hidden"]),
        helper.make_node("Relu", ["pre_hidden"], ["embedding"]),
        helper.make_node("Gemm", ["embedding", "W2", "B2"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
    ]
    outputs = [
        helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, len(classes)])
    ]
    if with_embedding:
        outputs.append(
            helper.make_tensor_value_info("embedding", TensorProto.FLOAT, [None, HIDDEN])
        )
    graph = helper.make_graph(
        nodes,
        "digits_mlp",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, 784])],
        outputs,
        initializer=[
            numpy_helper.from_array(w1, "W1"),
            numpy_helper.from_array(b1, "B1"),
            numpy_helper.from_array(w2, "W2"),
            numpy_helper.from_array(b2, "B2"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    entry = model.metadata_props.add()
    entry.key = "classes"
    entry.value = json.dumps(classes)
    onnx.checker.check_model(model)
    serialized: bytes = model.SerializeToString()
    return serialized


def hidden_layer(mlp: MLPClassifier, x: NDArray[np.float32]) -> NDArray[np.float32]:
    w1, b1 = mlp.coefs_[0], mlp.intercepts_[0]
    hidden: NDArray[np.float32] = np.maximum(x @ w1 + b1, 0).astype(np.float32)
    return hidden


def embeddings_npz(
    embeddings: NDArray[np.float32], labels: NDArray[np.str_], sources: list[str]
) -> bytes:
    """The `embeddings.npz` training writes beside model.onnx."""
    return encode_index(embeddings, labels, sources)
