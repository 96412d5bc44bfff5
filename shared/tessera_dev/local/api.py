"""Plays API Gateway's REST proxy integration: HTTP requests become proxy events for the same
inference handler that runs in Lambda."""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tessera.config import PIPELINE
from tessera.config import Route as RouteSpec
from tessera_dev.local.pump import LocalLambdaContext
from tessera_dev.local.transport import (
    content_length,
    error_body,
    header_problem,
    linger,
    request_line_problem,
    status_code_name,
)

Handler = Callable[[dict[str, Any], Any], dict[str, Any]]
Route = Callable[[dict[str, Any]], dict[str, Any]]
# API Gateway's own payload limit; a larger request never reaches the function.
MAX_PAYLOAD_BYTES = 10 * 1024 * 1024
DRAIN_AT_MOST_BYTES = 32 * 1024 * 1024
# How long one read or write on a connection may wait: a stalled client costs a thread this
# long at most, and a slow upload gets this long per chunk.
SOCKET_TIMEOUT_SECONDS = 10.0
log = logging.getLogger("tessera_dev.local.api")


def proxy_event(
    *, method: str, target: str, headers: dict[str, str], body: bytes, source_ip: str
) -> dict[str, Any]:
    parts = urlsplit(target)
    query = parse_qs(parts.query, keep_blank_values=True)
    content_type = headers.get("content-type", "").split(";")[0].strip().lower()
    is_text = content_type not in PIPELINE.binary_media_types
    request_id = str(uuid.uuid4())
    return {
        "resource": "/{proxy+}",
        "path": parts.path,
        "httpMethod": method,
        "headers": headers,
        "multiValueHeaders": {name: [value] for name, value in headers.items()},
        "queryStringParameters": {k: v[-1] for k, v in query.items()} or None,
        "multiValueQueryStringParameters": query or None,
        "pathParameters": {"proxy": parts.path.lstrip("/")},
        "stageVariables": None,
        "requestContext": {
            "requestId": request_id,
            "stage": "local",
            "httpMethod": method,
            "path": parts.path,
            "resourcePath": "/{proxy+}",
            "requestTimeEpoch": int(time.time() * 1000),
            "identity": {"sourceIp": source_ip},
        },
        "body": body.decode("utf-8", errors="replace")
        if is_text
        else base64.b64encode(body).decode(),
        "isBase64Encoded": not is_text,
    }


# An event's headers and request context are a few KiB; below this body size it cannot be over.
_EVENT_OVERHEAD_BOUND = 256 * 1024


def _over_lambda_event_limit(event: dict[str, Any]) -> bool:
    """Whether Lambda would refuse the event; serialized only when its body comes near."""
    limit = PIPELINE.limits.max_lambda_event_bytes
    if len(event["body"]) < limit - _EVENT_OVERHEAD_BOUND:
        return False
    return len(json.dumps(event)) > limit


class _Server(ThreadingHTTPServer):
    # listen()'s backlog: the default of 5 resets connections when dozens of clients connect
    # at once, which API Gateway never does. A class attribute: listen() runs in __init__.
    request_queue_size = 128
    daemon_threads = True


class LocalApi:
    def __init__(
        self,
        handler: Handler,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        extra_routes: dict[tuple[str, str], Route] | None = None,
        functions: dict[str, tuple[tuple[RouteSpec, ...], Handler]] | None = None,
        socket_timeout: float = SOCKET_TIMEOUT_SECONDS,
    ) -> None:
        """`handler` (the inference function) answers every request that neither an extra
        route nor one of `functions` (name -> its routes and handler) claims."""
        api = self
        self.handler = handler
        self.extra_routes = extra_routes or {}
        self.functions = functions or {}

        class RequestHandler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # http.server writes a status line only when the version is not HTTP/0.9, its
            # default before a request line is parsed: its early errors would be bare bodies.
            default_request_version = "HTTP/1.0"
            # Every read and write of a connection: a client that stalls is dropped, not
            # waited on by a thread forever.
            timeout = socket_timeout
            raw_requestline: bytes  # set by handle_one_request (typeshed does not say)
            _linger = False
            _length = 0

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def parse_request(self) -> bool:
                problem = request_line_problem(self.raw_requestline)
                if problem is not None:
                    # What http.server's own parse would have set before refusing.
                    self.command, self.request_version = "", self.default_request_version
                    self.requestline = self.raw_requestline.decode("iso-8859-1").rstrip("\r\n")
                    self.send_error(*problem)
                    return False
                if not super().parse_request():
                    return False
                problem = header_problem(self.headers)
                if problem is not None:
                    self.send_error(*problem)
                    return False
                self._length = content_length(self.headers)
                return True

            def send_error(
                self, code: int, message: str | None = None, explain: str | None = None
            ) -> None:
                """http.server's own errors (400, 414, 431, 501, 505...) in the JSON error
                shape, closing the connection: after a framing error nothing after it can be
                trusted to start a request."""
                self.close_connection = True
                self._linger = True
                name = status_code_name(code)
                body = error_body(name, message or name.replace("_", " "))
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Connection", "close")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD" and code >= 200 and code not in (204, 304):
                    self.wfile.write(body)

            def finish(self) -> None:
                super().finish()
                if self._linger:
                    linger(self.connection)

            def _serve(self) -> None:
                length = self._length
                if length > MAX_PAYLOAD_BYTES:
                    # Read (and drop) a moderately oversized body first, so the client sees
                    # the answer rather than a reset connection mid-upload.
                    if length <= DRAIN_AT_MOST_BYTES:
                        self._drain(length)
                    # As the deployed API's REQUEST_TOO_LARGE gateway response answers.
                    self._refuse(
                        HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "request_too_large", "Request Too Long"
                    )
                    return
                body = self._read_body(length)
                if body is None:
                    return
                headers = {name.lower(): value for name, value in self.headers.items()}
                event = proxy_event(
                    method=self.command,
                    target=self.path,
                    headers=headers,
                    body=body,
                    source_ip=self.client_address[0],
                )
                route = api.extra_routes.get((self.command, event["path"]))
                if route is None and _over_lambda_event_limit(event):
                    # Lambda refuses a synchronous event over 6 MB before the handler runs; the
                    # deployed gateway then answers its DEFAULT_5XX response.
                    self._gateway_error(
                        HTTPStatus.BAD_GATEWAY,
                        "integration_failure",
                        "the request is over Lambda's 6 MB event limit; bodies up to "
                        f"{PIPELINE.limits.max_api_body_bytes} bytes are accepted",
                    )
                    return
                response = self._invoke(route, event)
                if response is None:
                    return
                payload = response.get("body") or ""
                data = (
                    base64.b64decode(payload)
                    if response.get("isBase64Encoded")
                    else payload.encode()
                )
                out_headers = dict(response.get("headers") or {})
                for name, values in (response.get("multiValueHeaders") or {}).items():
                    out_headers[name] = ",".join(values)
                self._reply(response.get("statusCode", 200), out_headers, data)

            def _invoke(self, route: Route | None, event: dict[str, Any]) -> dict[str, Any] | None:
                """The route's or the function's response; a crash is the deployed gateway's
                502, never a connection dropped without a reply."""
                try:
                    if route is not None:
                        return route(event)
                    name, handler = api.function_for(self.command, event["path"])
                    return handler(event, LocalLambdaContext(function_name=name))
                except Exception:
                    log.exception("the handler raised for %s %s", self.command, event["path"])
                    self._gateway_error(
                        HTTPStatus.BAD_GATEWAY, "integration_failure", "Internal server error"
                    )
                    return None

            def _read_body(self, length: int) -> bytes | None:
                """The whole body, or None once a short or stalled one has been answered."""
                try:
                    body = self.rfile.read(length) if length else b""
                except TimeoutError:
                    self._refuse(
                        HTTPStatus.REQUEST_TIMEOUT,
                        "request_timeout",
                        f"the body did not arrive within {self.timeout} s",
                    )
                    return None
                if len(body) < length:
                    self._refuse(
                        HTTPStatus.BAD_REQUEST,
                        "bad_request",
                        f"the body ended after {len(body)} of its {length} bytes",
                    )
                    return None
                return body

            def _drain(self, length: int) -> None:
                remaining = length
                with contextlib.suppress(TimeoutError):
                    while remaining > 0:
                        chunk = self.rfile.read(min(remaining, 1 << 20))
                        if not chunk:
                            break
                        remaining -= len(chunk)

            def _refuse(self, status: int, code: str, message: str) -> None:
                """An error after which the connection closes: its framing is not to be
                trusted any more."""
                self.close_connection = True
                self._linger = True
                self._gateway_error(status, code, message)

            def _gateway_error(self, status: int, code: str, message: str) -> None:
                body = error_body(code, message)
                self._reply(status, {"content-type": "application/json"}, body)

            def _reply(self, status: int, headers: dict[str, str], data: bytes) -> None:
                self.send_response(status)
                for name, value in headers.items():
                    if name.lower() != "content-length":
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                if self.close_connection:
                    self.send_header("Connection", "close")
                self.end_headers()
                if self.command != "HEAD":  # HEAD's answer has the length, never the body
                    self.wfile.write(data)

            # Every method reaches the handler, which answers JSON (a 404/405) for what it
            # does not route, instead of http.server's HTML 501.
            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _serve
            do_HEAD = do_OPTIONS = do_TRACE = _serve

        self.server = _Server((host, port), RequestHandler)
        self._thread = threading.Thread(
            target=self.server.serve_forever, name="local-api", daemon=True
        )

    def function_for(self, method: str, path: str) -> tuple[str, Handler]:
        for name, (routes, handler) in self.functions.items():
            if any(route.matches(method, path) for route in routes):
                return name, handler
        return "inference", self.handler

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
