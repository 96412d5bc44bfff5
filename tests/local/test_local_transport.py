"""The local API answers transport-level garbage (bad request lines, versions, headers and
bodies) with a JSON error and a closed connection: never a hang, an HTML page or no reply."""

from __future__ import annotations

import json
import random
import re
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from tessera_dev.local.api import LocalApi

# Every reply is due within this long; the server itself waits at most its socket timeout.
REPLY_WITHIN_SECONDS = 5.0
STATUS_LINE = re.compile(rb"HTTP/1\.[01] (\d{3}) [^\r\n]*")


def ok_handler(_event: dict[str, Any], _context: Any) -> dict[str, Any]:
    return {"statusCode": 200, "headers": {"content-type": "application/json"}, "body": "{}"}


@pytest.fixture(scope="module")
def api() -> Iterator[LocalApi]:
    # A short socket timeout, so the stalled-client case is answered within the test's wait.
    started = LocalApi(ok_handler, socket_timeout=1.0)
    started.start()
    yield started
    started.stop()


def exchange(api: LocalApi, raw: bytes, *, half_close: bool = True) -> bytes:
    """Send raw bytes, optionally half-close, and read until the server closes."""
    host, port = api.server.server_address[:2]
    with socket.create_connection((str(host), port), timeout=REPLY_WITHIN_SECONDS) as sock:
        try:
            sock.sendall(raw)
            if half_close:
                sock.shutdown(socket.SHUT_WR)
        except OSError:  # the server may answer and close before taking all of a huge head
            pass
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except ConnectionResetError:
            pass
        return received


def parse(reply: bytes) -> tuple[int, dict[str, str], bytes, bytes]:
    """Status, headers, body (by its Content-Length) and whatever followed the body."""
    head, _, after = reply.partition(b"\r\n\r\n")
    status_line, *lines = head.split(b"\r\n")
    matched = STATUS_LINE.fullmatch(status_line)
    assert matched is not None, reply[:200]
    headers = {}
    for line in lines:
        name, _, value = line.decode("iso-8859-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers["content-length"])
    return int(matched.group(1)), headers, after[:length], after[length:]


def assert_json_error(reply: bytes, status: int) -> dict[str, Any]:
    got, headers, body, rest = parse(reply)
    assert got == status, reply[:300]
    assert headers["content-type"] == "application/json"
    assert headers["connection"] == "close"
    assert rest == b"", "nothing follows the error: the connection closed"
    error: dict[str, Any] = json.loads(body)["error"]
    assert isinstance(error["code"], str) and error["code"]
    assert isinstance(error["message"], str) and error["message"]
    return error


GOOD = b"GET /health HTTP/1.1\r\nHost: local\r\n\r\n"


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"GARBAGE\r\n\r\n", 400),
        (b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505),
        (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505),
        (b"GET / HTTP/0.9\r\n\r\n", 505),
        (b"GET /\r\n", 400),
        (b"GET / HTTP/1.1 extra\r\n\r\n", 400),
        (b"GET / HTTX/1.1\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nContent-Length: twelve\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nContent-Length: 12abc\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nContent-Length: " + b"\xff%\x00" * 300 + b"\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", 400),
        (b"POST / HTTP/1.1\r\nContent-Length: " + b"9" * 60 + b"\r\n\r\n", 413),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", 411),
        (b"GET / HTTP/1.1\r\nHost: x\r\nno colon here\r\nA: b\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\n: no name\r\n\r\n", 400),
        (b"BREW /pot HTTP/1.1\r\nHost: x\r\n\r\n", 501),
    ],
)
def test_transport_garbage_gets_a_json_error_and_a_close(
    api: LocalApi, raw: bytes, status: int
) -> None:
    # GIVEN a request that is broken below the level of any route
    # WHEN it is sent and the client waits for the server to close
    reply = exchange(api, raw)
    # THEN one JSON error answers it, and the connection is closed
    assert_json_error(reply, status)


def test_an_over_long_request_line_is_http_servers_414_in_json(api: LocalApi) -> None:
    reply = exchange(api, b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\n\r\n")
    assert assert_json_error(reply, 414)["code"] == "request_uri_too_long"


def test_an_over_long_header_line_and_too_many_headers_are_431_in_json(api: LocalApi) -> None:
    long_line = b"GET / HTTP/1.1\r\nX-Long: " + b"v" * 70_000 + b"\r\n\r\n"
    many = b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(150)) + b"\r\n"
    for raw in (long_line, many):
        error = assert_json_error(exchange(api, raw), 431)
        assert error["code"] == "request_header_fields_too_large"


def test_a_body_shorter_than_its_length_is_400_not_a_hang(api: LocalApi) -> None:
    # GIVEN a client that promises 100 bytes, sends 10 and half-closes
    raw = b"POST /predict HTTP/1.1\r\nContent-Length: 100\r\n\r\n" + b"x" * 10
    # THEN the server answers at once that the body ended early
    error = assert_json_error(exchange(api, raw), 400)
    assert "10 of its 100 bytes" in error["message"]


def test_a_client_that_stalls_mid_body_is_answered_after_the_socket_timeout(
    api: LocalApi,
) -> None:
    # GIVEN a client that sends part of its body and then nothing, without closing
    raw = b"POST /predict HTTP/1.1\r\nContent-Length: 100\r\n\r\n" + b"x" * 10
    # THEN the server gives up after its socket timeout (1 s here) with a 408
    assert assert_json_error(exchange(api, raw, half_close=False), 408)["code"] == (
        "request_timeout"
    )


def test_a_good_request_keeps_its_connection_and_head_gets_no_body(api: LocalApi) -> None:
    reply = exchange(api, GOOD + b"HEAD /health HTTP/1.1\r\nHost: local\r\n\r\n")
    first, rest = reply.split(b"\r\n\r\n", 1)
    assert first.startswith(b"HTTP/1.1 200") and rest.startswith(b"{}HTTP/1.1 200")
    assert rest.endswith(b"\r\n\r\n")  # HEAD: the headers only


def test_random_request_heads_get_a_json_status_or_a_clean_close(api: LocalApi) -> None:
    # GIVEN ~200 random heads: raw bytes, and HTTP-ish words in random order
    rng = random.Random(0)
    words = [b"GET", b"POST", b"/", b"/predict", b"HTTP/1.1", b"HTTP/9.9", b":", b"\r\n", b" "]
    heads = []
    for _ in range(100):
        heads.append(bytes(rng.randrange(256) for _ in range(rng.randrange(120))))
        heads.append(b"".join(rng.choice(words) for _ in range(rng.randrange(12))))
    for head in heads:
        # WHEN each is sent as a request head
        reply = exchange(api, head + b"\r\n\r\n")
        # THEN it gets one HTTP/1.x reply with a JSON body, or a clean close without a reply
        while reply:  # a head may happen to hold a good request, then more
            status, headers, body, reply = parse(reply)
            assert headers["content-type"] == "application/json", head
            assert status == 200 or "error" in json.loads(body), head
    # AND the server still answers a good request afterwards
    status, _, body, _ = parse(exchange(api, GOOD))
    assert (status, json.loads(body)) == (200, {})
