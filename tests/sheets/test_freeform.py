"""Pages without a grid: symbols found, joined, rejected and ordered as a person reads them."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from tessera.errors import InvalidInput
from tessera.imaging.decode import decode_image
from tessera.sheets.cutting import cut_free, cut_sheet
from tessera.sheets.freeform import SymbolCutting
from tests.sheets.free_pages import FreePage, font_digits, free_page


def _centre(box: tuple[int, int, int, int]) -> tuple[float, float]:
    return (box[0] + box[2]) / 2, (box[1] + box[3]) / 2


def _inside(point: tuple[float, float], box: tuple[int, int, int, int], slack: int = 0) -> bool:
    y, x = point
    return box[0] - slack <= y <= box[2] + slack and box[1] - slack <= x <= box[3] + slack


def assert_read_as_written(cutting: SymbolCutting, page: FreePage, *, slack: int = 0) -> None:
    """Every written symbol found once, in its line and place, and nothing else."""
    assert cutting.line_counts == page.lines
    assert len(cutting.boxes) == len(page.boxes)
    for found, truth in zip(cutting.boxes, page.boxes, strict=True):
        assert _inside(_centre(truth), found, slack), (found, truth)
        assert _inside(_centre(found), truth, slack), (found, truth)


@pytest.fixture(scope="module")
def ink() -> tuple[np.ndarray, np.ndarray]:
    return font_digits(60)


def test_hand_placed_lines_are_read_in_reading_order(ink: tuple[np.ndarray, np.ndarray]) -> None:
    page = free_page(*ink, [7, 5, 6], seed=1)
    # The page names no grid and has no ruled lines or regular gaps: it is read as symbols.
    cutting = cut_sheet(decode_image(page.png()))
    assert isinstance(cutting, SymbolCutting)
    assert_read_as_written(cutting, page)
    assert [(t.row, t.col) for t in cutting.tiles][:8] == [(0, c) for c in range(7)] + [(1, 0)]
    manifest = cutting.manifest()
    assert manifest["layout"] == "symbols" and manifest["lines"] == [7, 5, 6]
    assert 0.9 <= float(manifest["detection_score"]) <= 1.0  # type: ignore[arg-type]


def test_notebook_lines_printed_text_and_specks_are_set_aside_and_counted(
    ink: tuple[np.ndarray, np.ndarray],
) -> None:
    page = free_page(*ink, [6, 6], seed=2, notebook=True, printed_text=True, specks=40)
    cutting = cut_free(decode_image(page.png()))
    assert_read_as_written(cutting, page)
    rejected = cutting.layout.rejected
    # 40 specks and the printed header's and footer's letters, each counted, none a symbol
    assert rejected["ruled_line"] >= 1
    assert rejected.get("small", 0) + rejected.get("speck", 0) >= 35


def test_a_broken_stroke_stays_one_symbol(ink: tuple[np.ndarray, np.ndarray]) -> None:
    page = free_page(*ink, [4], seed=3, height=60)
    top, left, bottom, right = page.boxes[1]
    middle = (top + bottom) // 2
    page.image[middle : middle + 3, left:right] = 1.0  # a pen lifted across the glyph
    cutting = cut_free(page.image)
    assert_read_as_written(cutting, page)


def test_a_rotated_page_reads_the_same_with_boxes_on_the_source_page(
    ink: tuple[np.ndarray, np.ndarray],
) -> None:
    page = free_page(*ink, [6, 6, 6], seed=4)
    turned = Image.fromarray(page.image, mode="F").rotate(
        6, resample=Image.Resampling.BILINEAR, fillcolor=1.0
    )
    cutting = cut_free(np.asarray(turned, dtype=np.float32))
    assert cutting.line_counts == [6, 6, 6]
    assert 3 < abs(cutting.skew_degrees) < 9  # levelled (the lines also wobble a little)
    # Each box, mapped back to the page as given, holds its symbol's rotated centre.
    height, width = page.image.shape
    cy, cx = (height - 1) / 2, (width - 1) / 2
    angle = np.radians(6)
    for found, truth in zip(cutting.boxes, page.boxes, strict=True):
        y, x = _centre(truth)
        turned_x = cx + (x - cx) * np.cos(angle) + (y - cy) * np.sin(angle)
        turned_y = cy - (x - cx) * np.sin(angle) + (y - cy) * np.cos(angle)
        assert _inside((turned_y, turned_x), found, slack=3)


def test_one_symbol_on_a_photo_like_page_is_one_tile(ink: tuple[np.ndarray, np.ndarray]) -> None:
    page = free_page(*ink, [1], seed=5, height=120, size=(420, 400), specks=15)
    # uneven light, as on a phone photo
    page.image *= np.linspace(0.75, 1.0, page.image.shape[1], dtype=np.float32)[None, :]
    cutting = cut_free(page.image)
    assert_read_as_written(cutting, page)


def test_tiles_hold_only_their_own_symbol(ink: tuple[np.ndarray, np.ndarray]) -> None:
    page = free_page(*ink, [8], seed=6)
    cutting = cut_free(page.image)
    for tile in cutting.tiles:
        assert tile.pixels.max() > 0.5
        # the left and right borders of a tile never hold a neighbour's ink
        assert tile.pixels[:, :1].max() < 0.5 and tile.pixels[:, -1:].max() < 0.5


def test_an_ink_stain_is_refused_as_no_symbol() -> None:
    page = np.ones((300, 300), dtype=np.float32)
    yy, xx = np.mgrid[:300, :300]
    page[(yy - 150) ** 2 + (xx - 140) ** 2 < 70**2] = 0.05
    with pytest.raises(InvalidInput) as caught:
        cut_free(page)
    assert caught.value.code == "no_symbols" and "blot" in caught.value.message


def test_ten_thousand_specks_are_no_symbols_not_ten_thousand(
    ink: tuple[np.ndarray, np.ndarray],
) -> None:
    rng = np.random.default_rng(7)
    page = np.ones((1000, 1000), dtype=np.float32)
    ys, xs = rng.integers(0, 999, 10_000), rng.integers(0, 999, 10_000)
    page[ys, xs] = 0.0
    with pytest.raises(InvalidInput) as caught:
        cut_free(page)
    assert caught.value.code == "no_symbols" and "speck" in caught.value.message


def test_layout_grid_keeps_a_gap_grid_that_auto_reads_as_symbols(
    ink: tuple[np.ndarray, np.ndarray],
) -> None:
    page = free_page(*ink, [7, 5, 6], seed=1)
    # The gaps between hand-placed symbols look like a 3x7 grid; its cells cut symbols, so
    # "auto" reads the page as symbols, while "grid" keeps the grid it was asked for.
    assert cut_sheet(page.image).grid_source == "symbols"
    assert cut_sheet(page.image, layout="grid").grid_source == "gaps"
    with pytest.raises(InvalidInput) as caught:
        cut_sheet(page.image, layout="columns")
    assert caught.value.code == "bad_metadata"


def test_a_page_of_printed_text_only_has_no_symbols() -> None:
    canvas = Image.new("L", (900, 700), 255)
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=20)
    for line in range(15):
        draw.text((40, 40 + line * 40), "the quick brown fox jumps over 12 lazy dogs", font=font)
    with pytest.raises(InvalidInput) as caught:
        cut_free(np.asarray(canvas, dtype=np.float32) / 255.0)
    assert caught.value.code == "no_symbols" and "printed_text" in caught.value.message


def test_symbols_written_touching_are_cut_apart(ink: tuple[np.ndarray, np.ndarray]) -> None:
    page = free_page(*ink, [4, 4], seed=9)
    # The second symbol of the second line is rubbed out and the first (a 4) written again
    # right against itself: two symbols touching, one piece of ink twice a symbol wide.
    (t0, l0, b0, r0), (t1, l1, b1, r1) = page.boxes[4], page.boxes[5]
    page.image[t1:b1, l1:r1] = 1.0
    copy = page.image[t0:b0, l0:r0].copy()
    target = page.image[t0:b0, r0 - 2 : r0 - 2 + (r0 - l0)]
    np.minimum(target, copy, out=target)
    cutting = cut_free(page.image)
    assert cutting.line_counts == [4, 4]
    assert cutting.layout.rejected.get("touching_split") == 1
    first, second = cutting.boxes[4], cutting.boxes[5]
    assert abs(first[3] - (r0 - 1)) <= 3 and abs(second[1] - (r0 - 1)) <= 3


def test_a_symbol_cut_by_the_page_edge_is_flagged(ink: tuple[np.ndarray, np.ndarray]) -> None:
    page = free_page(*ink, [4], seed=10)
    _, left, _, right = page.boxes[0]
    cutting = cut_free(page.image[:, left + (right - left) // 3 :])
    symbols = cutting.manifest()["symbols"]
    assert isinstance(symbols, list) and symbols[0].get("cut_by_edge") is True
    assert not any(s.get("cut_by_edge") for s in symbols[1:])


def test_an_image_one_pixel_high_is_refused() -> None:
    with pytest.raises(InvalidInput) as caught:
        cut_free(np.ones((1, 500), dtype=np.float32))
    assert caught.value.code == "image_too_small"


def test_a_given_grid_on_hand_placed_rows_is_read_from_the_symbols(
    ink: tuple[np.ndarray, np.ndarray],
) -> None:
    page = free_page(*ink, [5, 5, 5], seed=11, size=(900, 520))
    # Told 3x5, with no ruling and gaps too irregular for a grid: the symbols are the cells.
    cutting = cut_sheet(page.image, 3, 5)
    assert isinstance(cutting, SymbolCutting)
    assert_read_as_written(cutting, page)
    # A grid that the symbols do not make is cut evenly, as before, and so is any grid when
    # layout=grid says never to read symbols.
    assert cut_sheet(page.image, 2, 5).grid_source == "given"
    assert cut_sheet(page.image, 3, 5, layout="grid").grid_source == "given"
