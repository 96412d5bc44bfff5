"""Fuzzing the HTTP API from its OpenAPI document (docs/openapi.yaml) with schemathesis: valid
and invalid requests alike never get a 5xx, every answer has a documented status, content type
and body shape, and requests that break the schema are refused with a 4xx.

Requests reach the real handler as the REST proxy events API Gateway sends (built by the local
API's `proxy_event`), through a WSGI adapter rather than a socket: the function is what is under
test, and any HTTP method schemathesis tries reaches it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from functions.inference.handler import lambda_handler
from tessera.config import PIPELINE
from tests.serving.conftest import Served, as_wsgi
from tests.sheets.free_pages import font_digits, free_page

DOCUMENT = Path(__file__).resolve().parents[2] / "docs" / "openapi.yaml"
# POST /train is not the inference function's: API Gateway starts Step Functions directly.
INFERENCE_PATHS = ("/health", "/models", "/predict", "/similar")

schema = schemathesis.openapi.from_path(DOCUMENT)
schema.config.generation.update(
    modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
    # Enough to keep the suite fast; TESSERA_FUZZ_EXAMPLES=1000 for a deeper run.
    max_examples=int(os.environ.get("TESSERA_FUZZ_EXAMPLES", "40")),
    deterministic=True,
    # The API key is API Gateway's to check; the function (and the local API) never see it.
    with_security_parameters=False,
)
schema = schema.include(path_regex="^(" + "|".join(INFERENCE_PATHS) + ")$")  # type: ignore[assignment]


schema.app = as_wsgi(lambda_handler, "inference")


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
        checks=[
            not_a_server_error,
            status_code_conformance,
            content_type_conformance,
            response_schema_conformance,
            negative_data_rejection,
        ],
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
        checks=[
            not_a_server_error,
            status_code_conformance,
            content_type_conformance,
            response_schema_conformance,
        ],
    )
