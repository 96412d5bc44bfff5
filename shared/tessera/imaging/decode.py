"""Decoding image bytes safely into grayscale arrays, and encoding tiles as PNG.

Every way the bytes can be unusable ends in `InvalidInput` with a machine-readable code.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageOps, UnidentifiedImageError

from tessera.config import PIPELINE
from tessera.errors import InvalidInput

# Pillow's own bomb check only fires at twice its limit; ours is checked explicitly below, so
# Pillow's is raised out of the way rather than left to warn or fail with a different message.
Image.MAX_IMAGE_PIXELS = None


Gray = NDArray[np.float32]


def decode_image(data: bytes, *, max_pixels: int = PIPELINE.limits.max_image_pixels) -> Gray:
    """Decode image bytes into a float32 grayscale array in [0, 1] (0 = black).

    Every way the bytes can be unusable ends in `InvalidInput` with a machine-readable code.
    EXIF orientation is applied, so a photo is cut the way a person sees it.
    """
    if not data:
        raise InvalidInput("empty_object", "the object has zero bytes")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise InvalidInput(
            "not_an_image", "the bytes are not an image format Pillow reads"
        ) from None
    width, height = image.size
    if width * height > max_pixels:
        raise InvalidInput(
            "image_too_large",
            f"{width}x{height} is {width * height} pixels, over the limit of {max_pixels}",
        )
    try:
        image.load()
        gray = _to_gray(ImageOps.exif_transpose(image))
    except (OSError, SyntaxError, ValueError) as error:
        raise InvalidInput("corrupt_image", f"the image cannot be decoded: {error}") from None
    return gray


def _to_gray(image: Image.Image) -> Gray:
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image, dtype=np.float32)
        top = float(array.max()) or 1.0
        scaled: Gray = np.clip(array / (65535.0 if top > 255 else 255.0), 0.0, 1.0)
        return scaled.astype(np.float32)
    opaque = image.mode in ("RGBA", "LA") and image.getchannel("A").getextrema()[0] == 255
    if opaque:
        # Many PNGs carry an alpha channel that is opaque everywhere: nothing to composite.
        image = image.convert("L")
    elif image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        # Transparent pixels are paper, not ink: composite onto white first.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    gray = image if image.mode == "L" else image.convert("L")
    # Scaled in place: a camera photo is tens of megabytes as float32, and a Lambda's memory
    # is counted at its peak.
    pixels = np.asarray(gray, dtype=np.float32)
    pixels *= np.float32(1.0 / 255.0)
    return pixels


def to_gray_bytes(pixels: Gray) -> NDArray[np.uint8]:
    """A [0, 1] grayscale array as the 8-bit values a PNG of it holds."""
    scaled: NDArray[np.uint8] = np.clip(np.rint(pixels * 255.0), 0, 255).astype(np.uint8)
    return scaled


def encode_png(pixels: Gray) -> bytes:
    """Encode a [0, 1] grayscale array as an 8-bit PNG (deterministic bytes for equal input)."""
    buffer = io.BytesIO()
    Image.fromarray(to_gray_bytes(pixels), mode="L").save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()
