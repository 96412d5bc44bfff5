"""Symbols written touching each other, read as one wide piece of ink, cut apart where little
ink crosses from one to the other."""

from __future__ import annotations

from dataclasses import replace
from itertools import pairwise
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from tessera.imaging.connected_components import Components

if TYPE_CHECKING:
    from tessera.sheets.symbols import FoundSymbol

# A piece this many times as wide as it is tall is symbols written touching.
TOUCHING_WIDTHS = 1.5
# ...cut where fewer ink runs cross a column than this share of its typical column.
TOUCH_INK_SHARE = 0.5


def split_touching(
    symbols: list[FoundSymbol], components: Components, scale: float
) -> tuple[list[FoundSymbol], int]:
    """Symbols written touching each other, read as one wide piece, cut apart where their ink is
    thinnest, into as many as their width holds; and how many were split."""
    out: list[FoundSymbol] = []
    split = 0
    # The page's own symbols say how wide one is (with a few to go by).
    page_width = (
        float(np.median([s.box[3] - s.box[1] for s in symbols])) if len(symbols) >= 5 else 0.0
    )
    for symbol in symbols:
        top, left, bottom, right = symbol.box
        width, height = right - left, bottom - top
        # A single digit is at most about 1.3 times as wide as it is tall, and under twice
        # twice the page's typical width; symbols written touching are wider.
        typical = max(page_width, 0.5 * height) if page_width else 0.75 * height
        limit = min(TOUCHING_WIDTHS * height, 2.0 * typical)
        parts = round(width / typical)
        if width < limit or width < 0.9 * scale or parts < 2:
            out.append(symbol)
            continue
        profile = _column_profile(components, symbol.members, left, right)
        inked = float(np.median(profile[profile > 0])) if profile.any() else 0.0
        cuts = [left]
        for k in range(1, parts):
            guess = round(k * width / parts)
            lo, hi = (
                max(1, guess - int(0.25 * typical)),
                min(int(width) - 1, guess + int(0.25 * typical)),
            )
            at = lo + int(np.argmin(profile[lo : hi + 1]))
            # Where two symbols touch, little ink crosses: a wide symbol's middle has more.
            if profile[at] <= TOUCH_INK_SHARE * inked:
                cuts.append(left + at)
        cuts.append(right)
        if len(cuts) == 2:
            out.append(symbol)
            continue
        for a, b in pairwise(cuts):
            out.append(replace(symbol, box=(top, a, bottom, b)))
        split += 1
    return out, split


def _column_profile(
    components: Components, members: tuple[int, ...], left: int, right: int
) -> NDArray[np.int64]:
    """Ink per column of [left, right) of the member components."""
    chosen = np.isin(components.run_label, members)
    starts = np.clip(components.run_start[chosen], left, right) - left
    ends = np.clip(components.run_end[chosen], left, right) - left
    marks = np.zeros(right - left + 1, dtype=np.int64)
    np.add.at(marks, starts, 1)
    np.add.at(marks, ends, -1)
    profile: NDArray[np.int64] = np.cumsum(marks)[:-1]
    return profile
