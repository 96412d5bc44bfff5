"""API request bodies become model inputs, or a clear InvalidInput."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest

from tessera.errors import InvalidInput
from tessera.imaging.decode import decode_image
from tessera.imaging.normalize import normalize_tile, to_vector
from tessera.serving.api_input import (
    PREDICT_OPTIONS,
    features_from_body,
    parse_request,
)
from tessera.serving.train_request import parse_train_request, parse_training
from tessera_dev.samples import render_sheet


def test_pixels_are_scaled_to_the_unit_range() -> None:
    x = features_from_body({"pixels": [255] * 784})
    assert x.shape == (1, 784) and x.dtype == np.float32 and x.max() == 1.0


def test_an_image_goes_through_the_same_normalization_as_vectorize(digits) -> None:  # type: ignore[no-untyped-def]
    png = render_sheet(digits.ink[:1], cols=1)
    x = features_from_body({"image": base64.b64encode(png).decode()})
    expected = normalize_tile(decode_image(png))
    assert expected is not None
    # Serving quantizes to the 0..255 bytes Vectorize stores, then scales like training does.
    assert np.array_equal(x[0], to_vector(expected).astype(np.float32) / np.float32(255.0))


def test_instances_make_a_batch() -> None:
    x = features_from_body({"instances": [{"pixels": [0] * 783 + [10]}] * 3})
    assert x.shape == (3, 784)


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ([], "bad_request"),
        ({}, "bad_request"),
        ({"image": "***"}, "bad_image"),
        ({"image": 12}, "bad_image"),
        ({"image": base64.b64encode(b"not an image").decode()}, "not_an_image"),
        ({"pixels": [1, 2, 3]}, "bad_pixels"),
        ({"pixels": "abc"}, "bad_pixels"),
        ({"pixels": [float("nan")] * 784}, "bad_pixels"),
        ({"pixels": [float("inf")] * 784}, "bad_pixels"),
        ({"pixels": [300] * 784}, "bad_pixels"),
        ({"pixels": [-1] * 784}, "bad_pixels"),
        ({"pixels": [True] * 784}, "bad_pixels"),
        ({"pixels": [0] * 784, "image": "aGk="}, "bad_request"),
        ({"instances": []}, "bad_request"),
        ({"instances": [{"pixels": [0] * 784}] * 1001}, "too_many_instances"),
        ({"instances": [1]}, "bad_request"),
    ],
)
def test_bad_bodies_are_refused_with_a_code(body: object, code: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        features_from_body(body)
    assert caught.value.code == code


@pytest.mark.parametrize("k", ["²", "①", "٣", "1" * 4301, "-1", "0", "101", "1.5", " ", "9" * 20])
@pytest.mark.parametrize(("option", "where"), [("top_k", "query"), ("top_k", "body")])
def test_a_bad_top_k_is_a_400_whatever_its_characters(k: str, option: str, where: str) -> None:
    # GIVEN top_k as a string that str.isdigit() may accept but int() refuses, or out of range
    query = {option: k} if where == "query" else None
    body = {"pixels": [0] * 784, **({option: k} if where == "body" else {})}
    # WHEN the request is parsed
    with pytest.raises(InvalidInput) as caught:
        parse_request(
            body=json.dumps(body),
            is_base64=False,
            content_type="application/json",
            query=query,
            options=PREDICT_OPTIONS,
            default_k=3,
        )
    # THEN it is a client error that names the option, never an unhandled exception
    assert caught.value.code == "bad_request" and option in caught.value.message


def test_a_top_k_of_ascii_digits_in_the_query_is_read() -> None:
    request = parse_request(
        body=json.dumps({"pixels": [0] * 784}),
        is_base64=False,
        content_type="application/json",
        query={"top_k": " 5 "},
        options=PREDICT_OPTIONS,
        default_k=3,
    )
    assert request.k == 5


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (None, ["digits"]),
        ("", ["digits"]),
        ("{}", ["digits"]),
        ('{"dataset": "letters"}', ["letters"]),
        ('{"datasets": ["a", "b.2"]}', ["a", "b.2"]),
    ],
)
def test_a_training_request_names_its_datasets(body: str | None, expected: list[str]) -> None:
    assert parse_train_request(body) == expected
    assert parse_training(body).search_workers == 0
    assert parse_training(body).family == "mlp"


def test_a_training_request_may_fan_its_search_out() -> None:
    request = parse_training('{"dataset": "digits", "search_workers": 8}')
    assert (request.datasets, request.search_workers) == (["digits"], 8)
    assert parse_training('{"family": "all", "search_workers": 2}').search_workers == 2


@pytest.mark.parametrize("family", ["mlp", "dense", "cnn", "cnn-strong", "all"])
def test_a_training_request_may_pick_the_family(family: str) -> None:
    assert parse_training(json.dumps({"dataset": "digits", "family": family})).family == family


@pytest.mark.parametrize(
    "body",
    [
        "null",
        "[]",
        '"digits"',
        "3",
        '{"datasets": []}',
        '{"datasets": [1]}',
        '{"dataset": "../../x"}',
        '{"dataset": "a", "datasets": ["b"]}',
        '{"datasets": ["a"], "epochs": 1}',
        '{"dataset": "a", "search_workers": 1}',
        '{"dataset": "a", "search_workers": 21}',
        '{"dataset": "a", "search_workers": true}',
        '{"dataset": "a", "search_workers": "4"}',
        '{"dataset": "a", "family": "transfer"}',
        '{"dataset": "a", "family": "CNN"}',
        '{"dataset": "a", "family": ["cnn"]}',
        '{"dataset": "a", "family": null}',
        '{"dataset": "a", "family": "cnn", "search_workers": 4}',
        "[" * 10_000 + "]" * 10_000,
        "{" * 20_000,
    ],
)
def test_a_bad_training_request_is_a_client_error(body: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_train_request(body)
    assert caught.value.code in {"bad_request", "invalid_json", "body_too_large"}
    assert "NoneType" not in caught.value.message
