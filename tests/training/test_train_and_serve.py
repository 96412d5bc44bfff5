"""Rows in the bucket -> the training entry point -> champion -> the inference handler."""

from __future__ import annotations

import base64
import contextlib
import io
import json
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from functions.inference.handler import lambda_handler as inference_handler
from tessera.dataset import Row, write_row
from tessera.imaging.decode import decode_image
from tessera.imaging.normalize import normalize_tile, to_vector
from tessera.registry import ModelRegistry
from tessera.storage import ObjectStore
from tessera_dev.local.pump import lambda_context
from tessera_dev.samples import Glyphs, render_sheet
from tests.conftest import BUCKET, load_event, moto_bucket
from training.train import main as train_main

CONTEXT = lambda_context("inference")


def rendered_vector(digits: Glyphs, index: int) -> np.ndarray:
    """A digit the way the pipeline sees it: drawn on paper, decoded, normalized."""
    normalized = normalize_tile(decode_image(render_sheet(digits.ink[index : index + 1], cols=1)))
    assert normalized is not None
    return to_vector(normalized)


def fill_dataset(store: ObjectStore, digits: Glyphs, name: str, count: int = 600) -> None:
    for index in range(count):
        write_row(
            store,
            Row(
                pixels=rendered_vector(digits, index),
                label=str(digits.labels[index]),
                source_key=f"tiles/{name}/s/r{index:04d}.png",
                source_etag="e",
            ),
        )


def call(path: str, body: Any, *, method: str = "POST", raw: str | None = None) -> tuple[int, Any]:
    event = load_event("api_predict.json")
    event["path"] = path
    event["httpMethod"] = method
    event["body"] = raw if raw is not None else json.dumps(body)
    response = inference_handler(event, CONTEXT)
    return response["statusCode"], json.loads(response["body"])


@pytest.fixture(scope="module")
def trained(digits: Glyphs) -> Iterator[dict[str, Any]]:
    """One bucket and one trained model for the whole module: training is the slow part."""
    with moto_bucket() as store:
        fill_dataset(store, digits, "digits")
        output = io.StringIO()
        with contextlib.redirect_stdout(output):
            assert train_main(["--dataset", "digits", "--bucket", BUCKET]) == 0
        yield {"store": store, **json.loads(output.getvalue().strip().splitlines()[-1])}


def test_training_registers_a_version_and_promotes_the_first_model(trained: dict[str, Any]) -> None:
    registry = ModelRegistry(trained["store"], "digits")
    assert trained["status"] == "succeeded" and trained["promoted"] is True
    assert trained["parity"]["passed"] is True
    assert trained["test_accuracy"] > 0.8
    assert registry.versions() == [trained["version"]]
    assert registry.champion()["version"] == trained["version"]  # type: ignore[index]


def test_predict_returns_the_label_of_an_image_and_the_model_version(
    trained: dict[str, Any], digits: Glyphs
) -> None:
    # GIVEN digits the model has not seen, each as a dark-on-light PNG
    held_back = range(len(digits.labels) - 30, len(digits.labels))
    answers = []
    for index in held_back:
        png = render_sheet(digits.ink[index : index + 1], cols=1)
        # WHEN each is posted
        status, body = call("/predict", {"image": base64.b64encode(png).decode(), "top_k": 2})
        # THEN the answer names the model and version and gives ranked probabilities
        assert status == 200
        assert body["model"] == "digits" and body["version"] == trained["version"]
        prediction = body["predictions"][0]
        assert len(prediction["top"]) == 2
        assert prediction["top"][0]["probability"] >= prediction["top"][1]["probability"]
        assert prediction["top"][0]["label"] == prediction["label"]
        answers.append(prediction["label"])
    # AND most answers are right (600 training rows of 8x8 digits: not a perfect model)
    assert np.mean(np.asarray(answers) == digits.labels[list(held_back)]) >= 0.8


def test_a_batch_of_pixels_is_predicted_in_one_call(
    trained: dict[str, Any], digits: Glyphs
) -> None:
    rows = []
    for index in range(len(digits.labels) - 20, len(digits.labels)):
        rows.append({"pixels": rendered_vector(digits, index).tolist()})
    status, body = call("/predict", {"instances": rows})
    assert status == 200
    labels = [p["label"] for p in body["predictions"]]
    assert np.mean(np.asarray(labels) == digits.labels[-20:]) >= 0.8


@pytest.mark.parametrize(
    ("raw", "status", "code"),
    [
        ("{not json", 400, "invalid_json"),
        (json.dumps({"pixels": [1, 2]}), 400, "bad_pixels"),
        (json.dumps({"pixels": [0] * 784, "model": "nope"}), 404, "model_not_found"),
        (
            json.dumps({"pixels": [0] * 784, "version": "20200101T000000Z-abcdef01"}),
            404,
            "model_not_found",
        ),
        (json.dumps({"pixels": [0] * 784, "top_k": 0}), 400, "bad_request"),
        (json.dumps({"pixels": [0] * 784, "model": "../x"}), 400, "bad_request"),
    ],
)
def test_client_errors_are_4xx_with_a_json_reason(
    trained: dict[str, Any], raw: str, status: int, code: str
) -> None:
    got_status, body = call("/predict", None, raw=raw)
    assert got_status == status
    assert body["error"]["code"] == code and body["error"]["message"]


def test_health(trained: dict[str, Any]) -> None:
    assert call("/health", None, method="GET", raw="") == (200, {"status": "ok"})


def test_training_refuses_a_single_class_and_leaves_the_champion_alone(
    store: ObjectStore, digits: Glyphs, capsys: pytest.CaptureFixture[str]
) -> None:
    ones = Glyphs(ink=digits.ink[digits.labels == "1"], labels=digits.labels[digits.labels == "1"])
    fill_dataset(store, ones, "ones", count=20)
    assert train_main(["--dataset", "ones", "--bucket", BUCKET]) == 1
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["status"] == "failed" and "one class" in result["error"]
    assert ModelRegistry(store, "ones").champion() is None


def test_training_an_empty_dataset_fails_with_its_name(
    store: ObjectStore, capsys: pytest.CaptureFixture[str]
) -> None:
    assert train_main(["--dataset", "void", "--bucket", BUCKET]) == 1
    assert "'void' is empty" in capsys.readouterr().out
