"""The JSON error shape every API function answers with, and the handlers that produce it.

`{"error": {"code": ..., "message": ...}}` for every refusal: `InvalidInput` is a 400 (or the
status its code names), the not-found exceptions a function names are a 404, a route that is
not there a 404 `no_such_route`, and anything else a 500 `internal_error` that says nothing of
the fault (the traceback goes to the logs, with the request id). Refusals are logged with their
code and path, never with the body (it may be a user's handwriting).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from http import HTTPStatus

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response

from tessera.errors import InvalidInput

# Codes that mean a status of their own rather than a plain 400.
STATUS_BY_CODE = {
    "body_too_large": HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
    "unsupported_media_type": HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
}


def install_error_handlers(
    app: APIGatewayRestResolver,
    logger: Logger,
    *,
    not_found: Mapping[type[Exception], str | None],
    route_hint: str = "",
) -> None:
    """Answer every error `app` raises in the JSON shape. `not_found` maps each exception type
    that means "not there" to its code (None: an `InvalidInput` that carries its own)."""

    def error(status: HTTPStatus, code: str, message: str) -> Response[str]:
        if status < HTTPStatus.INTERNAL_SERVER_ERROR:
            logger.info(
                "request refused",
                extra={"status": int(status), "code": code, "path": app.current_event.path},
            )
        return Response(
            status_code=status,
            content_type="application/json",
            body=json.dumps({"error": {"code": code, "message": message}}),
            headers={"X-Content-Type-Options": "nosniff"},
        )

    def invalid_input(exception: InvalidInput) -> Response[str]:
        status = STATUS_BY_CODE.get(exception.code, HTTPStatus.BAD_REQUEST)
        return error(status, exception.code, exception.message)

    app.exception_handler(InvalidInput)(invalid_input)
    for kind, code in not_found.items():

        def missing(exception: Exception, code: str | None = code) -> Response[str]:
            if code is None and isinstance(exception, InvalidInput):
                return error(HTTPStatus.NOT_FOUND, exception.code, exception.message)
            return error(HTTPStatus.NOT_FOUND, code or "not_found", str(exception))

        app.exception_handler(kind)(missing)

    def no_route(_exception: Exception) -> Response[str]:
        event = app.current_event
        message = f"there is no {event.http_method} {event.path}{route_hint}"
        return error(HTTPStatus.NOT_FOUND, "no_such_route", message)

    app.not_found(no_route)

    def internal(_exception: Exception) -> Response[str]:
        # Only our own faults get here (client input is refused above): log it, say nothing.
        logger.exception("unhandled error")
        return error(
            HTTPStatus.INTERNAL_SERVER_ERROR,
            "internal_error",
            "the function failed; the request id is in the logs",
        )

    app.exception_handler(Exception)(internal)
