"""POST /predict, GET /models and GET /health through the real handler, and the champion cache."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from functions.inference import handler as inference
from tessera.imaging.decode import decode_image, encode_png
from tessera.registry import ModelRegistry
from tessera.serving.cache import ModelCache
from tessera.serving.model import ModelNotFound
from tests.serving.conftest import (
    MODEL,
    NEXT_VERSION,
    VERSION,
    Call,
    Served,
    probabilities_of,
    put_version,
)
from tests.serving.model_builder import model_inputs


def _png(served: Served, index: int) -> bytes:
    return encode_png(served.trained.tiles[index])


def test_a_base64_png_gets_the_models_label_and_top_k(served: Served, call: Call) -> None:
    # GIVEN a tile of a digit the model was trained on
    png = _png(served, 5)
    expected = probabilities_of(served.trained, model_inputs(decode_image(png)[np.newaxis]))[0]

    # WHEN it is posted as base64 JSON
    reply = call(
        "POST", "/predict", json_body={"image": base64.b64encode(png).decode(), "top_k": 4}
    )

    # THEN the answer is the model's own label, with four probabilities in descending order
    assert reply.status == 200
    assert reply.body["model"] == MODEL and reply.body["version"] == VERSION
    assert reply.body["label"] == served.trained.classes[int(np.argmax(expected))]
    top = reply.body["top"]
    assert len(top) == 4
    assert [t["probability"] for t in top] == sorted((t["probability"] for t in top), reverse=True)
    assert top[0]["probability"] == pytest.approx(float(expected.max()), abs=1e-5)
    assert reply.body["predictions"][0]["label"] == reply.body["label"]


def test_a_raw_png_body_is_answered_like_the_json_one(served: Served, call: Call) -> None:
    png = _png(served, 7)
    as_json = call("POST", "/predict", json_body={"image": base64.b64encode(png).decode()})
    raw = call("POST", "/predict?top_k=2", body=png, content_type="image/png")
    assert raw.status == 200
    assert raw.body["label"] == as_json.body["label"]
    assert len(raw.body["top"]) == 2


def test_inputs_true_returns_what_the_model_saw_and_only_when_asked(
    served: Served, call: Call
) -> None:
    png = _png(served, 5)
    seen = model_inputs(decode_image(png)[np.newaxis])[0]
    image = base64.b64encode(png).decode()
    asked = call("POST", "/console/predict", json_body={"image": image, "inputs": True})
    by_query = call("POST", "/predict?inputs=true", body=png, content_type="image/png")
    plain = call("POST", "/predict", json_body={"image": image})
    assert asked.status == by_query.status == plain.status == 200
    assert len(asked.body["inputs"]) == 1 and len(asked.body["inputs"][0]) == 784
    np.testing.assert_allclose(asked.body["inputs"][0], seen, atol=5e-4)
    assert by_query.body["inputs"] == asked.body["inputs"]
    assert "inputs" not in plain.body
    refused = call("POST", "/predict", json_body={"image": image, "inputs": "yes"})
    assert refused.status == 400 and "inputs" in refused.body["error"]["message"]


def test_pixels_flat_or_as_rows_give_the_same_answer(served: Served, call: Call) -> None:
    row = np.rint(served.trained.x[3] * 255).astype(int)
    flat = call("POST", "/predict", json_body={"pixels": row.tolist()})
    rows = call("POST", "/predict", json_body={"pixels": row.reshape(28, 28).tolist()})
    assert flat.status == rows.status == 200
    assert (
        flat.body["label"]
        == rows.body["label"]
        == served.trained.mlp.predict(served.trained.x[3:4])[0]
    )


def test_instances_are_predicted_as_one_batch(served: Served, call: Call) -> None:
    instances: list[dict[str, Any]] = [
        {"image": base64.b64encode(_png(served, i)).decode()} for i in range(6)
    ]
    instances.append({"pixels": [0] * 783 + [255]})
    reply = call("POST", "/predict", json_body={"instances": instances})
    assert reply.status == 200
    assert len(reply.body["predictions"]) == 7
    assert "label" not in reply.body  # a batch answer is a list only
    decoded = np.stack([decode_image(_png(served, i)) for i in range(6)])
    expected = served.trained.mlp.predict(model_inputs(decoded))
    assert [p["label"] for p in reply.body["predictions"][:6]] == list(expected)


def test_a_pinned_version_answers_instead_of_the_champion(served: Served, call: Call) -> None:
    put_version(served.registry, NEXT_VERSION, served.trained, model=served.model)
    body = {"pixels": [0] * 784, "version": NEXT_VERSION}
    assert call("POST", "/predict", json_body=body).body["version"] == NEXT_VERSION
    assert call("POST", "/predict", json_body={"pixels": [0] * 784}).body["version"] == VERSION


@pytest.mark.parametrize(
    "options",
    [{"model": "letters"}, {"version": "20300101T000000Z-ffffff"}, {"version": "../../secrets"}],
)
def test_an_unknown_model_or_version_is_a_404_that_names_it(
    served: Served, call: Call, options: dict[str, str]
) -> None:
    reply = call("POST", "/predict", json_body={"pixels": [0] * 784, **options})
    assert reply.status == 404
    assert reply.body["error"]["code"] == "model_not_found"
    assert next(iter(options.values())) in reply.body["error"]["message"]


def test_models_lists_versions_metrics_and_the_champion(served: Served, call: Call) -> None:
    put_version(
        served.registry,
        NEXT_VERSION,
        served.trained,
        model=served.model,
        with_index=False,
        metrics={"accuracy": 0.95},
    )
    reply = call("GET", "/models")
    assert reply.status == 200
    (model,) = reply.body["models"]
    assert model["name"] == MODEL and model["champion"] == VERSION
    versions = {v["version"]: v for v in model["versions"]}
    assert versions[VERSION]["champion"] is True and versions[NEXT_VERSION]["champion"] is False
    assert versions[NEXT_VERSION]["metrics"] == {"accuracy": 0.95}
    assert versions[VERSION]["similarity"] is True and versions[NEXT_VERSION]["similarity"] is False
    assert [v["version"] for v in model["versions"]] == [NEXT_VERSION, VERSION]


def test_health_and_unknown_routes(served: Served, call: Call) -> None:
    assert call("GET", "/health").body == {"status": "ok"}
    missing = call("GET", "/nothing-here")
    assert missing.status == 404 and missing.body["error"]["code"] == "no_such_route"
    wrong_method = call("GET", "/predict")
    assert wrong_method.status == 404 and "GET /predict" in wrong_method.body["error"]["message"]


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@dataclass
class _CountingRegistry(ModelRegistry):
    """The real registry, counting its reads of the bucket."""

    champion_reads: int = 0
    model_reads: int = 0

    def champion(self) -> dict[str, Any] | None:
        self.champion_reads += 1
        return super().champion()

    def model_bytes(self, version: str) -> bytes:
        self.model_reads += 1
        return super().model_bytes(version)


def test_a_promotion_is_picked_up_after_the_ttl_without_reloading_per_request(
    served: Served,
) -> None:
    # GIVEN a cache following the champion with a 30 s TTL
    registry = _CountingRegistry(served.store, MODEL)
    clock = _Clock()
    cache = ModelCache(registry=registry, ttl_seconds=30, clock=clock)
    first = cache.get()
    for _ in range(50):
        assert cache.get() is first
    assert (registry.champion_reads, registry.model_reads) == (1, 1)

    # WHEN another version is promoted
    put_version(served.registry, NEXT_VERSION, served.trained, model=served.model)
    served.registry.promote(NEXT_VERSION, accuracy=0.95, evaluation={})

    # THEN requests inside the TTL keep the old champion, the first one after it switches
    clock.now = 29.0
    assert cache.get().version == VERSION
    clock.now = 30.0
    assert cache.get().version == NEXT_VERSION
    assert (registry.champion_reads, registry.model_reads) == (2, 2)
    # and the previous version's session is still cached for callers that pin it
    assert cache.get(VERSION) is first


def test_a_model_without_a_champion_is_remembered_for_the_ttl(served: Served) -> None:
    registry = _CountingRegistry(served.store, "letters")
    clock = _Clock()
    cache = ModelCache(registry=registry, ttl_seconds=30, clock=clock)
    for _ in range(5):
        with pytest.raises(ModelNotFound):
            cache.get()
    assert registry.champion_reads == 1


def test_caller_chosen_model_names_keep_a_bounded_cache(served: Served, call: Call) -> None:
    # GIVEN a caller cycling through many model names that do not exist
    for index in range(3 * inference.MAX_CACHED_MODELS):
        reply = call("POST", "/predict", json_body={"pixels": [0] * 784, "model": f"m{index}"})
        assert reply.status == 404
    # THEN the function keeps only the most recent few, and the real model still answers
    assert len(inference._caches) == inference.MAX_CACHED_MODELS
    assert call("POST", "/predict", json_body={"pixels": [0] * 784}).status == 200
