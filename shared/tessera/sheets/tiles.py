"""A cut piece of a sheet: a grid cell or a found symbol, as cleaned ink bright on black."""

from __future__ import annotations

from dataclasses import dataclass

from tessera.imaging.decode import Gray


@dataclass(frozen=True)
class Tile:
    """`row`/`col` are a grid cell's, or a symbol's line and position in the line."""

    row: int
    col: int
    pixels: Gray
