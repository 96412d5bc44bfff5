"""Symbols into lines and reading order: chained left to right, tolerant of wobble, lines
mended across wide gaps and ordered top to bottom; and the lean the lines show."""

from __future__ import annotations

from dataclasses import replace
from itertools import pairwise
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from tessera.sheets.symbols import FoundSymbol, SymbolLayout


def reading_order(symbols: list[FoundSymbol], scale: float) -> tuple[list[FoundSymbol], list[int]]:
    """Chain symbols into lines left to right (each joins the line whose last symbol overlaps it
    vertically most and is nearest), mend lines broken by a wide gap, then order lines top to
    bottom."""
    if not symbols:
        return [], []
    centres_x = [(s.box[1] + s.box[3]) / 2 for s in symbols]
    lines: list[list[int]] = []
    for i in sorted(range(len(symbols)), key=lambda k: (centres_x[k], symbols[k].box[0])):
        top, _, bottom, _ = symbols[i].box
        best, best_score = -1, 0.0
        for number, line in enumerate(lines):
            last = symbols[line[-1]].box
            overlap = min(bottom, last[2]) - max(top, last[0])
            share = overlap / max(1, min(bottom - top, last[2] - last[0]))
            # The line's own band, for a symbol much taller or shorter than the last one.
            band_top = float(np.median([symbols[k].box[0] for k in line[-3:]]))
            band_bottom = float(np.median([symbols[k].box[2] for k in line[-3:]]))
            centre = (top + bottom) / 2
            inside = band_top <= centre <= band_bottom
            if share < 0.4 and not inside:
                continue
            distance = symbols[i].box[1] - last[3]
            score = share - max(0.0, distance) / (20 * scale)
            if score > best_score or best < 0:
                best, best_score = number, score
        if best < 0:
            lines.append([i])
        else:
            lines[best].append(i)
    lines = _mend_lines(lines, symbols)

    def line_centre(line: list[int]) -> float:
        return float(np.median([(symbols[k].box[0] + symbols[k].box[2]) / 2 for k in line]))

    lines.sort(key=line_centre)
    ordered: list[FoundSymbol] = []
    for number, line in enumerate(lines):
        for position, k in enumerate(sorted(line, key=lambda k: centres_x[k])):
            ordered.append(replace(symbols[k], line=number, position=position))
    return ordered, [len(line) for line in lines]


def _mend_lines(lines: list[list[int]], symbols: list[FoundSymbol]) -> list[list[int]]:
    """Join lines that are one line broken by a wide gap: side by side, not overlapping in x,
    with their vertical bands overlapping by most of a symbol."""

    def band(line: list[int]) -> tuple[float, float, int, int]:
        tops = [symbols[k].box[0] for k in line]
        bottoms = [symbols[k].box[2] for k in line]
        lefts = [symbols[k].box[1] for k in line]
        rights = [symbols[k].box[3] for k in line]
        return float(np.median(tops)), float(np.median(bottoms)), min(lefts), max(rights)

    # Each line's band is worked out once, and again only for a line that a join changed.
    bands = [band(line) for line in lines]
    merged = True
    while merged and len(lines) > 1:
        merged = False
        for i in range(len(lines)):
            for j in range(i + 1, len(lines)):
                ti, bi, li, ri = bands[i]
                tj, bj, lj, rj = bands[j]
                overlap = min(bi, bj) - max(ti, tj)
                if overlap < 0.6 * min(bi - ti, bj - tj):
                    continue
                if min(ri, rj) > max(li, lj):
                    continue  # side by side in x only
                lines[i] = lines[i] + lines[j]
                bands[i] = band(lines[i])
                del lines[j], bands[j]
                merged = True
                break
            if merged:
                break
    return lines


def line_angle(layout: SymbolLayout) -> float:
    """The page's lean read off its lines of symbols, in degrees, as `Tilt.rows` takes it
    (positive: lines rise to the right): the median slope of the symbols' centres along every
    line of at least three. 0 when no line is long enough to say."""
    slopes = []
    for number in range(len(layout.line_counts)):
        members = [s for s in layout.symbols if s.line == number]
        if len(members) < 3:
            continue
        xs = np.array([(s.box[1] + s.box[3]) / 2 for s in members], dtype=np.float64)
        ys = np.array([(s.box[0] + s.box[2]) / 2 for s in members], dtype=np.float64)
        if np.ptp(xs) <= 0:
            continue
        slopes.append(float(np.polyfit(xs, ys, 1)[0]))
    if not slopes:
        return 0.0
    return float(np.degrees(np.arctan(-np.median(slopes))))


# A line of at least this many symbols whose median gap is under this share of their median
# height is printed text: type sets letters a tenth of a letter apart, a hand spaces symbols.
PRINTED_MIN_SYMBOLS = 8
PRINTED_GAP_SHARE = 0.15


def printed_lines(ordered: list[FoundSymbol]) -> set[int]:
    """The lines (numbers, of `ordered` in reading order) that are printed text."""
    by_line: dict[int, list[FoundSymbol]] = {}
    for symbol in ordered:
        by_line.setdefault(symbol.line, []).append(symbol)
    printed = set()
    for number, members in by_line.items():
        if len(members) < PRINTED_MIN_SYMBOLS:
            continue
        gaps = [b.box[1] - a.box[3] for a, b in pairwise(members)]
        height = float(np.median([s.box[2] - s.box[0] for s in members]))
        if float(np.median(gaps)) < PRINTED_GAP_SHARE * height:
            printed.add(number)
    return printed
