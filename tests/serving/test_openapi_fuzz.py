"""Fuzzing the HTTP API from its OpenAPI document (docs/openapi.yaml) with schemathesis: valid
and invalid requests alike never get a 5xx, every answer has a documented status, content type
and body shape, and requests that break the schema are refused with a 4xx.

Requests reach the real handler as the REST proxy events API Gateway sends (built by the local
API's `proxy_event`), through a WSGI adapter rather than a socket: the function is what is under
test, and any HTTP method schemathesis tries reaches it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis

from functions.inference.handler import lambda_handler
from tessera.config import PIPELINE
from tests.serving.conftest import Served
from tests.serving.fuzzing import CONTRACT_CHECKS, RESPONSE_CHECKS, function_schema
from tests.sheets.free_pages import font_digits, free_page

# POST /train is not the inference function's: API Gateway starts Step Functions directly.
INFERENCE_PATHS = ("/health", "/models", "/predict", "/similar")

schema = function_schema(INFERENCE_PATHS, lambda_handler, "inference", examples=40)


@pytest.fixture(scope="module")
def bucket(served_once: Served) -> Iterator[Served]:
    yield served_once


def test_the_document_describes_every_inference_route() -> None:
    documented = {
        (method.upper(), path)
        for path, item in schema.raw_schema["paths"].items()
        for method in item
        if method in ("get", "post")
    }
    assert {(route.method, route.path) for route in PIPELINE.routes} <= documented


@schema.parametrize()
def test_the_api_keeps_its_documented_contract(
    case: schemathesis.Case[Any], bucket: Served
) -> None:
    case.call_and_validate(
        checks=CONTRACT_CHECKS,
        timeout=30,
    )


def _page_png(lines: list[int]) -> bytes:
    return free_page(*font_digits(sum(lines) or 1), lines, seed=3).png()


@pytest.mark.parametrize(
    ("path", "lines", "status"),
    [
        ("/predict", [6, 6], 200),
        ("/predict", [1], 200),
        ("/predict", [], 400),
        ("/similar", [6, 6], 200),
    ],
    ids=["predict-page", "predict-one-symbol", "predict-blank-page", "similar-page"],
)
def test_pages_are_answered_in_the_documented_shape(
    bucket: Served, path: str, lines: list[int], status: int
) -> None:
    # GIVEN a photo-sized page of hand-placed symbols (or a blank one), as a raw PNG body
    case = schema[path]["POST"].Case(body=_page_png(lines), media_type="image/png")
    # WHEN it is sent through the handler
    response = case.call(timeout=30)
    # THEN the answer has the status expected and keeps to the document
    assert response.status_code == status, response.text
    case.validate_response(
        response,
        checks=RESPONSE_CHECKS,
    )
