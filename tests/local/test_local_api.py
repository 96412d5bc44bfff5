"""The local API Gateway stand-in builds the proxy events API Gateway would."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from typing import Any

from tessera.config import PIPELINE
from tessera_dev.local.api import LocalApi, proxy_event


def event(body: bytes, content_type: str) -> dict:  # type: ignore[type-arg]
    return proxy_event(
        method="POST",
        target="/predict?top_k=2&top_k=3",
        headers={"content-type": content_type},
        body=body,
        source_ip="127.0.0.1",
    )


def test_binary_media_types_arrive_base64_encoded() -> None:
    got = event(b"\x89PNG\x00\xff", "image/png")
    assert got["isBase64Encoded"] is True
    assert base64.b64decode(got["body"]) == b"\x89PNG\x00\xff"


def test_everything_else_arrives_as_text_whatever_curl_calls_it() -> None:
    for content_type in ("application/json", "application/x-www-form-urlencoded", "", "text/plain"):
        got = event(b'{"dataset": "digits"}', content_type)
        assert got["isBase64Encoded"] is False
        assert got["body"] == '{"dataset": "digits"}'


def test_path_and_query_are_split_like_api_gateway() -> None:
    got = event(b"", "application/json")
    assert got["path"] == "/predict" and got["httpMethod"] == "POST"
    assert got["queryStringParameters"] == {"top_k": "3"}
    assert got["multiValueQueryStringParameters"] == {"top_k": ["2", "3"]}


def _post(url: str, body: bytes) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        url, data=body, headers={"content-type": "image/png"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_the_local_api_keeps_lambdas_and_the_gateways_payload_limits() -> None:
    # GIVEN the local API in front of a handler that records what reached it
    reached: list[int] = []

    def handler(event: dict[str, Any], _context: Any) -> dict[str, Any]:
        reached.append(len(event["body"]))
        return {"statusCode": 200, "body": "{}"}

    api = LocalApi(handler)
    api.start()
    try:
        limit = PIPELINE.limits.max_api_body_bytes
        # WHEN bodies at the documented limit, past Lambda's event limit, and past the gateway's
        at_limit = _post(api.url + "/predict", b"\x89PNG" + b"0" * (limit - 4))
        past_lambda = _post(api.url + "/predict", b"0" * (5 * 1024 * 1024))
        past_gateway = _post(api.url + "/predict", b"0" * (11 * 1024 * 1024))
    finally:
        api.stop()
    # THEN only the first reaches the handler, and the others get the gateway's JSON errors
    assert at_limit[0] == 200 and len(reached) == 1
    assert (past_lambda[0], past_lambda[1]["error"]["code"]) == (502, "integration_failure")
    assert (past_gateway[0], past_gateway[1]["error"]["code"]) == (413, "request_too_large")
