"""Where a sheet is cut: the grid given, or found from ruled lines or the gaps between symbols,
and every cell cleaned (ruled lines and neighbours' fragments erased, empty cells found).

Serving imports this too, so it depends on numpy and Pillow only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import cached_property

import numpy as np
from numpy.typing import NDArray

from tessera.config import PIPELINE
from tessera.errors import InvalidInput
from tessera.imaging.connected_components import Ints
from tessera.imaging.decode import Gray
from tessera.imaging.ink import clean_ink
from tessera.imaging.normalize import normalize_ink
from tessera.sheets.document import flatten_page
from tessera.sheets.freeform import SymbolCutting, cut_symbols
from tessera.sheets.gaps import gap_grid, grid_holds_symbols
from tessera.sheets.page import prepare_page
from tessera.sheets.ruling import along_lines, follow_lines, ruled_grid
from tessera.sheets.tiles import Tile
from tessera.sheets.tilt import MIN_SKEW_DEGREES, Tilt, estimate_tilt, level


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


@dataclass(frozen=True)
class Cutting:
    """A sheet cut into cells. Tiles hold cleaned ink (bright on black, ruled lines and
    neighbours' fragments removed), one per cell in reading order, empty cells included."""

    rows: int
    cols: int
    empty: list[tuple[int, int]]
    grid_source: str  # "given", "ruled" or "gaps"
    skew_degrees: float
    row_edges: list[int]
    col_edges: list[int]
    page: Gray = field(repr=False)  # the levelled working page the cells were cut from
    working_boxes: list[tuple[int, int, int, int]] = field(repr=False)  # per cell, on `page`
    _ink: Gray = field(repr=False)
    _present: NDArray[np.bool_] = field(repr=False)
    _heights: Ints = field(repr=False)
    _widths: Ints = field(repr=False)

    @cached_property
    def tiles(self) -> list[Tile]:
        # Made on first use: the vectors come from the stack, and a 5000-cell sheet's tile
        # objects cost more than its whole normalization.
        return [
            Tile(
                row=r, col=c, pixels=self._ink[index, : self._heights[index], : self._widths[index]]
            )
            for index, (r, c) in enumerate(np.ndindex(self.rows, self.cols))
        ]

    @property
    def inked(self) -> list[Tile]:
        return [tile for tile, present in zip(self.tiles, self._present, strict=True) if present]

    def normalized(self, *, deslant: bool = False) -> tuple[Gray, NDArray[np.bool_]]:
        """All cells as (n, 28, 28) MNIST-style arrays, and which cells hold ink."""
        return normalize_ink(self._ink, deslant=deslant), self._present.copy()

    def manifest(self) -> dict[str, object]:
        return {
            "layout": self.grid_source,
            "rows": self.rows,
            "cols": self.cols,
            "grid_source": self.grid_source,
            "skew_degrees": round(self.skew_degrees, 2),
            "cells": self.rows * self.cols,
            "inked": int(self._present.sum()),
            "empty": [[r, c] for r, c in self.empty],
            "detection_score": self.detection_score,
        }

    @property
    def detection_score(self) -> float:
        """How well the grid holds the ink: the share of inked cells whose ink keeps clear of
        the cell's edges (a symbol cut by a wrong grid touches them)."""
        inked = self.inked
        if not inked:
            return 0.0
        clear = 0
        for tile in inked:
            rows = np.flatnonzero(tile.pixels.max(axis=1) > 0)
            cols = np.flatnonzero(tile.pixels.max(axis=0) > 0)
            h, w = tile.pixels.shape
            if rows.size and rows[0] > 0 and rows[-1] < h - 1 and cols[0] > 0 and cols[-1] < w - 1:
                clear += 1
        return round(clear / len(inked), 3)


def equal_edges(size: int, count: int) -> Ints:
    return np.linspace(0, size, count + 1).round().astype(np.int64)


def _check_page(gray: Gray) -> None:
    height, width = gray.shape
    side = PIPELINE.limits.min_cell_pixels
    if height < side or width < side:
        raise InvalidInput(
            "image_too_small",
            f"a {width}x{height} image is smaller than one {side}x{side} cell",
        )


SheetCut = Cutting | SymbolCutting
LAYOUTS = ("auto", "grid", "free")


def cut_sheet(
    image: Gray,
    rows: int | None = None,
    cols: int | None = None,
    *,
    square: bool = False,
    layout: str = "auto",
) -> SheetCut:
    """Cut a photographed or scanned sheet into clean cells, finding the grid when not told.

    A grid given in rows/cols wins; ruled lines that agree with it place the cell edges, else
    the page is cut evenly. With no grid given it comes from ruled lines, else from the gaps
    between rows and columns of ink, else the page is read as free-form symbols (lines of
    hand-placed symbols, loose symbols, one symbol). `layout="free"` reads symbols without
    looking for a grid; `layout="grid"` never falls back to symbols. Raises `InvalidInput` for
    pages with no ink (`blank_page`), no findable grid (`grid_not_found`, grid layout only), no
    symbols (`no_symbols`) or cells too small to read.
    """
    if layout not in LAYOUTS:
        raise InvalidInput("bad_metadata", f"layout={layout!r} is not one of {list(LAYOUTS)}")
    gray = np.asarray(image, dtype=np.float32)
    _check_page(gray)
    flat = flatten_page(gray)
    if flat is not None:
        # A photo of a page on a table: read the page, warped flat; symbols' boxes are
        # mapped back to the photo's pixels.
        cut = cut_sheet(flat.image, rows, cols, square=square, layout=layout)
        if isinstance(cut, SymbolCutting):
            shape = (int(gray.shape[0]), int(gray.shape[1]))
            return replace(cut, boxes=[flat.to_photo(box, shape) for box in cut.boxes])
        return cut
    if rows is not None and cols is not None:
        check_grid_fits(width=gray.shape[1], height=gray.shape[0], rows=rows, cols=cols)
    page = prepare_page(gray)
    mask = page.mask
    if not mask.any() and (rows is None or cols is None):
        raise InvalidInput("blank_page", "the page holds no ink, so there is no grid to find")
    tilt = estimate_tilt(mask) if mask.any() else Tilt(0.0, 0.0)
    skew = tilt.degrees
    ink, values = page.ink, page.values
    if max(abs(tilt.rows), abs(tilt.cols)) >= MIN_SKEW_DEGREES:
        ink, values = level(ink, tilt), level(values, tilt)
        mask = ink > page.threshold
    height, width = ink.shape
    min_cell = PIPELINE.limits.min_cell_pixels

    def symbols() -> SymbolCutting:
        return cut_symbols(
            page.mask,
            page.values,
            ink=page.ink,
            shade=page.shade,
            threshold=page.threshold,
            scale=page.scale,
            source_shape=(int(gray.shape[0]), int(gray.shape[1])),
        )

    if layout == "free":
        return symbols()
    shown = values
    ruled = ruled_grid(mask) if mask.any() else None
    source = "given"
    if ruled is not None:
        row_edges, col_edges = ruled.row_edges, ruled.col_edges
        source = "ruled"
    else:
        gaps = gap_grid(mask, max(min_cell, 6)) if mask.any() else None
        if gaps is None:
            if (rows is None or cols is None) and layout == "auto":
                return symbols()
            if rows is None or cols is None:
                raise InvalidInput(
                    "grid_not_found",
                    "no ruled lines or regular gaps between symbols were found: "
                    "set metadata grid=ROWSxCOLS",
                )
            row_edges, col_edges = equal_edges(height, rows), equal_edges(width, cols)
        else:
            row_edges, col_edges = gaps
            source = "gaps"
            # Hand-placed rows have gaps too: the gap grid stands only if every symbol sits
            # inside one of its cells, else the page is read as symbols.
            unnamed = rows is None and cols is None and layout == "auto"
            if unnamed and not grid_holds_symbols(row_edges, col_edges, mask):
                return symbols()
    given = rows is not None and cols is not None
    found_shape = (len(row_edges) - 1, len(col_edges) - 1)
    mismatched = source == "given" or (source == "gaps" and found_shape != (rows, cols))
    if given and layout == "auto" and mismatched:
        # Hand-placed rows with the grid given and no ruling to place it: when the symbols
        # found make that grid, they are its cells (equal cells over the page cut them).
        assert rows is not None and cols is not None
        placed = _symbols_in_grid(symbols, rows, cols) if mask.any() else None
        if placed is not None:
            return placed
    # The given grid wins; found edges are kept only along an axis where they agree with it.
    if rows is not None and len(row_edges) - 1 != rows:
        row_edges, source = equal_edges(height, rows), "given"
    if cols is not None and len(col_edges) - 1 != cols:
        col_edges, source = equal_edges(width, cols), "given"
    found_rows, found_cols = len(row_edges) - 1, len(col_edges) - 1
    if rows is None or cols is None:
        _check_found_grid(row_edges, col_edges, width=width, height=height)
    # Cell (r, c) spans rows tops[r, c]:tops[r + 1, c] and columns lefts[c, r]:lefts[c + 1, r].
    tops = np.repeat(row_edges[:, None], found_cols, axis=1)
    lefts = np.repeat(col_edges[:, None], found_rows, axis=1)
    if ruled is not None and source == "ruled":
        tops = follow_lines(ruled.horizontal, row_edges, col_edges)
        lefts = follow_lines(ruled.vertical.T, col_edges, row_edges)
        line_pixels = along_lines(ruled.horizontal, tops, col_edges)
        line_pixels |= along_lines(ruled.vertical.T, lefts, row_edges).T
        ink = np.where(line_pixels, 0.0, ink).astype(np.float32)
        values = np.where(line_pixels, 0.0, values).astype(np.float32)
    cut = _cells(
        ink,
        values,
        shown,
        tops,
        lefts,
        row_edges=row_edges,
        col_edges=col_edges,
        threshold=page.threshold,
        square=square,
        source=source,
        skew=skew,
        rows=found_rows,
        cols=found_cols,
    )
    if not cut.inked:
        raise InvalidInput(
            "blank_page",
            f"a {cut.rows}x{cut.cols} grid ({cut.grid_source}) was found but every cell is "
            "empty: nothing on the sheet to read",
        )
    return cut


def _symbols_in_grid(
    read: Callable[[], SymbolCutting], rows: int, cols: int
) -> SymbolCutting | None:
    """The page read as symbols, when they make exactly the grid given (rows lines of cols)."""
    try:
        cutting = read()
    except InvalidInput:
        return None
    return cutting if cutting.line_counts == [cols] * rows else None


def cut_free(image: Gray) -> SymbolCutting:
    """`cut_sheet(image, layout="free")`: the page's symbols, without looking for a grid."""
    cutting = cut_sheet(image, layout="free")
    assert isinstance(cutting, SymbolCutting)
    return cutting


def _check_found_grid(row_edges: Ints, col_edges: Ints, *, width: int, height: int) -> None:
    limits = PIPELINE.limits
    cells = (len(row_edges) - 1) * (len(col_edges) - 1)
    if cells > limits.max_grid_cells:
        raise InvalidInput("bad_grid", f"found {cells} cells, over {limits.max_grid_cells}")
    smallest = min(int(np.diff(row_edges).min()), int(np.diff(col_edges).min()))
    if smallest < limits.min_cell_pixels:
        raise InvalidInput(
            "grid_too_dense",
            f"the grid's cells are {smallest} pixels across in a {width}x{height} image; "
            f"at least {limits.min_cell_pixels} are needed to read a symbol",
        )


def _cells(
    ink: Gray,
    values: Gray,
    shown: Gray,
    tops: Ints,
    lefts: Ints,
    *,
    row_edges: Ints,
    col_edges: Ints,
    threshold: float,
    square: bool,
    source: str,
    skew: float,
    rows: int,
    cols: int,
) -> Cutting:
    # Per cell in reading order, as arrays: a sheet can hold thousands of cells.
    top = tops[:-1].reshape(-1)
    bottom = tops[1:].reshape(-1)
    left = lefts[:-1].T.reshape(-1)
    right = lefts[1:].T.reshape(-1)
    if square:
        side = np.minimum(bottom - top, right - left)
        top = top + (bottom - top - side) // 2
        left = left + (right - left - side) // 2
        bottom, right = top + side, left + side
    bottom = np.maximum(bottom, top + 1)
    right = np.maximum(right, left + 1)
    heights, widths = bottom - top, right - left
    shape = (rows * cols, int(heights.max()), int(widths.max()))
    uniform = heights.min() == heights.max() and widths.min() == widths.max()
    straight = bool((tops == tops[:, :1]).all() and (lefts == lefts[:, :1]).all())
    if uniform and straight and not square and _contiguous(row_edges) and _contiguous(col_edges):
        # Equal cells tile the page: one reshape instead of thousands of slices.
        h, w = shape[1], shape[2]
        first, start = int(row_edges[0]), int(col_edges[0])

        def stacked(page: Gray) -> Gray:
            block = page[first : first + rows * h, start : start + cols * w]
            return block.reshape(rows, h, cols, w).transpose(0, 2, 1, 3).reshape(-1, h, w)

        stack, value_stack = stacked(ink), stacked(values)
    else:
        stack = np.zeros(shape, dtype=np.float32)
        value_stack = np.zeros(shape, dtype=np.float32)
        for index in range(rows * cols):
            area = np.s_[top[index] : bottom[index], left[index] : right[index]]
            stack[index, : heights[index], : widths[index]] = ink[area]
            value_stack[index, : heights[index], : widths[index]] = values[area]
    cleaned, present = clean_ink(
        stack, heights, widths, threshold=threshold, ruled=source != "gaps", values=value_stack
    )
    empty = [divmod(int(index), cols) for index in np.flatnonzero(~present)]
    return Cutting(
        rows=rows,
        cols=cols,
        empty=empty,
        grid_source=source,
        skew_degrees=skew,
        row_edges=[int(v) for v in row_edges],
        col_edges=[int(v) for v in col_edges],
        page=shown,
        working_boxes=[
            (int(t), int(lf), int(b), int(r))
            for t, lf, b, r in zip(top, left, bottom, right, strict=True)
        ],
        _ink=cleaned,
        _present=present,
        _heights=heights,
        _widths=widths,
    )


def _contiguous(edges: Ints) -> bool:
    steps = np.diff(edges)
    return bool(steps.size and (steps == steps[0]).all())
