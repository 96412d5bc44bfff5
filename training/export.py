"""Exporting fitted models to ONNX under the serving contract (see tessera.serving)."""

from __future__ import annotations

import json
from typing import Any

import onnx
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType

from tessera.dataset import VECTOR_LENGTH
from tessera.serving import INPUT_NAME, PROBABILITIES

TARGET_OPSET = 17


def _with_metadata(model: onnx.ModelProto, *, classes: list[str]) -> bytes:
    entry = model.metadata_props.add()
    entry.key = "classes"
    entry.value = json.dumps(classes)
    return model.SerializeToString()


def sklearn_to_onnx(model: Any, *, classes: list[str]) -> bytes:
    """A fitted scikit-learn classifier (pipeline) -> ONNX bytes with a plain probability tensor."""
    final = model.steps[-1][1] if hasattr(model, "steps") else model
    onnx_model = convert_sklearn(
        model,
        initial_types=[(INPUT_NAME, FloatTensorType([None, VECTOR_LENGTH]))],
        options={id(final): {"zipmap": False}},
        target_opset={"": TARGET_OPSET, "ai.onnx.ml": 3},
    )
    outputs = [output.name for output in onnx_model.graph.output]
    if PROBABILITIES not in outputs:
        raise ValueError(f"skl2onnx produced outputs {outputs}, expected {PROBABILITIES!r}")
    return _with_metadata(onnx_model, classes=classes)
