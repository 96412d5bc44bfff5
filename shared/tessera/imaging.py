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

from tessera.components import label_components
from tessera.config import PIPELINE
from tessera.errors import InvalidInput

MNIST_SIZE = 28
MNIST_BOX = 20

# Pillow's own bomb check only fires at twice its limit; ours is checked explicitly below, so
# Pillow's is raised out of the way rather than left to warn or fail with a different message.
Image.MAX_IMAGE_PIXELS = None

Gray = NDArray[np.float32]

# A piece of ink smaller than this fraction of its cell (and at least 2 pixels) is a speck.
SPECK_FRACTION = 0.0015


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
    median = _median(tile)
    ink = 1.0 - tile if median > 0.5 else tile.copy()
    background = min(_median(ink), 0.5)
    ink = np.clip(ink - background, 0.0, None)
    peak = float(ink.max())
    if peak <= 0:
        return np.zeros_like(ink, dtype=np.float32)
    scaled: Gray = (ink / peak).astype(np.float32)
    return scaled


def _median(values: Gray) -> float:
    """`np.median` of a float32 array to the bit, without its generic-axis machinery (a third
    of ink_image's time on one tile): the same partition, the same float32 mean of the middle
    two, NaN when there is one."""
    flat = values.reshape(-1)
    size = flat.size
    if values.dtype != np.float32 or size == 0:
        return float(np.median(values))
    half = size // 2
    part = np.partition(flat, [half - 1, half, -1] if size % 2 == 0 else [half, -1])
    if np.isnan(part[-1]):
        return float("nan")
    if size % 2:
        return float(part[half])
    return float((part[half - 1] + part[half]) / np.float32(2.0))


def normalize_tile(tile: Gray, *, ink_threshold: float = 0.2, deslant: bool = False) -> Gray | None:
    """Normalize a tile the way MNIST digits were made; None when the tile holds no ink.

    Ink bright on black, specks and fragments cut in from neighbouring cells dropped, cropped
    to its bounding box, fitted into 20x20 keeping its aspect with anti-aliasing, then placed in
    28x28 so that its centre of mass is the centre. The same code normalizes a whole sheet's
    tiles at once (`normalize_ink`), so a tile gets the same vector from every entry point.
    """
    ink = ink_image(np.asarray(tile, dtype=np.float32))
    cleaned, present = clean_ink(
        ink[None], np.array([ink.shape[0]]), np.array([ink.shape[1]]), threshold=ink_threshold
    )
    if not present[0]:
        return None
    normalized: Gray = normalize_ink(cleaned, deslant=deslant)[0]
    return normalized


def _shifted_max(mask: NDArray[np.bool_]) -> NDArray[np.bool_]:
    """3x3 dilation of the last two axes."""
    grown = mask.copy()
    grown[..., 1:, :] |= mask[..., :-1, :]
    grown[..., :-1, :] |= mask[..., 1:, :]
    wide = grown.copy()
    wide[..., :, 1:] |= grown[..., :, :-1]
    wide[..., :, :-1] |= grown[..., :, 1:]
    return wide


def clean_ink(
    ink: Gray,
    heights: NDArray[np.int64],
    widths: NDArray[np.int64],
    *,
    threshold: float,
    ruled: bool = True,
    values: Gray | None = None,
) -> tuple[Gray, NDArray[np.bool_]]:
    """Keep the symbol in each tile of a stack (n, h, w) of bright-on-black ink; drop the rest.

    Tile k's real size is heights[k] x widths[k] (stacks of uneven cells are zero-padded).
    Dropped: specks; pieces touching the cell edge that are small next to the tile's main
    stroke (a neighbour's tail); with `ruled`, thin long pieces along the cell's edge (what is
    left of a ruled line after line removal, or a border the cut caught).
    With `values` (same shape), what is ink is decided on `ink` and the kept pixels take their
    level from `values`: a smoothed page decides, the unsmoothed one is kept.
    Returns the cleaned stack and, per tile, whether any ink is left (False = empty cell).
    """
    n, height, width = ink.shape
    mask = ink > threshold
    source = ink if values is None else values
    if not ruled and height * width * SPECK_FRACTION <= 2:
        return _clean_gap_cells(ink, source, mask, heights * widths, threshold=threshold)
    if n == 1:
        return _clean_one_tile(
            ink, source, mask, int(heights[0]), int(widths[0]), threshold=threshold, ruled=ruled
        )
    # A blank row after each tile keeps components from running across tiles.
    padded = np.zeros((n, height + 1, width), dtype=np.bool_)
    padded[:, :height] = mask
    parts = label_components(padded.reshape(n * (height + 1), width))
    present = np.zeros(n, dtype=np.bool_)
    if parts.count == 0:
        return np.zeros_like(ink), present
    tile_of = parts.top // (height + 1)
    top = parts.top - tile_of * (height + 1)
    bottom = parts.bottom - tile_of * (height + 1)
    tile_h = heights[tile_of]
    tile_w = widths[tile_of]
    cell_area = tile_h * tile_w
    touches = (top == 0) | (parts.left == 0) | (bottom >= tile_h) | (parts.right >= tile_w)
    box_h = bottom - top
    box_w = parts.right - parts.left
    middle_y = (top + bottom) / 2
    middle_x = (parts.left + parts.right) / 2
    near_edge_y = (middle_y * 5 <= tile_h) | (middle_y * 5 >= tile_h * 4)
    near_edge_x = (middle_x * 5 <= tile_w) | (middle_x * 5 >= tile_w * 4)
    # A ruled line's remnant is thin, long and hugs the edge; a "1" is thin and long too but
    # stands near the middle of its cell.
    line_like = ((box_h * 10 <= tile_h) & (box_w * 3 >= tile_w) & near_edge_y) | (
        (box_w * 10 <= tile_w) & (box_h * 3 >= tile_h) & near_edge_x
    )
    # A line that bows or leans within the cell leaves a thicker sliver, still along the edge
    # it touches and most of the cell long.
    line_like |= touches & (
        ((box_h * 6 <= tile_h) & (box_w * 3 >= tile_w * 2) & near_edge_y)
        | ((box_w * 6 <= tile_w) & (box_h * 3 >= tile_h * 2) & near_edge_x)
    )
    speck = parts.area < np.maximum(2, cell_area * SPECK_FRACTION)
    candidate = ~speck & ~((touches | line_like) & line_like) if ruled else ~speck
    largest = np.zeros(n, dtype=np.int64)
    np.maximum.at(largest, tile_of[candidate], parts.area[candidate])
    main = largest[tile_of]
    keep = candidate & np.where(touches, parts.area * 3 >= main, parts.area * 20 >= main)
    kept_area = np.zeros(n, dtype=np.int64)
    np.add.at(kept_area, tile_of[keep], parts.area[keep])
    present = kept_area >= np.maximum(3, heights * widths * 0.006)
    kept = parts.paint(keep, (n * (height + 1), width))
    kept = kept.reshape(n, height + 1, width)[:, :height]
    # Anti-aliased edges sit below the threshold: keep faint ink next to kept strokes.
    near = _shifted_max(kept)
    cleaned = np.where(near & (ink > threshold * 0.5), source, 0.0).astype(np.float32)
    cleaned[~present] = 0.0
    return cleaned, present


def _clean_one_tile(
    ink: Gray,
    source: Gray,
    mask: NDArray[np.bool_],
    tile_h: int,
    tile_w: int,
    *,
    threshold: float,
    ruled: bool,
) -> tuple[Gray, NDArray[np.bool_]]:
    """`clean_ink`'s rules for a stack of one tile (an API request), on Python numbers: a tile
    has a handful of components, and the stack's array passes cost more than the rules. Every
    comparison is the stack path's, on the same integers and float64 values, so the two agree
    to the bit (tests/sheets/test_normalize_regression.py)."""
    height, width = mask.shape[1:]
    parts = label_components(mask[0])
    empty = np.zeros((1, height, width), dtype=np.float32), np.zeros(1, dtype=np.bool_)
    if parts.count == 0:
        return empty
    speck_below = max(2, tile_h * tile_w * SPECK_FRACTION)
    rules = []
    for area, top, left, bottom, right in zip(
        parts.area.tolist(),
        parts.top.tolist(),
        parts.left.tolist(),
        parts.bottom.tolist(),
        parts.right.tolist(),
        strict=True,
    ):
        touches = top == 0 or left == 0 or bottom >= tile_h or right >= tile_w
        box_h, box_w = bottom - top, right - left
        middle_y, middle_x = (top + bottom) / 2, (left + right) / 2
        near_edge_y = middle_y * 5 <= tile_h or middle_y * 5 >= tile_h * 4
        near_edge_x = middle_x * 5 <= tile_w or middle_x * 5 >= tile_w * 4
        line_like = (box_h * 10 <= tile_h and box_w * 3 >= tile_w and near_edge_y) or (
            box_w * 10 <= tile_w and box_h * 3 >= tile_h and near_edge_x
        )
        line_like = line_like or (
            touches
            and (
                (box_h * 6 <= tile_h and box_w * 3 >= tile_w * 2 and near_edge_y)
                or (box_w * 6 <= tile_w and box_h * 3 >= tile_h * 2 and near_edge_x)
            )
        )
        candidate = not area < speck_below and not (ruled and line_like)
        rules.append((area, touches, candidate))
    main = max((area for area, _, candidate in rules if candidate), default=0)
    keep = [
        candidate and (area * 3 >= main if touches else area * 20 >= main)
        for area, touches, candidate in rules
    ]
    kept_area = sum(area for (area, _, _), kept in zip(rules, keep, strict=True) if kept)
    if not kept_area >= max(3, tile_h * tile_w * 0.006):
        return empty
    kept_mask = parts.paint(np.asarray(keep, dtype=np.bool_), (height, width))
    # Anti-aliased edges sit below the threshold: keep faint ink next to kept strokes.
    near = _shifted_max(kept_mask[None])
    cleaned = np.where(near & (ink > threshold * 0.5), source, 0.0).astype(np.float32)
    return cleaned, np.ones(1, dtype=np.bool_)


def _clean_gap_cells(
    ink: Gray, source: Gray, mask: NDArray[np.bool_], areas: NDArray[np.int64], *, threshold: float
) -> tuple[Gray, NDArray[np.bool_]]:
    """`clean_ink` for small cells cut through the gaps between symbols, without labelling.

    The cuts cross the least ink, so there are no ruled-line remnants and no neighbours' tails
    to take apart (on the 5000-cell sheet and on generated unruled photos the per-component
    rules changed no prediction), and in a cell this small the speck rule only drops lone
    pixels, of which the mask has none: the page's 3x3 smoothing turns a single bright pixel
    into a 3x3 patch. Labelling thousands of cells was half the time of a sheet."""
    near = _shifted_max(mask)
    present = mask.sum(axis=(1, 2)) >= np.maximum(3, areas * 0.006)
    cleaned = np.where(near & (ink > threshold * 0.5), source, 0.0).astype(np.float32)
    cleaned[~present] = 0.0
    return cleaned, present


# (start, length, out_len, size) -> a (1, MNIST_BOX, size) matrix; bounded, oldest dropped first.
_SINGLE_WEIGHTS_KEPT = 4096
_single_weights: dict[tuple[int, int, int, int], Gray] = {}


def _resampling_weights(
    start: NDArray[np.int64], length: NDArray[np.int64], out_len: NDArray[np.int64], size: int
) -> Gray:
    """Per tile, a (MNIST_BOX, size) matrix mapping source pixels [start, start+length) onto
    out_len output pixels with a triangle filter widened when shrinking (anti-aliasing)."""
    if start.size == 1:
        # One tile (an API request): np.unique's sort costs more than the matrix itself, and the
        # few hundred (start, length, out_len) triples a server sees are worth keeping.
        key = (int(start[0]), int(length[0]), int(out_len[0]), size)
        weights = _single_weights.get(key)
        if weights is None:
            weights = _triangle_weights(start, length, out_len, size)
            weights.flags.writeable = False
            if len(_single_weights) >= _SINGLE_WEIGHTS_KEPT:
                _single_weights.pop(next(iter(_single_weights)))
            _single_weights[key] = weights
        return weights
    # A sheet's thousands of tiles share a few hundred (start, length, out_len) triples: each
    # distinct matrix is made once and gathered.
    keys = np.stack([start, length, out_len], axis=1)
    distinct, inverse = np.unique(keys, axis=0, return_inverse=True)
    return _triangle_weights(distinct[:, 0], distinct[:, 1], distinct[:, 2], size)[
        inverse.reshape(-1)
    ]


def _triangle_weights(
    start: NDArray[np.int64], length: NDArray[np.int64], out_len: NDArray[np.int64], size: int
) -> Gray:
    scale = out_len / length  # output pixels per source pixel
    i = np.arange(MNIST_BOX, dtype=np.float64)[None, :, None]
    j = np.arange(size, dtype=np.float64)[None, None, :]
    centre = start[:, None, None] + (i + 0.5) / scale[:, None, None]
    support = np.maximum(1.0, 1.0 / scale)[:, None, None]
    weights = np.clip(1.0 - np.abs(j + 0.5 - centre) / support, 0.0, None)
    inside = (j >= start[:, None, None]) & (j < (start + length)[:, None, None])
    weights = weights * inside * (i < out_len[:, None, None])
    totals = weights.sum(axis=2, keepdims=True)
    return (weights / np.where(totals > 0, totals, 1.0)).astype(np.float32)


def normalize_ink(ink: Gray, *, deslant: bool = False) -> Gray:
    """MNIST's recipe on a stack (n, h, w) of cleaned bright-on-black ink: crop each to its
    bounding box, fit it into 20x20 keeping aspect (anti-aliased), centre by mass in 28x28.
    Tiles with no ink come out black."""
    if deslant:
        ink = np.stack([_deslant(tile) for tile in ink]) if len(ink) else ink
    n, height, width = ink.shape
    if n == 1:
        return _normalize_one(ink)
    mask: NDArray[np.bool_] = ink > 0
    rows_any: NDArray[np.bool_] = np.any(mask, axis=2)
    cols_any: NDArray[np.bool_] = np.any(mask, axis=1)
    has_ink = np.any(rows_any, axis=1)
    top = np.argmax(rows_any, axis=1).astype(np.int64)
    bottom = height - np.argmax(rows_any[:, ::-1], axis=1).astype(np.int64)
    left = np.argmax(cols_any, axis=1).astype(np.int64)
    right = width - np.argmax(cols_any[:, ::-1], axis=1).astype(np.int64)
    box_h = np.maximum(bottom - top, 1)
    box_w = np.maximum(right - left, 1)
    scale = MNIST_BOX / np.maximum(box_h, box_w)
    out_h = np.clip(np.rint(box_h * scale), 1, MNIST_BOX).astype(np.int64)
    out_w = np.clip(np.rint(box_w * scale), 1, MNIST_BOX).astype(np.int64)
    fitted, cy, cx = _fit_and_centre_of_mass(
        ink, top=top, left=left, box_h=box_h, box_w=box_w, out_h=out_h, out_w=out_w
    )
    centre = (MNIST_SIZE - 1) / 2
    # Keep the whole glyph inside the canvas even when its mass sits far off its box centre.
    shift_y = np.clip(np.rint(centre - cy).astype(np.int64), 0, MNIST_SIZE - out_h)
    shift_x = np.clip(np.rint(centre - cx).astype(np.int64), 0, MNIST_SIZE - out_w)
    canvas = np.zeros((n, MNIST_SIZE, MNIST_SIZE), dtype=np.float32)
    # Rows of the 20x20 fit past out_h (columns past out_w) are zero, so a block copy per
    # distinct shift places every glyph: at most 9x9 copies for any number of tiles.
    shifts, group = np.unique(shift_y * MNIST_SIZE + shift_x, return_inverse=True)
    group = group.reshape(-1)
    order = np.argsort(group, kind="stable")
    bounds = np.searchsorted(group[order], np.arange(shifts.size + 1))
    for index, shift in enumerate(shifts):
        members = order[bounds[index] : bounds[index + 1]]
        if not members.size:
            continue
        sy, sx = divmod(int(shift), MNIST_SIZE)
        fit_h, fit_w = min(MNIST_BOX, MNIST_SIZE - sy), min(MNIST_BOX, MNIST_SIZE - sx)
        canvas[members, sy : sy + fit_h, sx : sx + fit_w] = fitted[members, :fit_h, :fit_w]
    canvas[~has_ink] = 0.0
    return canvas


def _fit_and_centre_of_mass(
    ink: NDArray[np.float32],
    *,
    top: NDArray[np.int64],
    left: NDArray[np.int64],
    box_h: NDArray[np.int64],
    box_w: NDArray[np.int64],
    out_h: NDArray[np.int64],
    out_w: NDArray[np.int64],
) -> tuple[NDArray[np.float32], NDArray[np.float64], NDArray[np.float64]]:
    """Each tile's ink box resampled into the top-left of 20x20 (anti-aliased, peak scaled to
    1), and the centre of mass of the result; shared by the stack and the one-tile paths so
    both give the same bits."""
    _, height, width = ink.shape
    along_rows = _resampling_weights(top, box_h, out_h, height)
    along_cols = _resampling_weights(left, box_w, out_w, width)
    fitted = np.matmul(np.matmul(along_rows, ink), along_cols.transpose(0, 2, 1))
    peak = fitted.reshape(fitted.shape[0], -1).max(axis=1)
    fitted = np.asarray(fitted, dtype=np.float32)
    fitted /= np.where(peak > 0, peak, 1.0).astype(np.float32)[:, None, None]
    np.clip(fitted, 0.0, 1.0, out=fitted)
    mass = fitted.sum(axis=(1, 2))
    safe = np.where(mass > 0, mass, 1.0)
    axis = np.arange(MNIST_BOX, dtype=np.float64)
    cy = np.where(mass > 0, (fitted.sum(axis=2) * axis).sum(axis=1) / safe, (out_h - 1) / 2)
    cx = np.where(mass > 0, (fitted.sum(axis=1) * axis).sum(axis=1) / safe, (out_w - 1) / 2)
    return fitted, cy, cx


def _normalize_one(ink: Gray) -> Gray:
    """`normalize_ink` for a stack of one tile (an API request): the box and the placement on
    Python numbers, the fit and the centre of mass with the stack path's very array
    expressions, so the result is the same to the bit (tests/sheets/test_normalize_regression)."""
    _, height, width = ink.shape
    canvas = np.zeros((1, MNIST_SIZE, MNIST_SIZE), dtype=np.float32)
    mask = ink[0] > 0
    rows_any, cols_any = mask.any(axis=1), mask.any(axis=0)
    if not rows_any.any():
        return canvas
    top, bottom = int(rows_any.argmax()), height - int(rows_any[::-1].argmax())
    left, right = int(cols_any.argmax()), width - int(cols_any[::-1].argmax())
    box_h, box_w = max(bottom - top, 1), max(right - left, 1)
    scale = MNIST_BOX / max(box_h, box_w)
    # round() is round-half-even like np.rint.
    out_h = min(max(round(box_h * scale), 1), MNIST_BOX)
    out_w = min(max(round(box_w * scale), 1), MNIST_BOX)
    fitted, cy, cx = _fit_and_centre_of_mass(
        ink,
        top=np.array([top]),
        left=np.array([left]),
        box_h=np.array([box_h]),
        box_w=np.array([box_w]),
        out_h=np.array([out_h]),
        out_w=np.array([out_w]),
    )
    centre = (MNIST_SIZE - 1) / 2
    sy = min(max(int(np.rint(centre - float(cy[0]))), 0), MNIST_SIZE - out_h)
    sx = min(max(int(np.rint(centre - float(cx[0]))), 0), MNIST_SIZE - out_w)
    fit_h, fit_w = min(MNIST_BOX, MNIST_SIZE - sy), min(MNIST_BOX, MNIST_SIZE - sx)
    canvas[0, sy : sy + fit_h, sx : sx + fit_w] = fitted[0, :fit_h, :fit_w]
    return canvas


def _deslant(ink: Gray) -> Gray:
    """Shear a glyph upright by its second moments (the deskewing often paired with MNIST)."""
    total = float(ink.sum())
    if total <= 0:
        return ink
    ys, xs = np.mgrid[: ink.shape[0], : ink.shape[1]]
    cy = float((ys * ink).sum() / total)
    cx = float((xs * ink).sum() / total)
    mu02 = float((((ys - cy) ** 2) * ink).sum() / total)
    mu11 = float(((ys - cy) * (xs - cx) * ink).sum() / total)
    if mu02 < 1e-6:
        return ink
    slant = float(np.clip(mu11 / mu02, -1.0, 1.0))
    # Pillow's affine maps output (x, y) to input (a*x + b*y + c, d*x + e*y + f).
    image = Image.fromarray(ink.astype(np.float32), mode="F")
    sheared = image.transform(
        image.size,
        Image.Transform.AFFINE,
        (1.0, slant, -slant * cy, 0.0, 1.0, 0.0),
        resample=Image.Resampling.BILINEAR,
    )
    return np.asarray(sheared, dtype=np.float32)


def to_vector(normalized: Gray) -> NDArray[np.uint8]:
    """The stored form of a normalized tile: 784 bytes, 0..255, ink bright (MNIST's format)."""
    vector: NDArray[np.uint8] = np.clip(np.rint(normalized * 255.0), 0, 255).astype(np.uint8)
    return vector.reshape(-1)


def to_vectors(normalized: Gray) -> NDArray[np.uint8]:
    """`to_vector` for a stack (n, 28, 28) at once: (n, 784) bytes."""
    stack = np.asarray(normalized)
    vectors: NDArray[np.uint8] = np.clip(np.rint(stack * 255.0), 0, 255).astype(np.uint8)
    return vectors.reshape(stack.shape[0], -1)
