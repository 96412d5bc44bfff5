"""The console's routes fuzzed from docs/openapi.yaml with schemathesis, as the inference routes
are: valid and invalid requests alike never get a 5xx, and every answer keeps to the document."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import schemathesis
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from functions.console.handler import lambda_handler
from tessera.config import PIPELINE
from tests.serving.conftest import Served, as_wsgi

DOCUMENT = Path(__file__).resolve().parents[2] / "docs" / "openapi.yaml"
# The console function's own routes (its /console/predict and the like are the inference
# function's and the workflow's, documented as the same path items as /predict and /train).
CONSOLE_PATHS = sorted({r.path for r in PIPELINE.console_routes if r.function == "console"})

schema = schemathesis.openapi.from_path(DOCUMENT)
schema.config.generation.update(
    modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
    max_examples=int(os.environ.get("TESSERA_FUZZ_EXAMPLES", "25")),
    deterministic=True,
    with_security_parameters=False,
)
schema = schema.include(  # type: ignore[assignment]
    path_regex="^("
    + "|".join(p.replace("{", r"\{").replace("}", r"\}") for p in CONSOLE_PATHS)
    + ")$"
)


schema.app = as_wsgi(lambda_handler, "console")


def test_the_document_describes_every_console_route() -> None:
    paths = schema.raw_schema["paths"]
    documented = set()
    for path, item in paths.items():
        if "$ref" in item:  # "#/paths/~1predict"
            item = paths[item["$ref"].rsplit("/", 1)[1].replace("~1", "/")]
        documented |= {(method.upper(), path) for method in item if method in ("get", "post")}
    assert {(route.method, route.path) for route in PIPELINE.console_routes} <= documented


@schema.parametrize()
def test_the_console_routes_keep_their_documented_contract(
    case: schemathesis.Case[Any], served_once: Served
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
