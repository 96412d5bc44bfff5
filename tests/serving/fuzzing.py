"""What the schemathesis fuzz tests of the API functions share: docs/openapi.yaml narrowed to
one function's paths and served in-process by its handler, and the checks every answer keeps."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import schemathesis
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.schemas import BaseSchema
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from tests.serving.conftest import as_wsgi

DOCUMENT = Path(__file__).resolve().parents[2] / "docs" / "openapi.yaml"
# The answer to every request, valid or not: never a 5xx, and always as the document says.
RESPONSE_CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
CONTRACT_CHECKS = [*RESPONSE_CHECKS, negative_data_rejection]


def function_schema(
    paths: Iterable[str],
    handler: Callable[..., dict[str, Any]],
    function: str,
    *,
    examples: int,
) -> BaseSchema:
    """The document's `paths` only, answered by `handler` as `function`; `examples` per
    operation (TESSERA_FUZZ_EXAMPLES=1000 for a deeper run)."""
    schema = schemathesis.openapi.from_path(DOCUMENT)
    schema.config.generation.update(
        modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
        max_examples=int(os.environ.get("TESSERA_FUZZ_EXAMPLES", str(examples))),
        deterministic=True,
        # The API key and the sign-in are API Gateway's to check; the function never sees them.
        with_security_parameters=False,
    )
    narrowed = schema.include(path_regex="^(" + "|".join(re.escape(p) for p in paths) + ")$")
    narrowed.app = as_wsgi(handler, function)
    return narrowed
