"""The local API Gateway stand-in builds the proxy events API Gateway would."""

from __future__ import annotations

import base64

from tessera_dev.local.api import proxy_event


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
