"""Image operations: decoding, equal-cell splitting and MNIST-style normalization."""

from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from tessera.errors import InvalidInput
from tessera.imaging.decode import decode_image, encode_png
from tessera.imaging.normalize import normalize_tile, to_vector
from tests.reference_split import split_image


def png_bytes(array: np.ndarray, mode: str = "L") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array, mode=mode).save(buffer, format="PNG")
    return buffer.getvalue()


@settings(max_examples=60, deadline=None)
@given(
    height=st.integers(4, 120),
    width=st.integers(4, 120),
    rows=st.integers(1, 12),
    cols=st.integers(1, 12),
)
def test_any_grid_that_fits_gives_rows_times_cols_tiles_covering_the_image(
    height: int, width: int, rows: int, cols: int
) -> None:
    # GIVEN an image whose every pixel is distinct
    image = np.arange(height * width, dtype=np.float32).reshape(height, width)
    if height // rows < 4 or width // cols < 4:
        with pytest.raises(InvalidInput) as caught:
            split_image(image, rows, cols)
        assert caught.value.code == "grid_larger_than_image"
        return
    # WHEN it is split
    tiles = split_image(image, rows, cols)
    # THEN there are rows*cols tiles in reading order, and together they hold every pixel once
    assert len(tiles) == rows * cols
    assert [(t.row, t.col) for t in tiles] == [(r, c) for r in range(rows) for c in range(cols)]
    covered = np.concatenate([t.pixels.ravel() for t in tiles])
    assert np.array_equal(np.sort(covered), image.ravel())


def test_square_cells_are_the_centred_square_of_each_cell() -> None:
    image = np.zeros((40, 100), dtype=np.float32)
    tiles = split_image(image, 2, 2, should_square=True)
    assert all(t.pixels.shape == (20, 20) for t in tiles)


@settings(max_examples=60, deadline=None)
@given(
    height=st.integers(8, 80),
    width=st.integers(8, 80),
    top=st.floats(0, 0.6),
    left=st.floats(0, 0.6),
    size=st.floats(0.15, 0.4),
    dark_on_light=st.booleans(),
)
def test_normalization_is_28x28_in_range_and_centred_by_mass(
    height: int, width: int, top: float, left: float, size: float, dark_on_light: bool
) -> None:
    # GIVEN a tile with one blob of ink anywhere on it, either polarity
    tile = np.zeros((height, width), dtype=np.float32)
    y0, x0 = int(top * height), int(left * width)
    y1, x1 = y0 + max(2, int(size * height)), x0 + max(2, int(size * width))
    tile[y0:y1, x0:x1] = 1.0
    if dark_on_light:
        tile = 1.0 - tile
    # WHEN it is normalized
    out = normalize_tile(tile)
    # THEN ink is bright on black, within [0, 1], fits in 20x20 and its mass sits at the centre
    assert out is not None
    assert out.shape == (28, 28) and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0 and out.max() > 0.5
    ys, xs = np.nonzero(out > 0.05)
    assert ys.max() - ys.min() < 21 and xs.max() - xs.min() < 21
    mass = out.sum()
    cy = (out.sum(axis=1) * np.arange(28)).sum() / mass
    cx = (out.sum(axis=0) * np.arange(28)).sum() / mass
    assert abs(cy - 13.5) <= 1.0 and abs(cx - 13.5) <= 1.0
    assert out[0, :].max() == 0 and out[:, 0].max() == 0  # black border, as in MNIST


def test_a_blank_tile_has_no_ink_to_normalize() -> None:
    assert normalize_tile(np.ones((30, 30), dtype=np.float32)) is None
    assert normalize_tile(np.zeros((30, 30), dtype=np.float32)) is None


def test_grey_paper_ends_on_black() -> None:
    tile = np.full((40, 40), 0.8, dtype=np.float32)
    tile[10:30, 18:22] = 0.1
    out = normalize_tile(tile)
    assert out is not None
    assert out[out < 0.5].max() < 0.05


def test_png_round_trip_keeps_the_pixels() -> None:
    pixels = np.linspace(0, 1, 28 * 28, dtype=np.float32).reshape(28, 28)
    back = decode_image(encode_png(pixels))
    assert np.abs(back - pixels).max() <= 1 / 255
    assert encode_png(pixels) == encode_png(pixels)  # deterministic bytes, deterministic ETag


def test_to_vector_is_784_bytes() -> None:
    vector = to_vector(np.ones((28, 28), dtype=np.float32))
    assert vector.shape == (784,) and vector.dtype == np.uint8 and vector.max() == 255


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"", "empty_object"),
        (b"definitely not an image", "not_an_image"),
    ],
)
def test_unusable_bytes_are_refused_with_a_reason(data: bytes, code: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        decode_image(data)
    assert caught.value.code == code


def test_a_truncated_png_is_corrupt() -> None:
    data = png_bytes(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8))
    with pytest.raises(InvalidInput) as caught:
        decode_image(data[: len(data) // 2])
    assert caught.value.code == "corrupt_image"


def test_a_decompression_bomb_is_refused_before_decoding() -> None:
    # A 1-bit 20000x20000 PNG is tiny on disk and 400 megapixels in memory.
    buffer = io.BytesIO()
    Image.new("1", (20000, 20000)).save(buffer, format="PNG")
    with pytest.raises(InvalidInput) as caught:
        decode_image(buffer.getvalue(), max_pixels=40_000_000)
    assert caught.value.code == "image_too_large"


def test_exif_orientation_is_respected() -> None:
    # GIVEN a landscape JPEG whose EXIF says "rotate 90 degrees"
    image = Image.new("L", (60, 30), 255)
    exif = image.getexif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", exif=exif)
    # THEN it decodes the way a person sees it: portrait
    assert decode_image(buffer.getvalue()).shape == (60, 30)


def test_transparent_background_is_paper() -> None:
    rgba = np.zeros((20, 20, 4), dtype=np.uint8)  # fully transparent black
    rgba[5:15, 9:11] = (0, 0, 0, 255)  # opaque black stroke
    gray = decode_image(png_bytes(rgba, mode="RGBA"))
    assert gray[0, 0] == 1.0 and gray[10, 10] == 0.0


def test_sixteen_bit_images_are_scaled_not_clipped() -> None:
    array = np.full((10, 10), 65535, dtype=np.uint16)
    array[5, 5] = 0
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    gray = decode_image(buffer.getvalue())
    assert gray.max() == pytest.approx(1.0) and gray[5, 5] == 0.0
