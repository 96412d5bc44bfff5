"""Console: the page people review and correct with, and the routes behind it.

    GET  /                           the console (static, no user data in it)
    GET  /console/{file}             its script and style
    GET  /sheets?dataset=&limit=&after=  a page of the dataset's sheets: status, cells, overlay,
                                     quarantine reason; `next` is the following page's after=
    GET  /sheets/{sheet}?dataset=    one sheet's tiles, stored labels and corrections
    GET  /view?key=KEY               a tile, an overlay or a model's plot or report
    GET  /review?dataset=&limit=N    the tiles most worth a look, ranked
    GET  /corrections?dataset=&tile= one tile's corrections, oldest first
    POST /corrections                {"dataset", "tile", "label" | "exclude": true | "undo": true}
    GET  /models/{name}              versions, figures, report links, champion history
    POST /models/{name}/champion     {"version": ...}: roll back or forward
    POST /train, /console/train      {"dataset": NAME}: checked, then the training workflow starts
    GET  /runs/{run_id}              a training run's status

Its role reads what the console shows, writes only corrections and the champion pointer, and
may start the training workflow (after checking the request); the internet-facing inference
function stays read-only. Deployed, every data route needs a
signed-in user (the Cognito authorizer's claims name who made a correction).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from http import HTTPStatus
from pathlib import Path
from typing import Any

import boto3
from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.utilities.typing import LambdaContext

from tessera.config import Env, FunctionSettings
from tessera.corrections import UnknownTile
from tessera.errors import InvalidInput
from tessera.registry import REPORT_STYLE
from tessera.serving import console
from tessera.serving.http_errors import install_error_handlers
from tessera.storage.s3 import S3ObjectStore

logger = Logger(service="console")
app = APIGatewayRestResolver()
STATIC = Path(__file__).parent / "static"
_STATIC_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
}
# The page's own files only; it loads nothing from elsewhere. A report opened from the page (a
# blob, which keeps this policy) may use its one style sheet, allowed by its hash.
_REPORT_STYLE_HASH = base64.b64encode(hashlib.sha256(REPORT_STYLE.encode()).digest()).decode()
_SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' blob: data:; "
        f"style-src 'self' 'sha256-{_REPORT_STYLE_HASH}'; script-src 'self'; "
        "connect-src 'self' https://*.amazoncognito.com; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def _store() -> S3ObjectStore:
    return S3ObjectStore(bucket=FunctionSettings.from_env().bucket)


install_error_handlers(app, logger, not_found={UnknownTile: None})


def _query(name: str, *, required: bool = True) -> str:
    value = (app.current_event.query_string_parameters or {}).get(name)
    if value is None:
        if required:
            raise InvalidInput("bad_request", f"the query needs {name}=")
        return ""
    return value


def _json_body() -> Any:
    try:
        return json.loads(app.current_event.body or "")
    except (ValueError, RecursionError):
        raise InvalidInput("bad_request", "the body is not JSON") from None


def _author() -> str:
    """Who is signed in (the Cognito authorizer's claims); the local runtime has one user."""
    context = app.current_event.raw_event.get("requestContext") or {}
    claims = (context.get("authorizer") or {}).get("claims") or {}
    return str(claims.get("email") or claims.get("cognito:username") or "local")


def _static(name: str) -> Response[str]:
    path = STATIC / name
    if path.suffix not in _STATIC_TYPES or not path.is_file() or path.parent != STATIC:
        raise console.NotFound("no_such_route", f"there is no /console/{name}")
    return Response(
        status_code=HTTPStatus.OK,
        content_type=_STATIC_TYPES[path.suffix],
        body=path.read_text(encoding="utf-8"),
        headers=_SECURITY_HEADERS,
    )


@app.get("/")
def page() -> Response[str]:
    return _static("index.html")


@app.get("/console/<name>")
def static_file(name: str) -> Response[str]:
    if name == "config.json":
        return Response(
            status_code=HTTPStatus.OK,
            content_type="application/json",
            body=json.dumps({"auth": _sign_in()}),
            headers=_SECURITY_HEADERS,
        )
    return _static(name)


def _sign_in() -> dict[str, str] | None:
    """Where the page signs people in (Cognito's managed login), or None: the local runtime
    has no sign-in (one user, on loopback)."""
    domain, client = os.environ.get(Env.CONSOLE_AUTH_DOMAIN), os.environ.get(Env.CONSOLE_CLIENT_ID)
    return {"domain": domain, "client_id": client} if domain and client else None


def _limit(default: int, maximum: int) -> int:
    """The query's limit=: ASCII digits only (`int` takes "²" and "①", and refuses 4,301 digits);
    the route's function checks the range."""
    limit = _query("limit", required=False) or str(default)
    if not limit.isascii() or not limit.isdigit() or len(limit) > 4:
        raise InvalidInput("bad_limit", f"limit must be 1-{maximum}")
    return int(limit)


@app.get("/sheets")
def sheets() -> dict[str, Any]:
    return console.list_sheets(
        _store(),
        _query("dataset"),
        limit=_limit(console.SHEETS_PAGE, console.MAX_SHEETS_PAGE),
        after=_query("after", required=False) or None,
    )


@app.get("/sheets/<sheet_id>")
def sheet(sheet_id: str) -> dict[str, Any]:
    return console.sheet_tiles(_store(), _query("dataset"), sheet_id)


@app.get("/view")
def view() -> Response[bytes]:
    body, content_type = console.viewable(_store(), _query("key"))
    return Response(
        status_code=HTTPStatus.OK,
        content_type=content_type,
        body=body,
        headers={**_SECURITY_HEADERS, "Cache-Control": "private, max-age=60"},
    )


@app.get("/review")
def review() -> dict[str, Any]:
    limit = _limit(console.REVIEW_PAGE, console.MAX_REVIEW_LIMIT)
    return console.review_queue(_store(), _query("dataset"), limit=limit)


@app.get("/corrections")
def corrections() -> dict[str, Any]:
    return console.correction_history(_store(), _query("dataset"), _query("tile"))


@app.post("/corrections")
def correct() -> Response[str]:
    answer = console.correct(_store(), _json_body(), by=_author())
    return Response(
        status_code=HTTPStatus.CREATED, content_type="application/json", body=json.dumps(answer)
    )


@app.get("/models/<name>")
def model(name: str) -> dict[str, Any]:
    return console.describe_model(_store(), name)


@app.post("/models/<name>/champion")
def champion(name: str) -> dict[str, Any]:
    body = _json_body()
    if not isinstance(body, dict) or set(body) != {"version"}:
        raise InvalidInput("bad_request", 'the body is {"version": "<version>"}')
    return console.set_champion(_store(), name, body["version"], set_by=_author())


@app.post("/train")
@app.post("/console/train")  # the same, for the signed-in console
def train() -> Response[str]:
    state_machine = os.environ.get(Env.TRAINING_STATE_MACHINE)
    if not state_machine:
        raise RuntimeError(f"{Env.TRAINING_STATE_MACHINE} is not set: the stack sets it")
    answer = console.start_training(
        _store(), _stepfunctions(), state_machine, app.current_event.body
    )
    return Response(
        status_code=HTTPStatus.ACCEPTED, content_type="application/json", body=json.dumps(answer)
    )


def _stepfunctions() -> Any:
    global _STEPFUNCTIONS
    if _STEPFUNCTIONS is None:
        _STEPFUNCTIONS = boto3.client("stepfunctions")
    return _STEPFUNCTIONS


_STEPFUNCTIONS: Any = None


@app.get("/runs/<run_id>")
def run(run_id: str) -> dict[str, Any]:
    return console.run_status(_store(), run_id)


@logger.inject_lambda_context(correlation_id_path="requestContext.requestId")
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
