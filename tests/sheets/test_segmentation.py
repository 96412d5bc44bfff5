"""Real sheets: grids found on ruled, skewed, unevenly lit pages; empty cells reported; every
kind of bad input ends in a clear outcome."""

from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageDraw

from tessera.errors import InvalidInput
from tessera.imaging.connected_components import label_components
from tessera.imaging.decode import decode_image
from tessera.imaging.normalize import normalize_tile
from tessera.sheets.cutting import cut_sheet
from tessera_dev.samples import Glyphs, render_sheet
from tessera_dev.synthetic import SheetStyle, make_sheet
from tests.sheets.conftest import upscaled_digits


@pytest.fixture(scope="module")
def glyphs() -> Glyphs:
    return upscaled_digits(400)


def _truth_empty(labels: list[str | None], cols: int) -> set[tuple[int, int]]:
    return {divmod(i, cols) for i, label in enumerate(labels) if label is None}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_photographed_ruled_sheet_is_cut_without_being_told_its_grid(
    glyphs: Glyphs, seed: int
) -> None:
    # GIVEN a hand-ruled 6x8 sheet, rotated, in perspective, blurred, noisy, unevenly lit,
    # with some cells left empty
    sheet = make_sheet(
        glyphs.ink, glyphs.labels, rows=6, cols=8, seed=seed, style=SheetStyle(max_rotation=4.0)
    )
    # WHEN it is cut with no grid given
    cutting = cut_sheet(decode_image(sheet.png()))
    # THEN the grid comes from its ruled lines and the empty cells are the ones left empty
    assert (cutting.rows, cutting.cols, cutting.grid_source) == (6, 8, "ruled")
    truth = _truth_empty(sheet.labels, 8)
    assert len(set(cutting.empty) ^ truth) <= 1
    normalized, present = cutting.normalized()
    assert normalized.shape == (48, 28, 28) and present.sum() == 48 - len(cutting.empty)
    assert all(normalized[i].max() == 1.0 for i in np.flatnonzero(present))


def test_a_sheet_without_lines_is_cut_at_the_gaps_between_symbols(glyphs: Glyphs) -> None:
    data = render_sheet(glyphs.ink[:30], cols=10)
    cutting = cut_sheet(decode_image(data))
    assert (cutting.rows, cutting.cols, cutting.grid_source) == (3, 10, "gaps")
    assert cutting.empty == []


def test_white_ink_on_black_is_found_too(glyphs: Glyphs) -> None:
    inverted = 1.0 - decode_image(render_sheet(glyphs.ink[:20], cols=5))
    cutting = cut_sheet(inverted)
    assert (cutting.rows, cutting.cols) == (4, 5)


def test_the_given_grid_wins(glyphs: Glyphs) -> None:
    image = decode_image(render_sheet(glyphs.ink[:30], cols=10))
    cutting = cut_sheet(image, 1, 5)
    assert (cutting.rows, cutting.cols, cutting.grid_source) == (1, 5, "given")


def test_ruled_lines_do_not_reach_the_tiles() -> None:
    # GIVEN a 2x2 ruled grid with one bar of ink in one cell only
    page = Image.new("L", (200, 200), 255)
    draw = ImageDraw.Draw(page)
    for k in range(3):
        draw.line([(10, 10 + 90 * k), (190, 10 + 90 * k)], fill=60, width=2)
        draw.line([(10 + 90 * k, 10), (10 + 90 * k, 190)], fill=60, width=2)
    draw.rectangle([50, 30, 58, 80], fill=0)
    cutting = cut_sheet(np.asarray(page, dtype=np.float32) / 255.0)
    assert (cutting.rows, cutting.cols) == (2, 2)
    # THEN three cells are empty (their borders are not ink) and one holds the bar
    assert sorted(cutting.empty) == [(0, 1), (1, 0), (1, 1)]


# ------------------------------------------------------------------------------ bad input


def _encoded(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def test_a_page_with_no_ink_has_no_grid_to_find() -> None:
    with pytest.raises(InvalidInput) as caught:
        cut_sheet(np.ones((300, 300), dtype=np.float32))
    assert caught.value.code == "blank_page"


def test_an_all_black_photo_is_a_blank_page() -> None:
    with pytest.raises(InvalidInput) as caught:
        cut_sheet(np.zeros((300, 400), dtype=np.float32))
    assert caught.value.code == "blank_page"


def test_a_page_whose_every_cell_is_empty_is_a_blank_page() -> None:
    # A blank page with its grid given, and a printed grid nobody wrote in: nothing to read,
    # said as such rather than a manifest of empty cells.
    with pytest.raises(InvalidInput) as caught:
        cut_sheet(np.ones((100, 100), dtype=np.float32), 2, 2)
    assert caught.value.code == "blank_page"
    page = Image.new("L", (600, 600), 255)
    draw = ImageDraw.Draw(page)
    for i in range(11):
        draw.line((50, 50 + i * 50, 550, 50 + i * 50), fill=0, width=2)
        draw.line((50 + i * 50, 50, 50 + i * 50, 550), fill=0, width=2)
    with pytest.raises(InvalidInput) as caught:
        cut_sheet(np.asarray(page, dtype=np.float32) / 255.0)
    assert caught.value.code == "blank_page" and "10x10" in caught.value.message


def test_a_grid_too_dense_for_the_resolution_is_refused() -> None:
    with pytest.raises(InvalidInput) as caught:
        cut_sheet(np.ones((40, 40), dtype=np.float32), 20, 20)
    assert caught.value.code == "grid_larger_than_image"


def test_a_one_pixel_wide_image_is_refused() -> None:
    with pytest.raises(InvalidInput) as caught:
        cut_sheet(np.ones((500, 1), dtype=np.float32))
    assert caught.value.code == "image_too_small"


def test_a_page_of_scribble_without_a_grid_is_refused_clearly() -> None:
    rng = np.random.default_rng(0)
    page = np.ones((200, 200), dtype=np.float32)
    page[60:140, 60:140] = rng.random((80, 80)) > 0.5
    with pytest.raises(InvalidInput) as caught:
        cut_sheet(page)
    # Read as symbols (no grid), the block of noise is a scribble: refused, and said so.
    assert caught.value.code == "no_symbols"
    assert "scribble" in caught.value.message
    with pytest.raises(InvalidInput) as caught:
        cut_sheet(page, layout="grid")
    assert caught.value.code in {"grid_not_found", "grid_too_dense"}


def test_cmyk_images_decode_to_gray() -> None:
    image = Image.new("CMYK", (30, 20), (0, 0, 0, 0))
    image.paste((0, 0, 0, 255), (10, 5, 20, 15))
    gray = decode_image(_encoded(image, "JPEG"))
    assert gray.shape == (20, 30) and gray[10, 15] < 0.2 and gray[1, 1] > 0.8


def test_an_animated_gif_is_read_from_its_first_frame() -> None:
    first = Image.new("L", (20, 20), 255)
    second = Image.new("L", (20, 20), 0)
    data = _encoded(first, "GIF", save_all=True, append_images=[second])
    assert decode_image(data).min() > 0.9


def test_a_multi_page_tiff_is_read_from_its_first_page() -> None:
    first = Image.new("L", (20, 20), 0)
    second = Image.new("L", (20, 20), 255)
    data = _encoded(first, "TIFF", save_all=True, append_images=[second])
    assert decode_image(data).max() < 0.1


def test_exif_rotated_photos_are_cut_the_way_a_person_sees_them(glyphs: Glyphs) -> None:
    # GIVEN a 2x10 sheet saved sideways with EXIF saying "rotate 90 degrees"
    sheet = Image.open(io.BytesIO(render_sheet(glyphs.ink[:20], cols=10)))
    sideways = sheet.transpose(Image.Transpose.ROTATE_90)
    exif = sideways.getexif()
    exif[0x0112] = 6
    data = _encoded(sideways, "JPEG", exif=exif, quality=95)
    # THEN the grid found is the upright one
    cutting = cut_sheet(decode_image(data))
    assert (cutting.rows, cutting.cols) == (2, 10)


def test_sixteen_bit_scans_are_cut(glyphs: Glyphs) -> None:
    gray = decode_image(render_sheet(glyphs.ink[:20], cols=10))
    data = _encoded(Image.fromarray((gray * 65535).astype(np.uint16)), "PNG")
    cutting = cut_sheet(decode_image(data))
    assert (cutting.rows, cutting.cols) == (2, 10)


# --------------------------------------------------------------------- components, tiles


def _flood_count(mask: np.ndarray) -> int:
    seen = np.zeros_like(mask)
    count = 0
    for y, x in zip(*np.nonzero(mask), strict=True):
        if seen[y, x]:
            continue
        count += 1
        stack = [(y, x)]
        seen[y, x] = True
        while stack:
            cy, cx = stack.pop()
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    ny, nx = cy + dy, cx + dx
                    inside = 0 <= ny < mask.shape[0] and 0 <= nx < mask.shape[1]
                    if inside and mask[ny, nx] and not seen[ny, nx]:
                        seen[ny, nx] = True
                        stack.append((ny, nx))
    return count


@settings(max_examples=80, deadline=None)
@given(
    st.integers(1, 24).flatmap(
        lambda h: st.integers(1, 24).flatmap(
            lambda w: st.lists(st.booleans(), min_size=h * w, max_size=h * w).map(
                lambda cells: np.array(cells, dtype=bool).reshape(h, w)
            )
        )
    )
)
def test_components_match_a_flood_fill(mask: np.ndarray) -> None:
    parts = label_components(mask)
    assert parts.count == _flood_count(mask)
    assert int(parts.area.sum()) == int(mask.sum())
    assert np.array_equal(parts.paint(np.ones(parts.count, dtype=bool), mask.shape), mask)


def test_a_neighbours_tail_at_the_cell_edge_is_not_part_of_the_symbol() -> None:
    tile = np.ones((40, 40), dtype=np.float32)
    tile[8:32, 18:23] = 0.0  # the symbol
    tile[0:3, 30:40] = 0.0  # a neighbour's tail crossing the top edge
    with_tail = normalize_tile(tile)
    tile[0:3, 30:40] = 1.0
    without = normalize_tile(tile)
    assert with_tail is not None and without is not None
    assert np.allclose(with_tail, without)


def test_deslant_stands_a_slanted_stroke_upright() -> None:
    tile = np.zeros((40, 40), dtype=np.float32)
    for y in range(5, 35):
        x = 10 + (y - 5) // 2
        tile[y, x : x + 3] = 1.0
    plain = normalize_tile(tile)
    upright = normalize_tile(tile, deslant=True)
    assert plain is not None and upright is not None
    # an upright stroke is narrow: its ink spans fewer columns
    assert (upright.max(axis=0) > 0.3).sum() < (plain.max(axis=0) > 0.3).sum()
