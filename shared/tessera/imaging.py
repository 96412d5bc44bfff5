"""Image operations shared by every entry point: safe decoding, cutting sheets into tiles, and
normalizing a tile the way MNIST was made.

Serving imports this module too, so it depends on numpy and Pillow only.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageOps, UnidentifiedImageError

from tessera.config import PIPELINE
from tessera.errors import InvalidInput

MNIST_SIZE = 28
MNIST_BOX = 20

# Pillow's own bomb check only fires at twice its limit; ours is checked explicitly below, so
# Pillow's is raised out of the way rather than left to warn or fail with a different message.
Image.MAX_IMAGE_PIXELS = None

Gray = NDArray[np.float32]


@dataclass(frozen=True)
class Tile:
    row: int
    col: int
    pixels: Gray


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
        image = ImageOps.exif_transpose(image)
        gray = _to_gray(image)
    except (OSError, SyntaxError, ValueError) as error:
        raise InvalidInput("corrupt_image", f"the image cannot be decoded: {error}") from None
    return gray


def _to_gray(image: Image.Image) -> Gray:
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image, dtype=np.float32)
        top = float(array.max()) or 1.0
        return np.clip(array / (65535.0 if top > 255 else 255.0), 0.0, 1.0).astype(np.float32)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        # Transparent pixels are paper, not ink: composite onto white first.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return np.asarray(image.convert("L"), dtype=np.float32) / 255.0


def encode_png(pixels: Gray) -> bytes:
    """Encode a [0, 1] grayscale array as an 8-bit PNG (deterministic bytes for equal input)."""
    array = np.clip(np.rint(pixels * 255.0), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(array, mode="L").save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


def split_sheet(image: Gray, rows: int, cols: int, *, square: bool = False) -> list[Tile]:
    """Cut an image into rows x cols equal cells, reading order (row by row).

    Like the reference `split_image(image, rows, cols, should_square)`: cell edges are spread
    evenly so every pixel belongs to exactly one tile. With `square`, each cell is cropped to
    the centred square of its shorter side.
    """
    height, width = image.shape
    check_grid_fits(width=width, height=height, rows=rows, cols=cols)
    row_edges = np.linspace(0, height, rows + 1).round().astype(int)
    col_edges = np.linspace(0, width, cols + 1).round().astype(int)
    tiles = []
    for r in range(rows):
        for c in range(cols):
            cell = image[row_edges[r] : row_edges[r + 1], col_edges[c] : col_edges[c + 1]]
            if square:
                cell = _centre_square(cell)
            tiles.append(Tile(row=r, col=c, pixels=cell))
    return tiles


def check_grid_fits(*, width: int, height: int, rows: int, cols: int) -> None:
    limits = PIPELINE.limits
    if rows < 1 or cols < 1:
        raise InvalidInput(
            "bad_grid", f"a grid needs at least one row and column, got {rows}x{cols}"
        )
    if rows * cols > limits.max_grid_cells:
        raise InvalidInput("bad_grid", f"{rows}x{cols} is more than {limits.max_grid_cells} cells")
    if height // rows < limits.min_cell_pixels or width // cols < limits.min_cell_pixels:
        raise InvalidInput(
            "grid_larger_than_image",
            f"a {rows}x{cols} grid does not fit a {width}x{height} image "
            f"(cells must be at least {limits.min_cell_pixels} pixels on a side)",
        )


def _centre_square(cell: Gray) -> Gray:
    height, width = cell.shape
    side = min(height, width)
    top = (height - side) // 2
    left = (width - side) // 2
    return cell[top : top + side, left : left + side]


def ink_image(tile: Gray) -> Gray:
    """Return the tile as ink intensity in [0, 1] on a zero background.

    Dark-on-light tiles (paper) are inverted; the background level is estimated from the
    tile's median and removed, so grey paper and faint scans end on black like MNIST.
    """
    median = float(np.median(tile))
    ink = 1.0 - tile if median > 0.5 else tile.copy()
    background = min(float(np.median(ink)), 0.5)
    ink = np.clip(ink - background, 0.0, None)
    peak = float(ink.max())
    if peak <= 0:
        return np.zeros_like(ink, dtype=np.float32)
    return (ink / peak).astype(np.float32)


def normalize_tile(tile: Gray, *, ink_threshold: float = 0.2) -> Gray | None:
    """Normalize a tile the way MNIST digits were made; None when the tile holds no ink.

    Ink bright on black, cropped to its bounding box, fitted into 20x20 keeping its aspect
    with anti-aliasing, then placed in 28x28 so that its centre of mass is the centre.
    """
    ink = ink_image(tile)
    mask = ink > ink_threshold
    if mask.sum() < 2:
        return None
    ys = np.flatnonzero(mask.any(axis=1))
    xs = np.flatnonzero(mask.any(axis=0))
    ink = np.where(ink > ink_threshold * 0.5, ink, 0.0).astype(np.float32)
    crop = ink[ys[0] : ys[-1] + 1, xs[0] : xs[-1] + 1]
    fitted = _fit_into_box(crop, MNIST_BOX)
    return _centre_by_mass(fitted, MNIST_SIZE)


def _fit_into_box(crop: Gray, box: int) -> Gray:
    height, width = crop.shape
    scale = box / max(height, width)
    new_w = max(1, round(width * scale))
    new_h = max(1, round(height * scale))
    resized = Image.fromarray(crop, mode="F").resize((new_w, new_h), Image.Resampling.LANCZOS)
    return np.clip(np.asarray(resized, dtype=np.float32), 0.0, 1.0)


def _centre_by_mass(glyph: Gray, size: int) -> Gray:
    height, width = glyph.shape
    total = float(glyph.sum())
    if total <= 0:
        cy, cx = (height - 1) / 2, (width - 1) / 2
    else:
        cy = float((glyph.sum(axis=1) * np.arange(height)).sum() / total)
        cx = float((glyph.sum(axis=0) * np.arange(width)).sum() / total)
    centre = (size - 1) / 2
    top = round(centre - cy)
    left = round(centre - cx)
    # Keep the whole glyph inside the canvas even when its mass sits far off its box centre.
    top = min(max(top, 0), size - height)
    left = min(max(left, 0), size - width)
    canvas = np.zeros((size, size), dtype=np.float32)
    canvas[top : top + height, left : left + width] = glyph
    return canvas


def to_vector(normalized: Gray) -> NDArray[np.uint8]:
    """The stored form of a normalized tile: 784 bytes, 0..255, ink bright (MNIST's format)."""
    return np.clip(np.rint(normalized * 255.0), 0, 255).astype(np.uint8).reshape(-1)
