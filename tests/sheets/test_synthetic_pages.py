"""Generated free-form pages and their scoring: every truth box lands on its glyph's ink (through
rotation and perspective too), nothing else on the page is a symbol, truth is in reading order,
and `score_page` counts exactly what a detector got right and wrong."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from itertools import pairwise
from typing import Any, ClassVar

import numpy as np
import pytest
from numpy.typing import NDArray
from PIL import Image, ImageDraw, ImageFont

from tessera.imaging.connected_components import Components, label_components
from tessera_dev.evaluation.pages import (
    PAGE_KINDS,
    evaluate_page,
    evaluate_pages,
    generated_pages,
    score_page,
)
from tessera_dev.samples import Glyphs
from tessera_dev.synthetic_pages import (
    PageStyle,
    SyntheticPage,
    TruthSymbol,
    make_page,
    make_single,
)

Box = tuple[int, int, int, int]
# Darker than this is pen ink (the paper and the ruled lines are lighter, the table touches
# the photo's border).
DARK = 0.5
# A dark piece at least this large is more than a speck.
SPECK_AREA = 12
QUIET = PageStyle(noise=0.0)


def _font_digits(count: int, seed: int = 0) -> Glyphs:
    """Digits drawn with Pillow's default font into 28x28, bright on black, at varied sizes
    and offsets: glyphs like MNIST's without a download."""
    rng = np.random.default_rng(seed)
    ink = np.zeros((count, 28, 28), dtype=np.float32)
    labels = []
    for index in range(count):
        digit = str(index % 10)
        canvas = Image.new("L", (28, 28), 0)
        font = ImageFont.load_default(size=int(rng.integers(20, 27)))
        ImageDraw.Draw(canvas).text(
            (14 + int(rng.integers(-2, 3)), 14 + int(rng.integers(-2, 3))),
            digit,
            fill=255,
            font=font,
            anchor="mm",
            stroke_width=1,
        )
        ink[index] = np.asarray(canvas, dtype=np.float32) / 255.0
        labels.append(digit)
    return Glyphs(ink=ink, labels=np.array(labels))


@pytest.fixture(scope="module")
def glyphs() -> Glyphs:
    return _font_digits(300)


def _page(glyphs: Glyphs, seed: int, **style: Any) -> SyntheticPage:
    return make_page(glyphs.ink, glyphs.labels, seed=seed, style=replace(QUIET, **style))


def _pieces(image: NDArray[np.float32]) -> Components:
    return label_components(image < DARK)


def _inside(box: Box, top: int, left: int, bottom: int, right: int, slack: int = 2) -> bool:
    return (
        top >= box[0] - slack
        and left >= box[1] - slack
        and bottom <= box[2] + slack
        and right <= box[3] + slack
    )


def _stray_ink(page: SyntheticPage) -> list[tuple[int, int, int, int]]:
    """Boxes of dark pieces larger than specks that lie in no truth box (the table, which
    touches the photo's border, left out)."""
    height, width = page.image.shape
    pieces = _pieces(page.image)
    stray = []
    for k in range(pieces.count):
        top, left = int(pieces.top[k]), int(pieces.left[k])
        bottom, right = int(pieces.bottom[k]), int(pieces.right[k])
        if top == 0 or left == 0 or bottom == height or right == width:
            continue
        if pieces.area[k] < SPECK_AREA:
            continue
        if not any(_inside(s.box, top, left, bottom, right) for s in page.symbols):
            stray.append((top, left, bottom, right))
    return stray


@pytest.mark.parametrize(
    "style",
    [
        {},
        {"notebook_lines": True},
        {"rotation": 9.0},
        {"rotation": -5.0, "perspective": 0.06, "shadow": 0.3},
        {"broken_strokes": 0.5},
        {"scattered": True},
        {"glyph_height": (45.0, 80.0), "size_jitter": 0.18, "stroke_change": 0.6},
    ],
)
def test_every_truth_box_covers_its_glyphs_ink_and_no_other_ink_is_on_the_page(
    glyphs: Glyphs, style: dict[str, Any]
) -> None:
    # GIVEN a generated page (turned, in perspective on a table, ruled, broken, scattered...)
    page = _page(glyphs, 3, **style)
    assert len(page.symbols) >= 30
    # THEN each box holds dark ink, and its ink reaches the box's edges (the box is tight)
    for symbol in page.symbols:
        top, left, bottom, right = symbol.box
        inside = page.image[top:bottom, left:right]
        assert inside.min() < 0.35, symbol
    # AND every dark piece bigger than a speck lies inside some truth box
    assert _stray_ink(page) == []


def test_a_box_is_tight_on_a_level_page(glyphs: Glyphs) -> None:
    # A box is the box of the ink at 20% and more: a stroke's faint edge falls outside it.
    page = _page(glyphs, 5)
    for symbol in page.symbols:
        top, left, bottom, right = symbol.box
        window = page.image[max(0, top - 4) : bottom + 4, max(0, left - 4) : right + 4]
        ink = window < 0.86
        rows = np.flatnonzero(ink.any(axis=1)) + max(0, top - 4)
        cols = np.flatnonzero(ink.any(axis=0)) + max(0, left - 4)
        assert abs(rows[0] - top) <= 2 and abs(rows[-1] + 1 - bottom) <= 2, symbol
        assert abs(cols[0] - left) <= 2 and abs(cols[-1] + 1 - right) <= 2, symbol


def test_truth_is_in_reading_order_lines_top_to_bottom_and_left_to_right(glyphs: Glyphs) -> None:
    page = _page(glyphs, 7)
    symbols = page.symbols
    assert [s.glyph for s in symbols] == list(range(len(symbols)))
    assert [s.line for s in symbols] == sorted(s.line for s in symbols)
    assert page.lines >= 5
    previous_bottom = -1.0
    for line in range(page.lines):
        members = [s for s in symbols if s.line == line]
        assert [s.position for s in members] == list(range(len(members)))
        assert all(a.box[3] < b.box[1] for a, b in pairwise(members))
        tops = [s.box[0] for s in members]
        # lines stand apart: this line's glyphs start below the line above ends
        assert min(tops) > previous_bottom
        previous_bottom = max(s.box[2] for s in members)


def test_printed_text_stays_in_the_header_and_footer_and_is_small(glyphs: Glyphs) -> None:
    page = _page(glyphs, 2, printed_text=True)
    # light grey print: anything darker than bare paper, outside every symbol's box
    pieces = label_components(page.image < 0.8)
    boxes = zip(
        pieces.top.tolist(),
        pieces.left.tolist(),
        pieces.bottom.tolist(),
        pieces.right.tolist(),
        strict=True,
    )
    printed = [
        (top, bottom)
        for top, left, bottom, right in boxes
        if not any(_inside(s.box, top, left, bottom, right) for s in page.symbols)
    ]
    first = min(s.box[0] for s in page.symbols)
    last = max(s.box[2] for s in page.symbols)
    glyph_heights = [s.box[2] - s.box[0] for s in page.symbols]
    assert len(printed) >= 30, "the header should print something"
    assert all(bottom <= first or top >= last for top, bottom in printed)
    assert max(bottom - top for top, bottom in printed) < 0.5 * min(glyph_heights)
    # and none of it is as dark as the pen
    assert _stray_ink(page) == []


def test_specks_are_tiny_and_touch_no_symbol(glyphs: Glyphs) -> None:
    page = _page(glyphs, 4, specks=150, blur=0.0)
    pieces = _pieces(page.image)
    small = [k for k in range(pieces.count) if pieces.area[k] <= 9]
    assert len(small) >= 100
    for k in small:
        y, x = int(pieces.top[k]), int(pieces.left[k])
        assert not any(_inside(s.box, y, x, y + 1, x + 1, slack=0) for s in page.symbols)


def test_broken_symbols_are_drawn_in_two_pieces(glyphs: Glyphs) -> None:
    page = _page(glyphs, 6, broken_strokes=0.5)
    broken = [s for s in page.symbols if s.broken]
    assert len(broken) >= 8
    for symbol in broken:
        top, left, bottom, right = symbol.box
        inside = page.image[top:bottom, left:right]
        # two pieces whether ink is taken at its faint edge or at its core
        for level in (0.85, DARK):
            pieces = label_components(inside < level)
            assert int((pieces.area >= SPECK_AREA).sum()) == 2, (symbol, level)


def test_generation_is_deterministic_per_seed(glyphs: Glyphs) -> None:
    one, two = _page(glyphs, 11, rotation=4.0), _page(glyphs, 11, rotation=4.0)
    assert one.symbols == two.symbols and np.array_equal(one.image, two.image)
    assert _page(glyphs, 12).symbols != one.symbols


def test_a_single_symbol_photo_holds_one_glyph_on_a_darker_table(glyphs: Glyphs) -> None:
    page = make_single(glyphs.ink[3], "3", seed=1)
    assert [(s.label, s.line, s.position) for s in page.symbols] == [("3", 0, 0)]
    height, width = page.image.shape
    assert height >= 800 and width >= 600
    assert page.image[:5, :5].mean() < 0.6  # the table
    top, left, bottom, right = page.symbols[0].box
    assert bottom - top >= 0.2 * 800
    assert page.image[top:bottom, left:right].min() < 0.35
    assert _stray_ink(page) == []


@dataclass(frozen=True)
class Found:
    line: int
    position: int
    box: Box
    pixels: NDArray[np.float32] = field(default_factory=lambda: np.zeros((0, 0), np.float32))


def _as_found(truth: list[TruthSymbol]) -> list[Found]:
    return [Found(s.line, s.position, s.box) for s in truth]


def test_the_truth_itself_scores_perfectly(glyphs: Glyphs) -> None:
    page = _page(glyphs, 8)
    score = score_page(page.symbols, _as_found(page.symbols))
    n = len(page.symbols)
    assert (score.expected, score.found, score.matched, score.spurious, score.missed) == (
        n,
        n,
        n,
        0,
        0,
    )
    assert score.lines_right == score.lines_expected == page.lines
    assert score.matched_pairs == tuple((i, i) for i in range(n))


def test_a_dropped_symbol_a_spurious_box_and_a_swap_are_counted_exactly(glyphs: Glyphs) -> None:
    # GIVEN the truth as found, but line 1's first symbol dropped, a box added on empty paper
    # (in a line of its own) and line 3's first two symbols read in the wrong order
    page = _page(glyphs, 9)
    found = _as_found(page.symbols)
    dropped = next(i for i, s in enumerate(page.symbols) if s.line == 1)
    swap = [i for i, s in enumerate(page.symbols) if s.line == 3][:2]
    a, b = found[swap[0]], found[swap[1]]
    found[swap[0]], found[swap[1]] = (
        replace(a, position=b.position),
        replace(b, position=a.position),
    )
    del found[dropped]
    height, width = page.image.shape
    found.append(Found(99, 0, (height - 60, width - 60, height - 20, width - 20)))
    # WHEN scored
    score = score_page(page.symbols, found)
    # THEN exactly one is missed, one is spurious, and lines 1 and 3 are wrong
    n = len(page.symbols)
    assert (score.matched, score.spurious, score.missed) == (n - 1, 1, 1)
    assert (score.lines_expected, score.lines_right) == (page.lines, page.lines - 2)
    assert dropped not in {t for t, _ in score.matched_pairs}


def test_a_found_line_that_runs_two_truth_lines_together_gets_neither_right(
    glyphs: Glyphs,
) -> None:
    page = _page(glyphs, 10)
    found = [replace(f, line=0) if f.line == 1 else f for f in _as_found(page.symbols)]
    score = score_page(page.symbols, found)
    assert score.matched == len(page.symbols) and score.spurious == 0
    assert score.lines_right == page.lines - 2


def test_a_loose_box_still_matches_and_a_shifted_one_does_not(glyphs: Glyphs) -> None:
    page = _page(glyphs, 1, scattered=True)
    truth = page.symbols[0]
    top, left, bottom, right = truth.box
    h, w = bottom - top, right - left
    loose = Found(-1, -1, (top - h // 3, left - w // 3, bottom + h // 3, right + w // 3))
    shifted = Found(-1, -1, (top + h, left, bottom + h, right))
    assert score_page([truth], [loose]).matched == 1
    assert score_page([truth], [shifted]).matched == 0
    # scattered truth has no lines to read
    assert score_page(page.symbols, _as_found(page.symbols)).lines_expected == 0


class AlwaysOne:
    """A classifier that answers "1" to everything: the correct count is the number of 1s."""

    classes: ClassVar[list[str]] = [str(d) for d in range(10)]

    def predict(self, x: NDArray[np.float32], *, top_k: int = 3) -> list[dict[str, Any]]:
        assert x.shape[1:] == (784,) and x.dtype == np.float32
        return [{"label": "1", "confidence": 1.0, "top": []} for _ in range(len(x))]


def _oracle(page: SyntheticPage) -> list[Found]:
    """A detector that knows the truth: each box's pixels as bright ink on black."""
    image = page.image
    return [
        Found(s.line, s.position, s.box, 1.0 - image[s.box[0] : s.box[2], s.box[1] : s.box[3]])
        for s in page.symbols
    ]


def test_a_page_is_evaluated_through_the_detector_and_the_model(glyphs: Glyphs) -> None:
    page = _page(glyphs, 13)
    result = evaluate_page("oracle", page, model=AlwaysOne(), detector=lambda _: _oracle(page))
    ones = sum(1 for s in page.symbols if s.label == "1")
    assert (result.expected, result.found, result.spurious, result.missed) == (
        len(page.symbols),
        len(page.symbols),
        0,
        0,
    )
    assert result.lines_right == result.lines_expected == page.lines
    assert (result.correct, result.scored) == (ones, len(page.symbols))


def test_the_page_set_covers_every_kind_and_a_blind_detector_misses_all(glyphs: Glyphs) -> None:
    pages = generated_pages(glyphs, count=len(PAGE_KINDS), seed=0)
    assert [name for name, _ in pages] == [kind.name for kind in PAGE_KINDS]
    assert len(pages[-1][1].symbols) == 1
    results = evaluate_pages(AlwaysOne(), count=2, seed=0, detector=lambda _: [], glyphs=glyphs)
    assert [(r.found, r.matched, r.lines_right, r.scored) for r in results] == [(0, 0, 0, 0)] * 2
    assert all(r.missed == r.expected > 0 for r in results)
