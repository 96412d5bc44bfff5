"""Symbols without a grid: the ink of a page grouped into symbols, lines and reading order.

For plain paper with hand-placed rows, loose symbols on a printed page, or a photo of one
symbol. The page arrives prepared (`prepare_page`) and levelled, as for a grid; then:

1. Long thin strokes are erased: ruled notebook lines, margins, page and table edges.
2. Ink is labelled into connected components; specks and solid blots are set aside.
3. The symbol scale is read off the tallest pieces of ink (printed text and specks, however
   many, are smaller than handwriting), and pieces of one symbol are joined: broken strokes,
   a detached bar, the dot of a glyph.
4. What is too small (printed letters, stray dots), too large, a line remnant, a stain
   (`rejects`), scribble or noise is rejected and counted by reason, so nothing is dropped
   silently; symbols written touching are cut apart (`touching`).
5. Symbols are chained into lines left to right, tolerant of wobble, and ordered by reading:
   lines top to bottom, symbols left to right (`lines`); lines of printed type are set aside.

numpy and Pillow only: serving imports this.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from tessera.imaging.connected_components import (
    Components,
    Ints,
    Mask,
    label_components,
    runs,
)
from tessera.imaging.decode import Gray
from tessera.sheets.lines import printed_lines, reading_order
from tessera.sheets.rejects import MAX_RUNS_PER_ROW, against, blots, busy, dark, runs_per_row
from tessera.sheets.touching import split_touching

# Pieces of ink at least this tall (as a share of the symbol scale) are symbols on their own;
# smaller ones join a symbol they touch or are rejected as small (printed text, dots).
MIN_SYMBOL_SHARE = 0.45
# A symbol taller than this many symbol heights, or wider than the width share, is no symbol.
MAX_SYMBOL_HEIGHTS = 3.0
MAX_SYMBOL_WIDTHS = 5.0
# No symbol is read from fewer pixels than this (a 5000-cell sheet's digits are 14 tall), nor
# from less than this share of the page's long side (5 mm writing on A4 is 1.7%).
MIN_SCALE = 8
MIN_SCALE_SHARE = 0.01
# A page with this many specks, and this many per symbol found, is noise: its "symbols" are
# clumps of specks.
NOISE_SPECKS = 1000
NOISE_RATIO = 50
# Past this many candidate pieces (after specks) the page is noise, not writing.
MAX_PIECES = 6000
# Horizontal runs longer than this share of the page's width are rulings (a notebook's lines,
# faint and broken, show in pieces of this length); vertical ones, margins and page edges,
# span more of its height, so a tall thin "1" on a small photo is not taken for one.
LINE_RUN_SHARE = 0.12
VERTICAL_RUN_SHARE = 0.3
MIN_LINE_RUN = 40
# ...and no thicker than this share of the page side (a thick pen stroke is not a ruling).
LINE_THICKNESS_SHARE = 0.01


@dataclass(frozen=True)
class FoundSymbol:
    """One symbol: `box` (top, left, bottom, right) in the levelled working page, `members`
    the connected components it is made of."""

    box: tuple[int, int, int, int]
    members: tuple[int, ...]
    line: int = -1
    position: int = -1


@dataclass(frozen=True)
class SymbolLayout:
    symbols: list[FoundSymbol]  # in reading order
    line_counts: list[int]
    rejected: dict[str, int]
    scale: float  # the symbol height, in working pixels
    score: float  # share of symbols of a consistent size
    components: Components  # of the mask with rulings erased; symbols name their members


def erase_rulings(mask: Mask, scale: float = 0.0) -> tuple[Mask, int]:
    """The mask without long thin horizontal and vertical strokes (notebook rulings, margins,
    page edges), and how many line pixels went. Strokes crossing a ruling lose a sliver, which
    the joining step mends. With the symbol scale known, a horizontal run of one and a half
    symbols is long enough (a faint ruling shows in pieces), but never under MIN_LINE_RUN."""
    height, width = mask.shape
    across = max(MIN_LINE_RUN, int(width * LINE_RUN_SHARE))
    if scale > 0:
        across = max(MIN_LINE_RUN, min(across, int(1.5 * scale)))
    down = max(MIN_LINE_RUN, int(height * VERTICAL_RUN_SHARE))
    line_pixels = _long_thin_runs(mask, min_run=across, side=height)
    line_pixels |= _long_thin_runs(mask.T, min_run=down, side=width).T
    return mask & ~line_pixels, int(line_pixels.sum())


def _long_thin_runs(mask: Mask, *, min_run: int, side: int) -> Mask:
    """Pixels of horizontal rulings: runs of at least `min_run` that are thin, carried on
    through the places where a symbol sits on the line (there the run is thick, ruling and
    stroke together, and only the rows the ruling holds on either side go)."""
    # A hand-drawn or slightly turned ruling steps a row now and then: its runs are taken on
    # the mask thickened by a row each way, then kept to its own pixels.
    stepped = mask.copy()
    stepped[1:] |= mask[:-1]
    stepped[:-1] |= mask[1:]
    runs = _runs_at_least(stepped, min_run) & mask
    if not runs.any():
        return runs
    thick = max(6, int(side * LINE_THICKNESS_SHARE))
    # Vertical runs of the long-run mask thicker than `thick` are solid ink (a blot, a heavy
    # bar, or a stroke on the ruling): not ruling by themselves.
    solid = _runs_at_least(runs.T, thick + 1).T
    thin = runs & ~solid
    # Where the ruling is thin within reach along its row, the row is ruling under the stroke.
    reach = max(4, min_run // 4)
    counts = np.cumsum(np.pad(thin, ((0, 0), (reach + 1, reach)), mode="constant"), axis=1)
    near = (counts[:, 2 * reach + 1 :] - counts[:, : -2 * reach - 1]) > 0
    result: Mask = runs & (thin | (solid & near))
    return result


def _runs_at_least(mask: Mask, length: int) -> Mask:
    """Pixels that sit in a horizontal run of at least `length` true pixels."""
    height, width = mask.shape
    rows, starts, ends = runs(mask)
    keep = (ends - starts) >= length
    out = np.zeros((height, width + 1), dtype=np.int32)
    np.add.at(out, (rows[keep], starts[keep]), 1)
    np.add.at(out, (rows[keep], ends[keep]), -1)
    result: Mask = np.cumsum(out, axis=1)[:, :width] > 0
    return result


def find_symbols(mask: Mask, shade: Gray | None = None) -> SymbolLayout:
    """Group a levelled page's ink mask into symbols in reading order (see the module).
    `shade`, the page's ink before its light was flattened, shows stains and shadows that
    flattening reduced to their rims: a symbol's box is mostly paper there."""
    rejected: Counter[str] = Counter()
    # A first look at the scale, from the ink as it is, lets the rulings be found by it.
    raw = label_components(mask)
    raw_heights = raw.bottom - raw.top
    first_scale = _symbol_scale(raw_heights[raw.area >= 6], _smallest(mask))
    cleaned, line_pixels = erase_rulings(mask, first_scale)
    if line_pixels:
        rejected["ruled_line"] += 1
    components = label_components(cleaned)
    heights = components.bottom - components.top
    widths = components.right - components.left
    # Specks: a few pixels whatever the scale.
    speck = (components.area < 6) | ((heights < 4) & (widths < 4))
    rejected["speck"] += int(speck.sum())
    blot = blots(cleaned, components, speck)
    rejected["blot"] += int(blot.sum())
    candidate = ~speck & ~blot
    if int(candidate.sum()) > MAX_PIECES:
        rejected["noise"] += int(candidate.sum())
        return SymbolLayout([], [], _nonzero(rejected), 0.0, 0.0, components)
    smallest = _smallest(mask)
    scale = _symbol_scale(heights[candidate], smallest)
    if scale <= 0:
        return SymbolLayout([], [], _nonzero(rejected), 0.0, 0.0, components)
    index = np.flatnonzero(candidate)
    groups = _join_pieces(components, index, scale)
    symbols: list[FoundSymbol] = []
    refused: list[tuple[int, int, int, int]] = [
        (
            int(components.top[k]),
            int(components.left[k]),
            int(components.bottom[k]),
            int(components.right[k]),
        )
        for k in np.flatnonzero(blot)
    ]
    for members in groups:
        box = _group_box(components, members)
        top, left, bottom, right = box
        h, w = bottom - top, right - left
        if h < max(MIN_SYMBOL_SHARE * scale, 0.75 * smallest) and w < 4 * max(h, 1):
            # Printed letters and words (often run together into one piece), dots, dashes.
            rejected["small"] += len(members)
        elif h < MIN_SYMBOL_SHARE * scale:
            # A short rule or underline (a form's "Name: ____"), not a symbol.
            rejected["ruled_line"] += len(members)
        elif h > MAX_SYMBOL_HEIGHTS * scale or w > MAX_SYMBOL_WIDTHS * scale:
            rejected["too_large"] += len(members)
        elif runs_per_row(components, members, h) > MAX_RUNS_PER_ROW or (
            shade is not None and busy(shade, box)
        ):
            # Strokes cross a row of a symbol a few times; noise and scribble, dozens.
            rejected["scribble"] += len(members)
            refused.append(box)
        elif shade is not None and min(h, w) >= 0.5 * scale and dark(shade, box):
            # Dark all over before the light was flattened: a stain or a shadow's rim (a thin
            # "1" fills its narrow box, so only wide boxes are judged).
            rejected["blot"] += len(members)
            refused.append(box)
        else:
            symbols.append(FoundSymbol(box=box, members=tuple(int(m) for m in members)))
    # What is left inside or against a stain or a scribble is a piece of it, not a symbol.
    kept = [symbol for symbol in symbols if not against(symbol.box, refused)]
    rejected["blot"] += len(symbols) - len(kept)
    symbols = kept
    if rejected["speck"] >= NOISE_SPECKS and rejected["speck"] >= NOISE_RATIO * len(symbols):
        # A page of specks with a few clumps among them is noise, not writing.
        rejected["noise"] += len(symbols)
        symbols = []
    symbols, touching = split_touching(symbols, components, scale)
    if touching:
        rejected["touching_split"] += touching
    ordered, counts = reading_order(symbols, scale)
    printed = printed_lines(ordered)
    if printed:
        # Lines of printed text read as symbols: set aside, and the rest ordered again.
        kept = [s for s in ordered if s.line not in printed]
        rejected["printed_text"] += len(ordered) - len(kept)
        ordered, counts = reading_order(kept, scale)
    consistent = sum(1 for s in ordered if 0.5 * scale <= s.box[2] - s.box[0] <= 1.8 * scale) / max(
        1, len(ordered)
    )
    return SymbolLayout(
        ordered, counts, _nonzero(rejected), scale, round(consistent, 3), components
    )


def _nonzero(counts: Counter[str]) -> dict[str, int]:
    return {reason: count for reason, count in sorted(counts.items()) if count}


def _smallest(mask: Mask) -> int:
    return max(MIN_SCALE, round(int(max(mask.shape)) * MIN_SCALE_SHARE))


def _symbol_scale(heights: Ints, smallest: int) -> float:
    """The height of a symbol on this page: the median of the tallest group of pieces that has
    at least three members (or of the tallest group, when none has). Pieces group by height
    from the top down, a new group starting below 0.6 of the current one's tallest. Printed
    text and dots are many but short, a scribble or a title is one tall piece, specks under
    `smallest` pixels are never symbols: none of them sets the scale of the writing."""
    if heights.size == 0:
        return 0.0
    tall = heights[heights >= smallest]
    ordered = np.sort(tall if tall.size else heights)[::-1].astype(np.float64)
    groups: list[list[float]] = [[float(ordered[0])]]
    for height in ordered[1:]:
        if height < 0.6 * groups[-1][0]:
            groups.append([float(height)])
        else:
            groups[-1].append(float(height))
    wanted = min(3, ordered.size)
    chosen = next((group for group in groups if len(group) >= wanted), groups[0])
    return float(np.median(chosen))


def _join_pieces(components: Components, index: Ints, scale: float) -> list[Ints]:
    """Pieces of ink joined into symbols: boxes that overlap, strokes one above the other with a
    small gap (a broken stroke, the dot of a glyph), and small pieces touching a larger one's
    box. A join never makes a symbol much taller or wider than the scale allows."""
    n = index.size
    if n == 0:
        return []
    top = components.top[index].astype(np.float64)
    left = components.left[index].astype(np.float64)
    bottom = components.bottom[index].astype(np.float64)
    right = components.right[index].astype(np.float64)
    parent = np.arange(n)

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = int(parent[i])
        return i

    # Candidate pairs by a sweep over x: only pieces whose widened x-ranges meet, and
    # (a cheap first cut) whose boxes come within reach vertically too.
    order = np.argsort(left, kind="stable")
    reach = 0.3 * scale
    stops = np.searchsorted(left[order], right[order] + reach, side="right")
    counts = np.maximum(stops - np.arange(n) - 1, 0)
    firsts = np.repeat(np.cumsum(counts) - counts, counts)
    offsets = np.arange(int(counts.sum()), dtype=np.int64) - firsts
    a = np.repeat(order, counts)
    b = order[np.repeat(np.arange(n), counts) + 1 + offsets]
    near = (np.maximum(top[a], top[b]) - np.minimum(bottom[a], bottom[b])) <= reach + 0.1 * scale
    a, b = a[near], b[near]
    if a.size:
        join, closeness = _join_rules(top, left, bottom, right, a, b, scale)
        # Join in order of closeness, rechecking the joined box, so a chain of joins cannot
        # grow one symbol across a line.
        box_top, box_left = top.copy(), left.copy()
        box_bottom, box_right = bottom.copy(), right.copy()
        for k in np.flatnonzero(join)[np.argsort(closeness[join], kind="stable")]:
            ra, rb = root(int(a[k])), root(int(b[k]))
            if ra == rb:
                continue
            t, lft = min(box_top[ra], box_top[rb]), min(box_left[ra], box_left[rb])
            bt, rt = max(box_bottom[ra], box_bottom[rb]), max(box_right[ra], box_right[rb])
            if bt - t > 1.5 * scale or rt - lft > 1.6 * scale:
                continue
            low, high = min(ra, rb), max(ra, rb)
            parent[high] = low
            box_top[low], box_left[low], box_bottom[low], box_right[low] = t, lft, bt, rt
    roots = np.array([root(i) for i in range(n)])
    return [index[roots == r] for r in np.unique(roots)]


def _join_rules(
    top: NDArray[np.float64],
    left: NDArray[np.float64],
    bottom: NDArray[np.float64],
    right: NDArray[np.float64],
    a: Ints,
    b: Ints,
    scale: float,
) -> tuple[NDArray[np.bool_], NDArray[np.float64]]:
    """Which candidate pairs (a[k], b[k]) of pieces are one symbol, and how close they are."""
    x_overlap = np.minimum(right[a], right[b]) - np.maximum(left[a], left[b])
    y_overlap = np.minimum(bottom[a], bottom[b]) - np.maximum(top[a], top[b])
    width_a, width_b = right[a] - left[a], right[b] - left[b]
    height_a, height_b = bottom[a] - top[a], bottom[b] - top[b]
    narrower = np.maximum(np.minimum(width_a, width_b), 1)
    shorter = np.maximum(np.minimum(height_a, height_b), 1)
    gap_y, gap_x = -y_overlap, -x_overlap
    overlapping = (x_overlap > 0.25 * narrower) & (y_overlap > 0.25 * shorter)
    # A small piece (a dot, a detached bar) joins a symbol-sized piece it nearly touches; two
    # small pieces never join, so printed words stay letters, each rejected as small...
    extent_a, extent_b = np.maximum(height_a, width_a), np.maximum(height_b, width_b)
    small_a, small_b = extent_a < MIN_SYMBOL_SHARE * scale, extent_b < MIN_SYMBOL_SHARE * scale
    # ...and a speck (about a tenth of a symbol) joins nothing: it is paper noise.
    specks = np.minimum(extent_a, extent_b) < 0.12 * scale
    near = (gap_x <= 0.12 * scale) & (gap_y <= 0.12 * scale)
    touching_small = (small_a ^ small_b) & near & ~specks
    # Strokes one above the other with a small gap: a pen lifted mid-stroke, a 5's flag.
    # Printed lines one above the other are short pieces: one piece must be tall.
    tall = np.maximum(height_a, height_b) >= 0.3 * scale
    stacked = (x_overlap >= 0.4 * narrower) & (gap_y <= 0.35 * scale) & ~specks & tall
    # A glyph broken top to bottom (a 4 whose bar missed its stem): two tall pieces nearly
    # touching side by side, one of them narrowish, together no wider than a symbol.
    joined_h = np.maximum(bottom[a], bottom[b]) - np.minimum(top[a], top[b])
    joined_w = np.maximum(right[a], right[b]) - np.minimum(left[a], left[b])
    beside = (gap_x <= 0.08 * scale) & (y_overlap > 0.5 * shorter) & (narrower < 0.6 * scale)
    side_by_side = beside & (joined_w <= 1.2 * scale)
    fits = (joined_h <= 1.5 * scale) & (joined_w <= 1.6 * scale)
    join = (stacked | overlapping | touching_small | side_by_side) & fits
    return join, gap_y + gap_x


def _group_box(components: Components, members: Ints) -> tuple[int, int, int, int]:
    return (
        int(components.top[members].min()),
        int(components.left[members].min()),
        int(components.bottom[members].max()),
        int(components.right[members].max()),
    )


def component_image(components: Components, shape: tuple[int, int]) -> NDArray[np.int32]:
    """An image of which component each ink pixel belongs to (k + 1; 0 for paper). A symbol's
    own ink is its members' pixels inside its box (two symbols split from one component share
    its members and divide its columns). One pass over the runs, however many components."""
    lengths = components.run_end - components.run_start
    rows = np.repeat(components.run_row, lengths)
    firsts = np.repeat(np.cumsum(lengths) - lengths, lengths)
    cols = np.repeat(components.run_start, lengths) + np.arange(int(lengths.sum())) - firsts
    image = np.zeros(shape, dtype=np.int32)
    image[rows, cols] = np.repeat(components.run_label.astype(np.int32) + 1, lengths)
    return image
