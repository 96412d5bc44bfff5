"""Photographed sheets as phones make them: stretched, keystoned and sheared pages are levelled
axis by axis, cells follow each ruled line, and a cell keeps its strokes as thin as drawn."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from tessera.imaging.connected_components import label_components
from tessera.imaging.decode import decode_image
from tessera.imaging.normalize import normalize_ink, to_vector, to_vectors
from tessera.sheets.cutting import cut_sheet
from tessera.sheets.page import prepare_page
from tessera.sheets.tilt import estimate_tilt
from tessera_dev.samples import Glyphs
from tessera_dev.synthetic import SheetStyle, make_sheet
from tests.sheets.conftest import upscaled_digits


@pytest.fixture(scope="module")
def glyphs() -> Glyphs:
    return upscaled_digits(200)


def _stretched(image: np.ndarray, x_factor: float) -> np.ndarray:
    """The page resized wider than tall, as a photo cropped to another aspect ratio is: a
    rotation of the paper becomes a shear, and columns lean more than rows."""
    height, width = image.shape
    wide = Image.fromarray(image, mode="F").resize(
        (round(width * x_factor), height), Image.Resampling.BILINEAR
    )
    return np.asarray(wide, dtype=np.float32)


def test_a_stretched_photo_whose_columns_lean_more_than_its_rows_is_cut_whole(
    glyphs: Glyphs,
) -> None:
    # GIVEN a ruled 6x8 sheet turned 3 degrees, then stretched 1.5x sideways
    sheet = make_sheet(
        glyphs.ink,
        glyphs.labels,
        rows=6,
        cols=8,
        seed=3,
        # Even light: the turn below is of the photo, and its corners are filled with paper.
        style=SheetStyle(max_rotation=0.0, perspective=0.0, empty_fraction=0.0, uneven_light=0.0),
    )
    turned = Image.fromarray(sheet.image, mode="F").rotate(
        3.0, resample=Image.Resampling.BILINEAR, fillcolor=float(np.median(sheet.image))
    )
    image = _stretched(np.asarray(turned, dtype=np.float32), 1.5)
    # WHEN it is cut with no grid given
    cutting = cut_sheet(image)
    # THEN rows and columns each lean their own way, and the whole grid is found from its lines
    tilt = estimate_tilt(prepare_page(image).mask)
    assert abs(tilt.cols - tilt.rows) >= 1.0
    assert (cutting.rows, cutting.cols, cutting.grid_source) == (6, 8, "ruled")
    assert cutting.empty == []


def test_a_page_that_is_only_turned_leans_the_same_way_along_both_axes(glyphs: Glyphs) -> None:
    sheet = make_sheet(
        glyphs.ink,
        glyphs.labels,
        rows=5,
        cols=6,
        seed=1,
        style=SheetStyle(max_rotation=0.0, perspective=0.0, empty_fraction=0.0),
    )
    turned = Image.fromarray(sheet.image, mode="F").rotate(
        -2.5, resample=Image.Resampling.BILINEAR, fillcolor=float(np.median(sheet.image))
    )
    tilt = estimate_tilt(prepare_page(np.asarray(turned, dtype=np.float32)).mask)
    assert tilt.rows == tilt.cols
    # `degrees` is the turn that levels the page: the other way
    assert abs(tilt.degrees - 2.5) <= 0.3


def _line_remnants(tile: np.ndarray) -> int:
    """Pieces of a tile shaped like a ruled line: most of the tile long, a sliver thick."""
    parts = label_components(tile > 0)
    height, width = tile.shape
    long_across = (parts.right - parts.left >= 0.7 * width) & (
        parts.bottom - parts.top <= 0.2 * height
    )
    long_down = (parts.bottom - parts.top >= 0.7 * height) & (
        parts.right - parts.left <= 0.2 * width
    )
    return int((long_across | long_down).sum())


@pytest.mark.parametrize("seed", [4, 11])
def test_cells_of_a_keystoned_photo_follow_each_line_and_hold_no_line(
    glyphs: Glyphs, seed: int
) -> None:
    # GIVEN a sheet photographed at a slant: its lines are not parallel, so one edge per line
    # would cut the far cells through their neighbours' lines
    sheet = make_sheet(
        glyphs.ink,
        glyphs.labels,
        rows=8,
        cols=10,
        seed=seed,
        style=SheetStyle(perspective=0.045, max_rotation=2.0, empty_fraction=0.0),
    )
    # WHEN it is cut
    cutting = cut_sheet(decode_image(sheet.png()))
    # THEN every cell holds its symbol and no piece of a ruled line
    assert (cutting.rows, cutting.cols) == (8, 10)
    assert cutting.empty == []
    assert sum(_line_remnants(tile.pixels) for tile in cutting.tiles) == 0


def test_a_thin_stroke_stays_as_thin_as_it_was_drawn() -> None:
    # GIVEN clean white paper with a one-pixel-wide stroke in each of two cells
    page = np.ones((60, 120), dtype=np.float32)
    page[10:50, 30] = 0.0
    page[10:50, 90] = 0.0
    page[10, 25:36] = 0.0
    # WHEN the page is cut into its two cells
    cutting = cut_sheet(page, 1, 2)
    # THEN the stroke is one column wide in the tile: the smoothing that finds faint ink does
    # not spread into the cell's pixels
    columns = np.flatnonzero(cutting.tiles[1].pixels.max(axis=0) > 0)
    assert columns.size == 1


def test_a_dense_gap_sheet_keeps_every_symbol_and_ignores_a_noise_pixel(
    glyphs: Glyphs,
) -> None:
    # GIVEN 120 small symbols on a gap-separated sheet, and the same with one grey noise
    # pixel beside one symbol
    cells, rows, cols = 24, 6, 20
    page = np.ones((rows * cells, cols * cells), dtype=np.float32)
    for index in range(rows * cols):
        r, c = divmod(index, cols)
        glyph = np.asarray(
            Image.fromarray(glyphs.ink[index], mode="F").resize((18, 18)), dtype=np.float32
        )
        top, left = r * cells + 3, c * cells + 3
        page[top : top + 18, left : left + 18] -= np.clip(glyph, 0, 1)
    np.clip(page, 0, 1, out=page)
    clean = cut_sheet(page.copy())
    page[2 * cells + 1, 5 * cells + 21] = 0.5
    # WHEN both are cut
    noisy = cut_sheet(page)
    # THEN the grid is found from the gaps, no cell is empty and the pixel changes nothing
    assert (noisy.rows, noisy.cols, noisy.grid_source) == (rows, cols, "gaps")
    assert noisy.empty == []
    assert np.array_equal(noisy.normalized()[0], clean.normalized()[0])


def test_a_stack_of_vectors_is_the_vectors_of_its_tiles(glyphs: Glyphs) -> None:
    stack = normalize_ink(glyphs.ink[:12])
    assert np.array_equal(to_vectors(stack), np.stack([to_vector(tile) for tile in stack]))


def test_an_opaque_alpha_channel_decodes_like_gray() -> None:
    page = Image.new("L", (64, 48), 255)
    ImageDraw.Draw(page).line([(10, 10), (50, 40)], fill=20, width=3)
    rgba = page.convert("RGBA")
    import io

    buffers = []
    for image in (page, rgba):
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        buffers.append(buffer.getvalue())
    assert np.array_equal(decode_image(buffers[0]), decode_image(buffers[1]))
