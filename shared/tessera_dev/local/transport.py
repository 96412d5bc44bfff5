"""HTTP/1.1 framing checks for the local API: what http.server lets through (or answers in HTML,
or waits on forever) is refused here with the project's JSON error shape, as API Gateway's edge
refuses it before any function runs."""

from __future__ import annotations

import json
import re
import socket
import time
from email.message import Message
from http import HTTPStatus

Problem = tuple[HTTPStatus, str]
_VERSION = re.compile(r"HTTP/(\d)\.(\d)")
_DIGITS = re.compile(r"[0-9]+")
# A client's own words quoted back in an error stay short.
_QUOTE_AT_MOST = 40
# After an error the server reads (and drops) what the client still sends before closing, so
# the close does not reset the connection under the reply (RFC 9112's "lingering close").
LINGER_SECONDS = 1.0
LINGER_AT_MOST_BYTES = 1 << 20


def error_body(code: str, message: str) -> bytes:
    return json.dumps({"error": {"code": code, "message": message}}).encode()


def status_code_name(status: int) -> str:
    """414 -> "request_uri_too_long": the JSON error code for a bare HTTP status."""
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        return "http_error"
    return re.sub(r"[^a-z0-9]+", "_", phrase.lower()).strip("_")


def _quoted(text: str) -> str:
    return repr(text[:_QUOTE_AT_MOST] + ("..." if len(text) > _QUOTE_AT_MOST else ""))


def request_line_problem(raw: bytes) -> Problem | None:
    """Why the request line is not `METHOD TARGET HTTP/1.x`; None for a good one and for a blank
    line (which http.server answers by closing quietly, as servers may)."""
    line = raw.decode("iso-8859-1").rstrip("\r\n")
    words = line.split()
    if not words:
        return None
    version = _VERSION.fullmatch(words[-1]) if len(words) == 3 else None
    if version is None:
        return (
            HTTPStatus.BAD_REQUEST,
            f"the request line {_quoted(line)} is not METHOD TARGET HTTP/1.1",
        )
    if version.group(1) != "1":
        return (
            HTTPStatus.HTTP_VERSION_NOT_SUPPORTED,
            f"{_quoted(words[-1])} is not spoken here: use HTTP/1.1",
        )
    return None


def header_problem(headers: Message) -> Problem | None:
    """Why the header block cannot be trusted: a line without a colon (http.client ends its
    parse there silently, leaving the rest as a 'payload' and a defect), a body framed by
    something other than one Content-Length that is a number."""
    if headers.defects or headers.get_payload():
        return HTTPStatus.BAD_REQUEST, "a header line is malformed: every header is NAME: VALUE"
    if headers.get("Transfer-Encoding") is not None:
        # Without this, a chunked body would be read as the next request on the connection.
        return HTTPStatus.LENGTH_REQUIRED, "chunked bodies are not accepted: send a Content-Length"
    values = {value.strip() for value in headers.get_all("Content-Length") or []}
    if len(values) > 1:
        return HTTPStatus.BAD_REQUEST, "the request carries conflicting Content-Length headers"
    for value in values:
        if _DIGITS.fullmatch(value) is None:
            return (
                HTTPStatus.BAD_REQUEST,
                f"Content-Length {_quoted(value)} is not a number of bytes",
            )
    return None


def content_length(headers: Message) -> int:
    """The body's length in bytes, of a header block `header_problem` found nothing wrong in."""
    value = headers.get("Content-Length")
    return int(value.strip()) if value is not None else 0


def linger(connection: socket.socket) -> None:
    """Half-close, then drop what the client still sends for a moment, so an error reply is
    read before the connection goes (closing with unread input would reset it)."""
    deadline = time.monotonic() + LINGER_SECONDS
    drained = 0
    try:
        connection.shutdown(socket.SHUT_WR)
        while drained < LINGER_AT_MOST_BYTES:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            connection.settimeout(remaining)
            chunk = connection.recv(64 * 1024)
            if not chunk:
                return
            drained += len(chunk)
    except OSError:  # the client went first (reset, timeout): nothing left to protect
        return
