"""The reference notebook's equal-cell cut, `split_image(image, rows, cols, should_square)`, kept
as a test helper: tests compare the pipeline's cutting and normalization against it. The
pipeline itself cuts sheets in one place, `tessera.sheets.cutting.cut_sheet`."""

from __future__ import annotations

import numpy as np

from tessera.imaging.decode import Gray
from tessera.sheets.cutting import check_grid_fits
from tessera.sheets.tiles import Tile


def split_image(image: Gray, rows: int, cols: int, *, should_square: bool = False) -> list[Tile]:
    """Cut an image into rows x cols equal cells, reading order (row by row); cell edges are
    spread evenly so every pixel belongs to exactly one tile. With `should_square`, each cell
    is cropped to the centred square of its shorter side."""
    height, width = image.shape
    check_grid_fits(width=width, height=height, rows=rows, cols=cols)
    row_edges = np.linspace(0, height, rows + 1).round().astype(int)
    col_edges = np.linspace(0, width, cols + 1).round().astype(int)
    tiles = []
    for r in range(rows):
        for c in range(cols):
            cell = image[row_edges[r] : row_edges[r + 1], col_edges[c] : col_edges[c + 1]]
            if should_square:
                side = min(cell.shape)
                top, left = (cell.shape[0] - side) // 2, (cell.shape[1] - side) // 2
                cell = cell[top : top + side, left : left + side]
            tiles.append(Tile(row=r, col=c, pixels=cell))
    return tiles
