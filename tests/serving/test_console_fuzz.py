"""The console's routes fuzzed from docs/openapi.yaml with schemathesis, as the inference routes
are: valid and invalid requests alike never get a 5xx, and every answer keeps to the document."""

from __future__ import annotations

from typing import Any

import schemathesis

from functions.console.handler import lambda_handler
from tessera.config import PIPELINE
from tests.serving.conftest import Served
from tests.serving.fuzzing import CONTRACT_CHECKS, function_schema

# The console function's own routes (its /console/predict and the like are the inference
# function's and the workflow's, documented as the same path items as /predict and /train).
CONSOLE_PATHS = sorted({r.path for r in PIPELINE.console_routes if r.function == "console"})

schema = function_schema(CONSOLE_PATHS, lambda_handler, "console", examples=25)


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
        checks=CONTRACT_CHECKS,
        timeout=30,
    )
