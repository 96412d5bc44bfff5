"""Ink in a tile: paper turned into bright-on-black ink, and the symbol kept while specks,
ruled-line remnants and neighbours' fragments are dropped (one tile or a whole sheet's stack)."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from tessera.imaging.connected_components import label_components
from tessera.imaging.decode import Gray

# A piece of ink smaller than this fraction of its cell (and at least 2 pixels) is a speck.
SPECK_FRACTION = 0.0015


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
    to the bit (tests/imaging/test_normalize_regression.py)."""
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
