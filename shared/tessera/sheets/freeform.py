"""A page read as symbols rather than cells: the `Cutting` of a page without a grid.

Each symbol becomes a tile exactly as a grid cell does: row = its line, col = its position in
the line, so tile keys (`r003-c007.png`) and dataset rows are derived from the sheet and the
symbol's place, and a redelivered sheet rewrites the same objects.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
from numpy.typing import NDArray

from tessera.errors import InvalidInput
from tessera.imaging.connected_components import Mask
from tessera.imaging.decode import Gray
from tessera.imaging.normalize import normalize_ink
from tessera.sheets.lines import line_angle
from tessera.sheets.symbols import SymbolLayout, component_image, find_symbols
from tessera.sheets.tiles import Tile
from tessera.sheets.tilt import MIN_SKEW_DEGREES, Tilt, level, unlevel_box

# A leaning page is levelled, read, and its remaining lean corrected up to this many times.
LEVEL_PASSES = 3
# Around a symbol's box, this many working pixels of its own ink's edge are kept.
_MARGIN = 2


@dataclass(frozen=True)
class SymbolCutting:
    """Symbols found on a page, in reading order, each with its tile. `boxes` are in source
    pixels (top, left, bottom, right); `working_boxes` in the levelled working page, which
    `page` holds (for the overlay)."""

    layout: SymbolLayout
    boxes: list[tuple[int, int, int, int]]
    skew_degrees: float
    page: Gray = field(repr=False)
    _tiles: list[Tile] = field(repr=False)
    # Symbols touching the page's edge may be cut off by it: said, not guessed.
    cut_by_edge: list[bool] = field(default_factory=list)
    grid_source: str = "symbols"

    @property
    def rows(self) -> int:
        return len(self.layout.line_counts)

    @property
    def cols(self) -> int:
        return max(self.layout.line_counts, default=0)

    @property
    def empty(self) -> list[tuple[int, int]]:
        return []

    @property
    def line_counts(self) -> list[int]:
        return list(self.layout.line_counts)

    @property
    def working_boxes(self) -> list[tuple[int, int, int, int]]:
        return [symbol.box for symbol in self.layout.symbols]

    @property
    def tiles(self) -> list[Tile]:
        return self._tiles

    @property
    def inked(self) -> list[Tile]:
        return self._tiles

    @cached_property
    def _stack(self) -> Gray:
        if not self._tiles:
            return np.zeros((0, 1, 1), dtype=np.float32)
        height = max(tile.pixels.shape[0] for tile in self._tiles)
        width = max(tile.pixels.shape[1] for tile in self._tiles)
        stack = np.zeros((len(self._tiles), height, width), dtype=np.float32)
        for index, tile in enumerate(self._tiles):
            h, w = tile.pixels.shape
            stack[index, :h, :w] = tile.pixels
        return stack

    def normalized(self, *, deslant: bool = False) -> tuple[Gray, NDArray[np.bool_]]:
        """All symbols as (n, 28, 28) MNIST-style arrays; every one holds ink."""
        return normalize_ink(self._stack, deslant=deslant), np.ones(len(self._tiles), bool)

    def manifest(self) -> dict[str, object]:
        return {
            "layout": "symbols",
            "rows": self.rows,
            "cols": self.cols,
            "grid_source": "symbols",
            "skew_degrees": round(self.skew_degrees, 2),
            "cells": len(self._tiles),
            "inked": len(self._tiles),
            "empty": [],
            "lines": self.line_counts,
            "symbols": [
                {"line": tile.row, "position": tile.col, "box": list(box)}
                | ({"cut_by_edge": True} if edge else {})
                for tile, box, edge in zip(self._tiles, self.boxes, self.cut_by_edge, strict=True)
            ],
            "detection_score": self.layout.score,
            "rejected": self.layout.rejected,
        }


def cut_symbols(
    mask: Mask,
    values: Gray,
    *,
    ink: Gray,
    shade: Gray,
    threshold: float,
    scale: float,
    source_shape: tuple[int, int],
) -> SymbolCutting:
    """Find the symbols of a prepared working page and cut one tile per symbol.

    The page's lean is read off its lines of symbols (a projection's sharpness, which levels a
    grid, is noise for a few loose symbols); a page leaning by more than MIN_SKEW_DEGREES is
    turned upright and read again. Raises `InvalidInput("no_symbols")` when nothing on the page
    is symbol-like, with what was rejected in the message.
    """
    layout = find_symbols(mask, shade)
    source_values = values
    degrees = 0.0
    for _ in range(LEVEL_PASSES):
        # Lines read on a page leaning steeply are partly wrong, so their lean is a first
        # estimate: the levelled page is read again, and its remaining lean added.
        residual = line_angle(layout)
        if abs(residual) < MIN_SKEW_DEGREES:
            break
        degrees += residual
        tilt = Tilt(degrees, degrees)
        mask = level(ink, tilt) > threshold
        values = level(source_values, tilt)
        layout = find_symbols(mask, level(shade, tilt))
    tilt = Tilt(degrees, degrees)
    levelled = degrees != 0.0
    if not layout.symbols:
        rejected = ", ".join(f"{count} {reason}" for reason, count in layout.rejected.items())
        raise InvalidInput(
            "no_symbols",
            "no handwritten symbols were found on the page"
            + (f" (set aside: {rejected})" if rejected else "")
            + "; for a grid sheet set metadata grid=ROWSxCOLS",
        )
    pieces = component_image(layout.components, mask.shape)
    tiles = []
    boxes = []
    edges: list[bool] = []
    height, width = mask.shape
    source_h, source_w = source_shape
    for symbol in layout.symbols:
        top, left, bottom, right = symbol.box
        t, lft = max(0, top - _MARGIN), max(0, left - _MARGIN)
        b, r = min(height, bottom + _MARGIN), min(width, right + _MARGIN)
        own = _dilate(np.isin(pieces[t:b, lft:r], np.array(symbol.members) + 1))
        tiles.append(
            Tile(
                row=symbol.line,
                col=symbol.position,
                pixels=np.where(own, values[t:b, lft:r], 0.0).astype(np.float32),
            )
        )
        found = unlevel_box(symbol.box, tilt, mask.shape) if levelled else symbol.box
        y0, x0, y1, x1 = (value / scale for value in found)
        edges.append(y0 <= 1 or x0 <= 1 or y1 >= source_h - 1 or x1 >= source_w - 1)
        boxes.append(
            (
                int(np.clip(np.floor(y0), 0, source_h)),
                int(np.clip(np.floor(x0), 0, source_w)),
                int(np.clip(np.ceil(y1), 0, source_h)),
                int(np.clip(np.ceil(x1), 0, source_w)),
            )
        )
    return SymbolCutting(
        layout=layout,
        boxes=boxes,
        skew_degrees=tilt.degrees,
        page=values,
        _tiles=tiles,
        cut_by_edge=edges,
    )


def _dilate(mask: Mask) -> Mask:
    """A 3x3 dilation: the grey edge of a stroke belongs to it."""
    padded = np.pad(mask, 1)
    out = padded[1:-1, 1:-1].copy()
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            out |= padded[dy : dy + mask.shape[0], dx : dx + mask.shape[1]]
    return out
