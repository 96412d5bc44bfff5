"""The training job's real output serves /similar: sheets in, training as a process, then the
nearest training tiles of a query come back over the local HTTP API with their tile keys."""

from __future__ import annotations

import base64
import json
import urllib.request
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from tessera_dev.local.runtime import LocalRuntime
from tessera_dev.samples import Glyphs, render_sheet
from tests.conftest import digits_sheet

pytestmark = [pytest.mark.slow, pytest.mark.e2e]
LABELS = ("0", "1", "7")


def _post(url: str, body: dict[str, Any]) -> tuple[int, Any]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"content-type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.status, json.loads(response.read())


@pytest.fixture(scope="module")
def trained(digits: Glyphs) -> Iterator[tuple[LocalRuntime, dict[str, Any]]]:
    with LocalRuntime(bucket="tessera-similar") as runtime:
        s3 = runtime.client("s3")
        for label in LABELS:
            s3.put_object(
                Bucket=runtime.bucket,
                Key=f"incoming/train/digits/{label}/sheet-4x10.png",
                Body=digits_sheet(digits, label, 40),
            )
        assert runtime.wait_until_idle(timeout=120)
        result = runtime.train(["digits"])
        assert result["status"] == "succeeded", result
        yield runtime, result


def test_similar_returns_training_tiles_of_the_same_digit(
    trained: tuple[LocalRuntime, dict[str, Any]], digits: Glyphs
) -> None:
    runtime, result = trained
    hits = []
    for label in LABELS:
        ink = digits.ink[digits.labels == label][50]
        png = render_sheet(ink[np.newaxis], cols=1)
        status, body = _post(
            runtime.api_url + "/similar", {"image": base64.b64encode(png).decode(), "k": 5}
        )
        assert status == 200 and body["version"] == result["version"]
        neighbours = body["neighbours"]
        assert len(neighbours) == 5
        assert all(n["source"].startswith("tiles/digits/") for n in neighbours)
        assert [n["score"] for n in neighbours] == sorted(
            (n["score"] for n in neighbours), reverse=True
        )
        hits += [n["label"] == label for n in neighbours]
    # Nearest neighbours in the model's embedding space mostly share the query's digit.
    assert np.mean(hits) >= 0.8


def test_models_shows_the_trained_champion_with_similarity(
    trained: tuple[LocalRuntime, dict[str, Any]],
) -> None:
    runtime, result = trained
    with urllib.request.urlopen(runtime.api_url + "/models", timeout=30) as response:
        body = json.loads(response.read())
    (model,) = body["models"]
    assert model["champion"] == result["version"]
    (version,) = model["versions"]
    assert version["champion"] is True and version["similarity"] is True
    assert version["metrics"] is not None
