"""Turning API request bodies into model inputs, with a clear error for every bad one."""

from __future__ import annotations

import base64
import binascii
import math
from typing import Any

import numpy as np
from numpy.typing import NDArray

from tessera.config import PIPELINE
from tessera.dataset import VECTOR_LENGTH
from tessera.errors import InvalidInput
from tessera.imaging import decode_image, normalize_tile


def features_from_image_bytes(data: bytes) -> NDArray[np.float32]:
    """One image of one symbol -> its (784,) model input, through the same normalization as
    Vectorize. A blank image has no symbol to classify."""
    normalized = normalize_tile(decode_image(data))
    if normalized is None:
        raise InvalidInput("empty_image", "the image has no ink to classify")
    return normalized.reshape(-1)


def features_from_pixels(values: Any) -> NDArray[np.float32]:
    """784 numbers, 0..255, ink bright on black (an MNIST row) -> (784,) in [0, 1]."""
    if not isinstance(values, list) or len(values) != VECTOR_LENGTH:
        count = len(values) if isinstance(values, list) else type(values).__name__
        raise InvalidInput(
            "bad_pixels", f"'pixels' must be a list of {VECTOR_LENGTH} numbers, got {count}"
        )
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        raise InvalidInput("bad_pixels", "'pixels' must hold numbers only")
    if not all(math.isfinite(v) for v in values):
        raise InvalidInput("bad_pixels", "'pixels' must not hold NaN or infinity")
    array = np.asarray(values, dtype=np.float32)
    if array.min() < 0 or array.max() > 255:
        raise InvalidInput("bad_pixels", "'pixels' values must be within 0..255")
    return array / 255.0


def features_from_instance(instance: Any) -> NDArray[np.float32]:
    if not isinstance(instance, dict):
        raise InvalidInput("bad_request", "an instance is an object with 'image' or 'pixels'")
    if "image" in instance and "pixels" in instance:
        raise InvalidInput("bad_request", "give 'image' or 'pixels', not both")
    if "image" in instance:
        encoded = instance["image"]
        if not isinstance(encoded, str):
            raise InvalidInput("bad_image", "'image' must be a base64 string")
        try:
            data = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidInput("bad_image", "'image' is not valid base64") from None
        return features_from_image_bytes(data)
    if "pixels" in instance:
        return features_from_pixels(instance["pixels"])
    raise InvalidInput("bad_request", "the request needs 'image' (base64 PNG/JPEG) or 'pixels'")


def features_from_body(body: Any) -> NDArray[np.float32]:
    """A JSON request body -> (n, 784) float32 model input."""
    if not isinstance(body, dict):
        raise InvalidInput("bad_request", "the body must be a JSON object")
    if "instances" in body:
        instances = body["instances"]
        limit = PIPELINE.limits.max_api_instances
        if not isinstance(instances, list) or not instances:
            raise InvalidInput("bad_request", "'instances' must be a non-empty list")
        if len(instances) > limit:
            raise InvalidInput(
                "too_many_instances", f"{len(instances)} instances, the limit is {limit}"
            )
        return np.stack([features_from_instance(item) for item in instances])
    return features_from_instance(body)[np.newaxis, :]
