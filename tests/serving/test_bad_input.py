"""Every way a client can get a request wrong is a 4xx with a JSON error naming the problem."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
from PIL import Image

from tessera.config import PIPELINE
from tests.serving.conftest import Call, Served


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _png(array: np.ndarray, mode: str = "L") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array, mode=mode).save(buffer, format="PNG")
    return buffer.getvalue()


def _bomb() -> bytes:
    """A few KB of PNG that decodes to 20,000 x 20,000 pixels."""
    buffer = io.BytesIO()
    Image.new("1", (20_000, 20_000), 1).save(buffer, format="PNG")
    return buffer.getvalue()


BLANK_PNG = _png(np.full((28, 28), 255, dtype=np.uint8))
INK_PNG = _png(np.pad(np.zeros((10, 10), dtype=np.uint8), 9, constant_values=255))
ZEROS = [0] * 784

JSON_CASES = [
    ("not json", b"{'image': 1}", "invalid_json"),
    ("truncated json", b'{"pixels": [1, 2', "invalid_json"),
    ("deeply nested", b"[" * 100_000 + b"]" * 100_000, "invalid_json"),
    ("huge integer", b'{"pixels": [' + b"9" * 5000 + b"]}", "invalid_json"),
    ("empty body", b"", "bad_request"),
    ("a list, not an object", b"[1, 2]", "bad_request"),
    ("no input field", b'{"top_k": 3}', "bad_request"),
    ("unknown field", b'{"pixels": [], "imgae": "x"}', "bad_request"),
    ("NaN literal", b'{"pixels": [NaN' + b", 0" * 783 + b"]}", "bad_pixels"),
    ("Infinity literal", b'{"pixels": [Infinity' + b", 0" * 783 + b"]}", "bad_pixels"),
    ("overflowing float", b'{"pixels": [1e999' + b", 0" * 783 + b"]}", "bad_pixels"),
]

BODY_CASES = [
    ("bad base64", {"image": "not*base64"}, "bad_image"),
    ("image not a string", {"image": 42}, "bad_image"),
    ("bytes that are not an image", {"image": _b64(b"hello world, not an image")}, "not_an_image"),
    ("a GIF is not accepted", {"image": _b64(b"GIF89a" + b"\0" * 30)}, "not_an_image"),
    ("truncated PNG", {"image": _b64(INK_PNG[:60])}, "corrupt_image"),
    ("PNG header only", {"image": _b64(b"\x89PNG\r\n\x1a\n")}, "not_an_image"),
    ("decompression bomb", {"image": _b64(_bomb())}, "image_too_large"),
    ("blank image", {"image": _b64(BLANK_PNG)}, "empty_image"),
    ("empty image", {"image": ""}, "empty_image"),
    ("wrong pixel count", {"pixels": [0] * 783}, "bad_pixels"),
    ("ragged rows", {"pixels": [[0] * 28] * 27 + [[0] * 27]}, "bad_pixels"),
    ("pixels not a list", {"pixels": "0" * 784}, "bad_pixels"),
    ("strings in pixels", {"pixels": ["0"] * 784}, "bad_pixels"),
    ("booleans in pixels", {"pixels": [True] * 784}, "bad_pixels"),
    ("above 255", {"pixels": [256, *ZEROS[1:]]}, "bad_pixels"),
    ("negative", {"pixels": [-0.5, *ZEROS[1:]]}, "bad_pixels"),
    ("both image and pixels", {"pixels": ZEROS, "image": _b64(INK_PNG)}, "bad_request"),
    ("instances and pixels", {"instances": [{"pixels": ZEROS}], "pixels": ZEROS}, "bad_request"),
    ("empty instances", {"instances": []}, "bad_request"),
    ("instances not a list", {"instances": {"pixels": ZEROS}}, "bad_request"),
    ("an instance not an object", {"instances": [ZEROS]}, "bad_request"),
    ("a bad instance", {"instances": [{"pixels": ZEROS}, {"pixels": [1]}]}, "bad_pixels"),
    (
        "too many instances",
        {"instances": [{"pixels": ZEROS}] * (PIPELINE.limits.max_api_instances + 1)},
        "too_many_instances",
    ),
    ("top_k zero", {"pixels": ZEROS, "top_k": 0}, "bad_request"),
    ("top_k a float", {"pixels": ZEROS, "top_k": 2.5}, "bad_request"),
    ("top_k a boolean", {"pixels": ZEROS, "top_k": True}, "bad_request"),
    ("model not a name", {"pixels": ZEROS, "model": "../x"}, "bad_request"),
    ("model not a string", {"pixels": ZEROS, "model": 7}, "bad_request"),
    ("version not a string", {"pixels": ZEROS, "version": 7}, "bad_request"),
]


def _assert_client_error(status: int, body: dict[str, object], code: str) -> None:
    assert 400 <= status < 500, body
    error = body["error"]
    assert isinstance(error, dict)
    assert error["code"] == code, error
    assert isinstance(error["message"], str) and error["message"]


@pytest.mark.parametrize(("case", "data", "code"), JSON_CASES, ids=[c[0] for c in JSON_CASES])
def test_malformed_json_is_a_400(
    served_once: Served, call: Call, case: str, data: bytes, code: str
) -> None:
    reply = call("POST", "/predict", body=data, content_type="application/json")
    assert reply.status == 400
    _assert_client_error(reply.status, reply.body, code)


@pytest.mark.parametrize(("case", "body", "code"), BODY_CASES, ids=[c[0] for c in BODY_CASES])
@pytest.mark.parametrize("path", ["/predict", "/similar"])
def test_bad_bodies_are_a_400_naming_the_problem(
    served_once: Served, call: Call, path: str, case: str, body: object, code: str
) -> None:
    if path == "/similar" and code == "too_many_instances":
        body = {"instances": [{"pixels": ZEROS}] * 33}
    if path == "/similar" and "top_k" in json.dumps(body):
        fields = dict(body)  # type: ignore[call-overload]
        fields["k"] = fields.pop("top_k")
        body = fields
    reply = call("POST", path, json_body=body)
    assert reply.status == 400
    _assert_client_error(reply.status, reply.body, code)


def test_a_body_over_the_limit_is_a_413(served_once: Served, call: Call) -> None:
    data = b'{"image": "' + b"A" * PIPELINE.limits.max_api_body_bytes + b'"}'
    reply = call("POST", "/predict", body=data)
    assert reply.status == 413
    _assert_client_error(reply.status, reply.body, "body_too_large")


def test_a_raw_body_that_is_not_an_image_is_a_400(served_once: Served, call: Call) -> None:
    reply = call(
        "POST", "/predict", body=b"\x00\x01 definitely not a png", content_type="image/png"
    )
    _assert_client_error(reply.status, reply.body, "not_an_image")


def test_an_unsupported_image_type_is_a_415(served_once: Served, call: Call) -> None:
    reply = call("POST", "/predict", body=b"GIF89a....", content_type="image/gif")
    assert reply.status == 415
    _assert_client_error(reply.status, reply.body, "unsupported_media_type")


@pytest.mark.parametrize(
    ("query", "code"),
    [("top_k=abc", "bad_request"), ("top_k=0", "bad_request"), ("model=..%2Fx", "bad_request")],
)
def test_bad_query_options_are_a_400(
    served_once: Served, call: Call, query: str, code: str
) -> None:
    reply = call("POST", f"/predict?{query}", body=INK_PNG, content_type="image/png")
    _assert_client_error(reply.status, reply.body, code)


def test_an_option_given_twice_is_a_400(served_once: Served, call: Call) -> None:
    reply = call("POST", "/predict?top_k=2", json_body={"pixels": ZEROS, "top_k": 3})
    _assert_client_error(reply.status, reply.body, "bad_request")


def test_a_valid_request_next_to_the_bad_ones_still_succeeds(
    served_once: Served, call: Call
) -> None:
    """The cases above fail for their reason, not because nothing works."""
    for path in ("/predict", "/similar"):
        assert call("POST", path, json_body={"image": _b64(INK_PNG)}).status == 200
        assert call("POST", path, body=INK_PNG, content_type="image/png").status == 200


def test_a_refusal_is_logged_with_its_code_but_not_the_body(
    served_once: Served, call: Call, caplog: pytest.LogCaptureFixture
) -> None:
    from functions.inference.handler import logger

    logger.setLevel("INFO")
    try:
        with caplog.at_level("INFO", logger="inference"):
            # A value no timestamp or counter in the record can spell by chance.
            reply = call("POST", "/predict", json_body={"pixels": [-31337.25] * 784})
    finally:
        logger.setLevel("WARNING")
    assert reply.status == 400
    refused = [record for record in caplog.records if record.getMessage() == "request refused"]
    assert len(refused) == 1
    assert (refused[0].code, refused[0].status) == ("bad_pixels", 400)  # type: ignore[attr-defined]
    assert "-31337.25" not in str(vars(refused[0]))
