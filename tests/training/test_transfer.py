"""The transfer family: a champion's embedding as features, a new head for classes the base
never saw, one ONNX graph under the serving contract, lineage recorded; and every way a base
can be unusable ends in a clear failure with the champion untouched."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import onnx
import pytest
from numpy.typing import NDArray
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier

from tessera.dataset import Row, write_row
from tessera.registry import ModelRegistry
from tessera.serving.model import OnnxClassifier
from tessera.storage import ObjectStore
from tests.serving.model_builder import (
    HIDDEN,
    digit_tiles,
    embeddings_npz,
    hidden_layer,
    mlp_to_onnx,
    model_inputs,
)
from tests.training.test_train_job import status, train

BASE_VERSION = "20260101T000000Z-baseba5e"
OLD = ("0", "1", "2", "3", "4")
NEW = ("5", "6", "7", "8", "9")


@pytest.fixture(scope="module")
def digits_split() -> dict[str, Any]:
    tiles, labels = digit_tiles(1797)
    x = model_inputs(tiles)
    return {"x": x, "labels": labels}


def put_base(
    store: ObjectStore,
    digits_split: dict[str, Any],
    *,
    sources: list[str] | None = None,
    model: bytes | None = None,
) -> None:
    """A champion 'base' trained on the digits 0-4 only, with its embedding index."""
    x, labels = digits_split["x"], digits_split["labels"]
    old = np.isin(labels, OLD)
    mlp = MLPClassifier(hidden_layer_sizes=(HIDDEN,), max_iter=200, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        mlp.fit(x[old], labels[old])
    registry = ModelRegistry(store, "base")
    onnx_bytes = model if model is not None else mlp_to_onnx(mlp, [str(c) for c in mlp.classes_])
    registry.put_artifact(
        BASE_VERSION,
        "embeddings.npz",
        embeddings_npz(
            hidden_layer(mlp, x[old]),
            labels[old],
            [*(sources or []), *(f"tiles/old/s/{i}.png" for i in range(int(old.sum())))][
                : int(old.sum())
            ],
        ),
        "application/x-npz",
    )
    registry.put_artifact(BASE_VERSION, "model.onnx", onnx_bytes, "application/octet-stream")
    registry.promote(BASE_VERSION, accuracy=0.9, evaluation={})


def fill_new(store: ObjectStore, digits_split: dict[str, Any], per_class: int) -> list[str]:
    """`per_class` rows of each new digit under dataset 'letters'; their tile keys."""
    x, labels = digits_split["x"], digits_split["labels"]
    keys = []
    for label in NEW:
        for index in np.flatnonzero(labels == label)[:per_class]:
            key = f"tiles/letters/s{label}/{index}.png"
            pixels: NDArray[np.uint8] = np.rint(x[index] * 255).astype(np.uint8)
            write_row(store, Row(pixels=pixels, label=label, source_key=key, source_etag="e"))
            keys.append(key)
    return keys


def test_transfer_learns_new_classes_from_a_few_examples_in_one_onnx_graph(
    store: ObjectStore, digits_split: dict[str, Any]
) -> None:
    # GIVEN a base that knows 0-4 and 20 examples of each of 5-9
    put_base(store, digits_split)
    fill_new(store, digits_split, 20)
    # WHEN the transfer family trains on them
    code, result = train(
        "--dataset", "letters", "--family", "transfer", "--base-model", "base", "--run-id", "t1"
    )
    # THEN it succeeds, passes its parity gate and reads the new digits well
    assert code == 0, result
    assert result["family"] == "transfer" and result["parity"]["passed"] is True
    assert result["test_accuracy"] >= 0.8
    # AND its export is one graph under the serving contract, with the new classes and lineage
    registry = ModelRegistry(store, "letters")
    model = registry.model_bytes(result["version"])
    classifier = OnnxClassifier.from_bytes(model, name="letters", version=result["version"])
    assert classifier.classes == list(NEW) and classifier.has_embedding
    metadata = {p.key: p.value for p in onnx.load_from_string(model).metadata_props}
    assert metadata["base_model"] == "base" and metadata["base_version"] == BASE_VERSION
    config = store.get_json(f"models/letters/{result['version']}/config.json")
    assert config is not None
    assert config["params"]["base_model"] == "base"
    assert config["params"]["base_version"] == BASE_VERSION
    assert config["params"]["fine_tuned"] is False
    # AND the base's own champion is untouched
    assert ModelRegistry(store, "base").champion()["version"] == BASE_VERSION  # type: ignore[index]


def test_family_all_includes_transfer_when_a_base_is_given(
    store: ObjectStore, digits_split: dict[str, Any]
) -> None:
    put_base(store, digits_split)
    fill_new(store, digits_split, 20)
    code, result = train(
        "--dataset", "letters", "--family", "all", "--base-model", "base", "--epochs", "2"
    )
    assert code == 0, result
    assert "transfer" in {family["family"] for family in result["families"]}


@pytest.mark.parametrize(
    ("case", "code"),
    [
        ("no champion", "base_model_not_found"),
        ("no embedding output", "base_contract"),
        ("corrupt bytes", "base_unreadable"),
        ("trained on the test rows", "base_saw_test_rows"),
        ("no base named", "base_model_required"),
    ],
)
def test_an_unusable_base_fails_clearly_and_touches_no_champion(
    store: ObjectStore, digits_split: dict[str, Any], case: str, code: str
) -> None:
    # GIVEN new rows, and a base that cannot serve as one
    keys = fill_new(store, digits_split, 20)
    if case == "no embedding output":
        x, labels = digits_split["x"], digits_split["labels"]
        mlp = MLPClassifier(hidden_layer_sizes=(16,), max_iter=20, random_state=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            mlp.fit(x[:200], labels[:200])
        put_base(
            store,
            digits_split,
            model=mlp_to_onnx(mlp, [str(c) for c in mlp.classes_], with_embedding=False),
        )
    elif case == "corrupt bytes":
        put_base(store, digits_split, model=b"\x08\x01 not an onnx model")
    elif case == "trained on the test rows":
        put_base(store, digits_split, sources=keys)  # it saw every row, held-out ones too
    argv = ["--dataset", "letters", "--family", "transfer", "--run-id", "bad"]
    if case != "no base named":
        argv += ["--base-model", "base"]
    # WHEN it trains
    exit_code, result = train(*argv)
    # THEN it fails with a code naming the problem, records it, and no champion appears
    assert exit_code == 1
    assert result["code"] == code, result
    assert status(store, "bad")["status"] == "failed"
    assert ModelRegistry(store, "letters").champion() is None
