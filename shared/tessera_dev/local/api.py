"""Plays API Gateway's REST proxy integration: HTTP requests become proxy events for the same
inference handler that runs in Lambda."""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tessera.config import PIPELINE
from tessera_dev.local.pump import LocalLambdaContext

Handler = Callable[[dict[str, Any], Any], dict[str, Any]]
Route = Callable[[dict[str, Any]], dict[str, Any]]
# API Gateway's own payload limit; a larger request never reaches the function.
MAX_PAYLOAD_BYTES = 10 * 1024 * 1024
DRAIN_AT_MOST_BYTES = 32 * 1024 * 1024


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
    ) -> None:
        api = self
        self.handler = handler
        self.extra_routes = extra_routes or {}

        class RequestHandler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length > MAX_PAYLOAD_BYTES:
                    # Read (and drop) a moderately oversized body first, so the client sees
                    # the answer rather than a reset connection mid-upload.
                    if length <= DRAIN_AT_MOST_BYTES:
                        remaining = length
                        while remaining > 0:
                            chunk = self.rfile.read(min(remaining, 1 << 20))
                            if not chunk:
                                break
                            remaining -= len(chunk)
                    # As the deployed API's REQUEST_TOO_LARGE gateway response answers.
                    self._gateway_error(
                        HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "request_too_large", "Request Too Long"
                    )
                    self.close_connection = True
                    return
                body = self.rfile.read(length) if length else b""
                headers = {name.lower(): value for name, value in self.headers.items()}
                event = proxy_event(
                    method=self.command,
                    target=self.path,
                    headers=headers,
                    body=body,
                    source_ip=self.client_address[0],
                )
                route = api.extra_routes.get((self.command, event["path"]))
                if route is not None:
                    response = route(event)
                elif _over_lambda_event_limit(event):
                    # Lambda refuses a synchronous event over 6 MB before the handler runs; the
                    # deployed gateway then answers its DEFAULT_5XX response.
                    self._gateway_error(
                        HTTPStatus.BAD_GATEWAY,
                        "integration_failure",
                        "the request is over Lambda's 6 MB event limit; bodies up to "
                        f"{PIPELINE.limits.max_api_body_bytes} bytes are accepted",
                    )
                    return
                else:
                    response = api.handler(event, LocalLambdaContext(function_name="inference"))
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

            def _gateway_error(self, status: int, code: str, message: str) -> None:
                body = json.dumps({"error": {"code": code, "message": message}}).encode()
                self._reply(status, {"content-type": "application/json"}, body)

            def _reply(self, status: int, headers: dict[str, str], data: bytes) -> None:
                self.send_response(status)
                for name, value in headers.items():
                    if name.lower() != "content-length":
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            # Every method reaches the handler, which answers JSON (a 404/405) for what it
            # does not route, instead of http.server's HTML 501.
            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _serve
            do_HEAD = do_OPTIONS = do_TRACE = _serve

        self.server = _Server((host, port), RequestHandler)
        self._thread = threading.Thread(
            target=self.server.serve_forever, name="local-api", daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
