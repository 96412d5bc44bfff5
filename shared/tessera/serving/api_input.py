"""Turning API requests into model inputs, with a clear error for every bad one.

A request is a JSON body (`image` as base64 PNG/JPEG, `pixels` as 784 numbers, or `instances`,
a list of either) or a raw PNG/JPEG body with its options in the query string. Every way a
request can be unusable raises `InvalidInput`, which the handler answers with a 4xx.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from tessera.config import PIPELINE, TILE_SIZE, VECTOR_LENGTH
from tessera.errors import InvalidInput
from tessera.imaging.decode import decode_image
from tessera.imaging.normalize import as_stored_tile, model_input, normalize_tile
from tessera.names import validate_model_name
from tessera.sheets.cutting import cut_free

# One symbol per image: a 4,000 x 4,000 photo is already far more than a symbol needs, and the
# limit bounds the memory a small compressed image (a "bomb") can make the function allocate.
MAX_API_IMAGE_PIXELS = PIPELINE.limits.max_api_image_pixels
# /similar scores every query against every training row: (queries x rows) floats.
MAX_SIMILAR_INSTANCES = PIPELINE.limits.max_similar_instances
MAX_K = 100
DEFAULT_TOP_K = 3
DEFAULT_SIMILAR_K = 10
# The types API Gateway passes base64-encoded: the raw-image bodies.
IMAGE_CONTENT_TYPES = frozenset(PIPELINE.binary_media_types)
_SMALL_INTEGER = re.compile(r"[0-9]{1,9}")
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"
_INPUT_FIELDS = frozenset({"image", "pixels"})
PREDICT_OPTIONS = frozenset({"model", "version", "top_k", "inputs"})
SIMILAR_OPTIONS = frozenset({"model", "version", "k"})
# An image at most this many pixels on its long side is one symbol (a drawn canvas, a cut tile,
# an MNIST digit) and is normalized whole; a larger one is a photo or scan of a page, whose
# symbols are found by the detector Split and batch predictions use.
PAGE_SIDE = 320


@dataclass(frozen=True)
class ApiRequest:
    """A parsed request: model input rows and the validated options."""

    features: NDArray[np.float32]  # (n, 784) in [0, 1]
    model: str | None
    version: str | None
    k: int
    single: bool  # one image or pixels, not `instances`: the answer is not wrapped in a list
    # For a page with several symbols: where each one is (line, position, box), in the order
    # of `features`' rows; None for everything else.
    symbols: list[dict[str, Any]] | None = None
    # `inputs: true`: the answer carries each 28x28 model input, as the model saw it.
    inputs: bool = False


def features_from_page(pixels: NDArray[np.float32]) -> tuple[NDArray[np.float32], list[Any]]:
    """A photo or scan -> one model input per symbol found on it, in reading order, with each
    symbol's place. The same `cut_sheet(layout="free")` path as a free-form sheet."""
    cutting = cut_free(pixels)
    rows = []
    places = []
    for tile, box in zip(cutting.tiles, cutting.boxes, strict=True):
        normalized = normalize_tile(as_stored_tile(tile.pixels))
        if normalized is None:
            continue
        rows.append(model_input(normalized))
        top, left, bottom, right = box
        places.append(
            {
                "line": tile.row,
                "position": tile.col,
                "box": {"top": top, "left": left, "bottom": bottom, "right": right},
            }
        )
    if not rows:
        raise InvalidInput("no_symbols", "no handwritten symbols were found in the image")
    return np.stack(rows), places


def features_from_image_bytes(data: bytes) -> NDArray[np.float32]:
    """One image of one symbol -> its (784,) model input, through the same normalization as
    Vectorize; a page must hold exactly one symbol here (`read_image` takes several)."""
    features, _ = read_image(data)
    if len(features) > 1:
        raise InvalidInput(
            "several_symbols",
            f"the image holds {len(features)} symbols; send it alone (not in 'instances') "
            "to have each one classified",
        )
    first: NDArray[np.float32] = features[0]
    return first


def read_image(data: bytes) -> tuple[NDArray[np.float32], list[Any] | None]:
    """An image -> (n, 784) model inputs: one for a symbol-sized image, normalized whole; one
    per symbol found for a page (larger than `PAGE_SIDE`), with their places. A blank image has
    no symbol to classify."""
    if not data:
        raise InvalidInput("empty_image", "the image has zero bytes")
    if not (data.startswith(_PNG_MAGIC) or data.startswith(_JPEG_MAGIC)):
        raise InvalidInput("not_an_image", "the bytes are not a PNG or JPEG image")
    try:
        pixels = decode_image(data, max_pixels=MAX_API_IMAGE_PIXELS)
    except InvalidInput:
        raise
    except MemoryError:
        raise
    except Exception as error:
        # Pillow's decoders raise many exception types on malformed files; whatever the type,
        # the cause is the client's bytes.
        raise InvalidInput("corrupt_image", f"the image cannot be decoded: {error}") from None
    if max(pixels.shape) > PAGE_SIDE:
        try:
            return features_from_page(pixels)
        except InvalidInput as error:
            if error.code not in ("blank_page", "no_symbols"):
                raise
            message = f"the image has no symbol to classify: {error.message}"
            raise InvalidInput("empty_image", message) from None
    normalized = normalize_tile(pixels)
    if normalized is None:
        raise InvalidInput("empty_image", "the image has no ink to classify")
    return model_input(normalized)[np.newaxis, :], None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def features_from_pixels(values: Any) -> NDArray[np.float32]:
    """784 numbers (flat, or 28 rows of 28), 0..255, ink bright on black (an MNIST row) ->
    (784,) in [0, 1]. No normalization: the numbers already are a normalized tile."""
    if (
        isinstance(values, list)
        and len(values) == TILE_SIZE
        and all(isinstance(row, list) for row in values)
    ):
        if not all(len(row) == TILE_SIZE for row in values):
            raise InvalidInput("bad_pixels", f"'pixels' as rows must be {TILE_SIZE} rows of 28")
        values = [value for row in values for value in row]
    if not isinstance(values, list) or len(values) != VECTOR_LENGTH:
        count = f"{len(values)} items" if isinstance(values, list) else type(values).__name__
        raise InvalidInput(
            "bad_pixels",
            f"'pixels' must be a list of {VECTOR_LENGTH} numbers (or 28 rows of 28), got {count}",
        )
    if not all(_is_number(v) for v in values):
        raise InvalidInput("bad_pixels", "'pixels' must hold numbers only")
    try:
        array = np.asarray(values, dtype=np.float64)
    except OverflowError:
        raise InvalidInput("bad_pixels", "'pixels' values must be within 0..255") from None
    if not np.isfinite(array).all():
        raise InvalidInput("bad_pixels", "'pixels' must not hold NaN or infinity")
    if array.min() < 0 or array.max() > 255:
        raise InvalidInput("bad_pixels", "'pixels' values must be within 0..255")
    return (array / 255.0).astype(np.float32)


def _decode_base64_image(encoded: Any) -> bytes:
    if not isinstance(encoded, str):
        raise InvalidInput("bad_image", "'image' must be a base64 string")
    # A data URL (what a browser's FileReader gives) carries the same base64 after the comma.
    if encoded.startswith("data:") and "," in encoded:
        encoded = encoded.split(",", 1)[1]
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput("bad_image", "'image' is not valid base64") from None


def features_from_instance(instance: Any) -> NDArray[np.float32]:
    if not isinstance(instance, dict):
        raise InvalidInput("bad_request", "an instance is an object with 'image' or 'pixels'")
    unknown = set(instance) - _INPUT_FIELDS
    if unknown:
        raise InvalidInput(
            "bad_request",
            f"unknown field(s) {sorted(unknown)} in an instance; use 'image' or 'pixels'",
        )
    if "image" in instance and "pixels" in instance:
        raise InvalidInput("bad_request", "give 'image' or 'pixels', not both")
    if "image" in instance:
        return features_from_image_bytes(_decode_base64_image(instance["image"]))
    if "pixels" in instance:
        return features_from_pixels(instance["pixels"])
    raise InvalidInput("bad_request", "the request needs 'image' (base64 PNG/JPEG) or 'pixels'")


def _features_and_shape(
    body: Any, *, max_instances: int
) -> tuple[NDArray[np.float32], bool, list[Any] | None]:
    if not isinstance(body, dict):
        raise InvalidInput("bad_request", "the body must be a JSON object")
    if "instances" in body:
        if set(body) & _INPUT_FIELDS:
            raise InvalidInput("bad_request", "give 'instances' or 'image'/'pixels', not both")
        instances = body["instances"]
        if not isinstance(instances, list) or not instances:
            raise InvalidInput("bad_request", "'instances' must be a non-empty list")
        if len(instances) > max_instances:
            raise InvalidInput(
                "too_many_instances", f"{len(instances)} instances, the limit is {max_instances}"
            )
        return np.stack([features_from_instance(item) for item in instances]), False, None
    inputs = {name: body[name] for name in _INPUT_FIELDS if name in body}
    if set(inputs) == {"image"}:
        return _single_image(_decode_base64_image(inputs["image"]), max_instances=max_instances)
    return features_from_instance(inputs)[np.newaxis, :], True, None


def _single_image(
    data: bytes, *, max_instances: int
) -> tuple[NDArray[np.float32], bool, list[Any] | None]:
    """One image: one symbol gives today's single answer; a page of several, the list (no
    longer than a request's instances may be, nor than the API reads off a page)."""
    features, places = read_image(data)
    if len(features) == 1:
        return features, True, None
    limit = min(max_instances, PIPELINE.limits.max_api_page_symbols)
    if len(features) > limit:
        raise InvalidInput(
            "too_many_symbols",
            f"the page holds {len(features)} symbols; this route reads up to {limit} per "
            "request: drop the page under incoming/predict/ for batch predictions",
        )
    return features, False, places


def features_from_body(
    body: Any, *, max_instances: int = PIPELINE.limits.max_api_instances
) -> NDArray[np.float32]:
    """A JSON request body -> (n, 784) float32 model input."""
    return _features_and_shape(body, max_instances=max_instances)[0]


def _int_option(options: dict[str, Any], name: str, default: int) -> int:
    value = options.get(name, default)
    # From a query string: ASCII digits only. str.isdigit() also passes "²" and "①", which
    # int() refuses, and a digit string thousands long is over int()'s conversion limit.
    if isinstance(value, str) and _SMALL_INTEGER.fullmatch(value.strip()):
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidInput("bad_request", f"'{name}' must be an integer within 1..{MAX_K}")
    if not 1 <= value <= MAX_K:
        raise InvalidInput("bad_request", f"'{name}' must be within 1..{MAX_K}, got {value}")
    return value


def _bool_option(options: dict[str, Any], name: str) -> bool:
    value = options.get(name, False)
    if isinstance(value, str):  # from a query string
        value = {"true": True, "false": False, "1": True, "0": False}.get(value.strip().lower())
    if not isinstance(value, bool):
        raise InvalidInput("bad_request", f"'{name}' must be true or false")
    return value


def _options(options: dict[str, Any], allowed: frozenset[str]) -> tuple[str | None, str | None]:
    unknown = set(options) - allowed
    if unknown:
        raise InvalidInput(
            "bad_request", f"unknown field(s) {sorted(unknown)}; allowed here: {sorted(allowed)}"
        )
    model, version = options.get("model"), options.get("version")
    if model is not None:
        if not isinstance(model, str):
            raise InvalidInput("bad_request", "'model' must be a string")
        try:
            validate_model_name(model)
        except InvalidInput as error:
            raise InvalidInput("bad_request", error.message) from None
    if version is not None and not isinstance(version, str):
        raise InvalidInput("bad_request", "'version' must be a string")
    return model, version


def json_object(data: bytes | str, *, example: str = "") -> dict[str, Any]:
    """A request body that must be a JSON object, or the client error saying why it is not."""
    try:
        document = json.loads(data)
    except (ValueError, RecursionError) as error:
        # ValueError covers JSONDecodeError, bad UTF-8 and integers too long to convert;
        # RecursionError, nesting deeper than the decoder goes.
        reason = error.msg if isinstance(error, json.JSONDecodeError) else str(error)
        raise InvalidInput("invalid_json", f"the body is not valid JSON: {reason}") from None
    if not isinstance(document, dict):
        hint = f", e.g. {example}" if example else ""
        raise InvalidInput("bad_request", f"the body must be a JSON object{hint}")
    return document


def parse_request(
    *,
    body: str | None,
    is_base64: bool,
    content_type: str,
    query: dict[str, str] | None,
    options: frozenset[str],
    default_k: int,
    max_instances: int = PIPELINE.limits.max_api_instances,
) -> ApiRequest:
    """An API Gateway proxy request (body, encoding, content type, query) -> `ApiRequest`."""
    raw = body or ""
    limit = PIPELINE.limits.max_api_body_bytes
    # Base64 grows a body by 4/3; checking the text first avoids decoding a huge string.
    if len(raw) > limit * 4 // 3 + 4:
        raise InvalidInput("body_too_large", f"the body is over {limit} bytes")
    try:
        data = base64.b64decode(raw, validate=True) if is_base64 else raw.encode("utf-8")
    except (binascii.Error, ValueError):
        raise InvalidInput("bad_request", "the body is marked base64 but is not") from None
    if len(data) > limit:
        raise InvalidInput("body_too_large", f"the body is {len(data)} bytes, over {limit}")
    media_type = content_type.split(";")[0].strip().lower()
    k_option = "top_k" if "top_k" in options else "k"

    # Options may come in the query string (the only place for them beside a raw image);
    # parameters the API does not know are ignored there, as browsers and proxies add some.
    query_options = {name: value for name, value in (query or {}).items() if name in options}
    if media_type in IMAGE_CONTENT_TYPES:
        settings = query_options

        def read() -> tuple[NDArray[np.float32], bool, list[Any] | None]:
            return _single_image(data, max_instances=max_instances)
    else:
        if media_type.startswith("image/"):
            raise InvalidInput(
                "unsupported_media_type",
                f"{media_type} is not supported; send image/png, image/jpeg or application/json",
            )
        if not data.strip():
            raise InvalidInput("bad_request", "the body is empty; send JSON or a PNG/JPEG image")
        document = json_object(data)
        body_options = {
            name: value
            for name, value in document.items()
            if name not in _INPUT_FIELDS and name != "instances"
        }
        both = set(body_options) & set(query_options)
        if both:
            raise InvalidInput(
                "bad_request", f"{sorted(both)} given in both the body and the query; give it once"
            )
        settings = {**query_options, **body_options}

        def read() -> tuple[NDArray[np.float32], bool, list[Any] | None]:
            return _features_and_shape(document, max_instances=max_instances)

    # The options are checked before the pixels are decoded.
    model, version = _options(settings, options)
    k = _int_option(settings, k_option, default_k)
    inputs = _bool_option(settings, "inputs")
    features, single, places = read()
    return ApiRequest(
        features=features,
        model=model,
        version=version,
        k=k,
        single=single,
        symbols=places,
        inputs=inputs,
    )
