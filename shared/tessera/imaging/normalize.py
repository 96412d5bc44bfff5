"""MNIST's normalization of a tile: ink cropped to its box, fitted into 20x20 keeping its aspect
with anti-aliasing, centred by mass in 28x28, and stored as 784 bytes. One implementation for
Vectorize, batch predictions and the API, so a tile gets the same vector from every entry point.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from tessera.config import GLYPH_BOX, TILE_SIZE
from tessera.imaging.decode import Gray
from tessera.imaging.ink import clean_ink, ink_image


def as_stored_tile(pixels: Gray) -> Gray:
    """A cut tile as Split stores it (an 8-bit PNG) and Vectorize reads it back: the same
    rounding, so batch predictions and the API classify the very vector a row would hold."""
    stored = np.clip(np.rint(pixels * 255.0), 0, 255).astype(np.uint8).astype(np.float32)
    scaled: Gray = stored / np.float32(255.0)
    return scaled


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


# (start, length, out_len, size) -> a (1, GLYPH_BOX, size) matrix; bounded, oldest dropped first.
_SINGLE_WEIGHTS_KEPT = 4096


_single_weights: dict[tuple[int, int, int, int], Gray] = {}


def _resampling_weights(
    start: NDArray[np.int64], length: NDArray[np.int64], out_len: NDArray[np.int64], size: int
) -> Gray:
    """Per tile, a (GLYPH_BOX, size) matrix mapping source pixels [start, start+length) onto
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
    i = np.arange(GLYPH_BOX, dtype=np.float64)[None, :, None]
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
    scale = GLYPH_BOX / np.maximum(box_h, box_w)
    out_h = np.clip(np.rint(box_h * scale), 1, GLYPH_BOX).astype(np.int64)
    out_w = np.clip(np.rint(box_w * scale), 1, GLYPH_BOX).astype(np.int64)
    fitted, cy, cx = _fit_and_centre_of_mass(
        ink, top=top, left=left, box_h=box_h, box_w=box_w, out_h=out_h, out_w=out_w
    )
    centre = (TILE_SIZE - 1) / 2
    # Keep the whole glyph inside the canvas even when its mass sits far off its box centre.
    shift_y = np.clip(np.rint(centre - cy).astype(np.int64), 0, TILE_SIZE - out_h)
    shift_x = np.clip(np.rint(centre - cx).astype(np.int64), 0, TILE_SIZE - out_w)
    canvas = np.zeros((n, TILE_SIZE, TILE_SIZE), dtype=np.float32)
    # Rows of the 20x20 fit past out_h (columns past out_w) are zero, so a block copy per
    # distinct shift places every glyph: at most 9x9 copies for any number of tiles.
    shifts, group = np.unique(shift_y * TILE_SIZE + shift_x, return_inverse=True)
    group = group.reshape(-1)
    order = np.argsort(group, kind="stable")
    bounds = np.searchsorted(group[order], np.arange(shifts.size + 1))
    for index, shift in enumerate(shifts):
        members = order[bounds[index] : bounds[index + 1]]
        if not members.size:
            continue
        sy, sx = divmod(int(shift), TILE_SIZE)
        fit_h, fit_w = min(GLYPH_BOX, TILE_SIZE - sy), min(GLYPH_BOX, TILE_SIZE - sx)
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
    axis = np.arange(GLYPH_BOX, dtype=np.float64)
    cy = np.where(mass > 0, (fitted.sum(axis=2) * axis).sum(axis=1) / safe, (out_h - 1) / 2)
    cx = np.where(mass > 0, (fitted.sum(axis=1) * axis).sum(axis=1) / safe, (out_w - 1) / 2)
    return fitted, cy, cx


def _normalize_one(ink: Gray) -> Gray:
    """`normalize_ink` for a stack of one tile (an API request): the box and the placement on
    Python numbers, the fit and the centre of mass with the stack path's very array
    expressions, so the result is the same to the bit (tests/imaging/test_normalize_regression)."""
    _, height, width = ink.shape
    canvas = np.zeros((1, TILE_SIZE, TILE_SIZE), dtype=np.float32)
    mask = ink[0] > 0
    rows_any, cols_any = mask.any(axis=1), mask.any(axis=0)
    if not rows_any.any():
        return canvas
    top, bottom = int(rows_any.argmax()), height - int(rows_any[::-1].argmax())
    left, right = int(cols_any.argmax()), width - int(cols_any[::-1].argmax())
    box_h, box_w = max(bottom - top, 1), max(right - left, 1)
    scale = GLYPH_BOX / max(box_h, box_w)
    # round() is round-half-even like np.rint.
    out_h = min(max(round(box_h * scale), 1), GLYPH_BOX)
    out_w = min(max(round(box_w * scale), 1), GLYPH_BOX)
    fitted, cy, cx = _fit_and_centre_of_mass(
        ink,
        top=np.array([top]),
        left=np.array([left]),
        box_h=np.array([box_h]),
        box_w=np.array([box_w]),
        out_h=np.array([out_h]),
        out_w=np.array([out_w]),
    )
    centre = (TILE_SIZE - 1) / 2
    sy = min(max(int(np.rint(centre - float(cy[0]))), 0), TILE_SIZE - out_h)
    sx = min(max(int(np.rint(centre - float(cx[0]))), 0), TILE_SIZE - out_w)
    fit_h, fit_w = min(GLYPH_BOX, TILE_SIZE - sy), min(GLYPH_BOX, TILE_SIZE - sx)
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


def model_input(normalized: NDArray[np.float32]) -> NDArray[np.float32]:
    """A normalized 28x28 tile as the model sees it: the 0..255 bytes Vectorize stores in the
    dataset, scaled to [0, 1] the way training scales them, so serving and training agree to
    the bit."""
    return to_vector(normalized).astype(np.float32) / np.float32(255.0)
