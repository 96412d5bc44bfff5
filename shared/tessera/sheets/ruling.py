"""A ruled grid: its lines found as long runs of ink (hand-ruled, bowed or keystoned), cell
edges from them, and the line pixels to erase from each cell."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from tessera.imaging.connected_components import Ints, Mask
from tessera.sheets.gaps import profile_autocorrelation


def long_runs(mask: Mask, length: int) -> Mask:
    """Pixels of horizontal runs at least `length` long (a morphological opening), with one
    pixel of vertical slack so hand-ruled lines that wobble still count as one run."""
    height, width = mask.shape
    if length > width:
        return np.zeros_like(mask)
    slack = mask.copy()
    slack[1:] |= mask[:-1]
    slack[:-1] |= mask[1:]
    # A run of `length` fully covers at least one aligned block of half that length: a page
    # of small symbols and no lines is answered from the blocks alone.
    block = max(1, length // 2)
    blocks = slack[:, : width // block * block].reshape(height, -1, block)
    if not blocks.all(axis=2).any():
        return np.zeros_like(mask)
    sums = np.zeros((height, width + 1), dtype=np.int32)
    np.cumsum(slack, axis=1, out=sums[:, 1:])
    window_full = (sums[:, length:] - sums[:, :-length]) == length  # window [x, x+length)
    starts = np.zeros((height, width + 1), dtype=np.int32)
    np.cumsum(np.pad(window_full, ((0, 0), (0, length - 1))), axis=1, out=starts[:, 1:])
    covered = np.zeros((height, width), dtype=np.bool_)
    # Pixel x is covered when some full window starts in [x-length+1, x].
    low = np.arange(width) - length + 1
    covered = (starts[:, 1:] - starts[:, np.clip(low, 0, width)]) > 0
    return covered & slack


@dataclass(frozen=True)
class _Lines:
    centres: list[float]


def _line_positions(runs: Mask, *, min_fraction: float) -> _Lines:
    """Ruled lines along one axis: rows where long runs cover a good part of the page's width.

    Coverage is measured in vertical strips and the strips' findings are chained, so a line
    that keystone perspective leaves tilted (differently at the top and bottom of a photo) is
    still found as one line.
    """
    per_column = runs.sum(axis=0)
    total = int(per_column.sum())
    if total == 0:
        return _Lines([])
    # A line a little off level spreads over a few rows: count the columns it covers within a
    # window of rows. Strokes of symbols cover only their own cells' width, a line the page's.
    # Keystone leaves the far lines leaning by a degree or two more than the page's own tilt,
    # so the window grows with the line spacing, staying well short of the next line.
    spacing = _line_spacing(runs.sum(axis=1).astype(np.float64))
    reach = int(np.clip(round(0.12 * spacing), 3, 12)) if spacing else 3
    sums = np.zeros((runs.shape[0] + 2 * reach + 1, runs.shape[1]), dtype=np.int32)
    np.cumsum(runs, axis=0, out=sums[reach + 1 : reach + 1 + runs.shape[0]])
    sums[reach + 1 + runs.shape[0] :] = sums[reach + runs.shape[0]]
    window = (sums[2 * reach + 1 :] - sums[: runs.shape[0]]) > 0
    # The ruling's extent from where the long runs mostly are: a stray run from a heading,
    # a page edge or a shadow would otherwise stretch the strips past the lines' ends, and
    # the lines would cover too little of them.
    cumulative = np.cumsum(per_column)
    first = int(np.searchsorted(cumulative, 0.01 * total, side="right"))
    last = int(np.searchsorted(cumulative, 0.99 * total, side="left"))
    span = last + 1 - first
    # Strips long enough to span several cells: within one cell a column of "1"s covers as
    # much of a strip as a line does.
    strips = int(np.clip(span // 200, 2, 6))
    bounds = np.linspace(first, last + 1, strips + 1).round().astype(int)
    found: list[tuple[float, int, int, int]] = []  # centre, strip, band start, band end
    for strip in range(strips):
        left, right = int(bounds[strip]), int(bounds[strip + 1])
        if right <= left:
            continue
        coverage = window[:, left:right].sum(axis=1)
        strong = coverage >= (right - left) * min_fraction
        profile = runs[:, left:right].sum(axis=1).astype(np.float64)
        edges = np.flatnonzero(np.diff(np.concatenate([[0], strong.astype(np.int8), [0]])))
        # A ruled line is thin: the window plus its width and a little tilt. A band as tall
        # as a row of symbols is symbols that happen to touch.
        tallest = 2 * reach + 2 + 0.03 * runs.shape[0]
        for start, end in zip(edges[::2], edges[1::2], strict=True):
            weights = profile[start:end]
            if weights.sum() > 0 and end - start <= tallest:
                centre = float((weights * np.arange(start, end)).sum() / weights.sum())
                found.append((centre, strip, int(start), int(end)))
    found.sort()
    centres: list[float] = []
    chain: list[tuple[float, int, int, int]] = []
    for item in [*found, (float("inf"), -1, 0, 0)]:
        if chain and item[0] - chain[-1][0] > max(8.0, 2.0 * reach + 2):
            if len({member[1] for member in chain}) * 2 > strips:
                centres.append(float(np.mean([member[0] for member in chain])))
            chain = []
        chain.append(item)
    return _Lines(centres)


def _line_spacing(profile: NDArray[np.float64]) -> float | None:
    """The usual distance between ruled lines from the long runs' profile across them (its
    first strong autocorrelation peak), or None when the profile has no clear period."""
    size = profile.size
    if size < 32:
        return None
    autocorrelation = profile_autocorrelation(profile)
    if autocorrelation is None:
        return None
    values = autocorrelation[8 : size // 2]
    if values.size < 3:
        return None
    peaks = np.flatnonzero(
        (values[1:-1] > values[:-2]) & (values[1:-1] >= values[2:]) & (values[1:-1] > 0.2)
    )
    if peaks.size == 0:
        return None
    strongest = values[1:-1][peaks].max()
    first = peaks[np.flatnonzero(values[1:-1][peaks] >= 0.7 * strongest)[0]]
    return float(first + 9)


def _regular(centres: list[float], strengths: list[float]) -> list[float]:
    """Drop lines that sit too close to a stronger one; fill a missing line in a gap that is
    a whole multiple of the usual spacing."""
    if len(centres) < 3:
        return centres
    kept = [centres[0]]
    kept_strength = [strengths[0]]
    spacing = float(np.median(np.diff(centres)))
    for centre, strength in zip(centres[1:], strengths[1:], strict=True):
        if centre - kept[-1] < 0.55 * spacing:
            if strength > kept_strength[-1]:
                kept[-1], kept_strength[-1] = centre, strength
            continue
        kept.append(centre)
        kept_strength.append(strength)
    if len(kept) < 3:
        return kept
    spacing = float(np.median(np.diff(kept)))
    filled = [kept[0]]
    for centre in kept[1:]:
        gap = centre - filled[-1]
        missing = round(gap / spacing) - 1
        if missing >= 1 and abs(gap / (missing + 1) - spacing) < 0.2 * spacing:
            base = filled[-1]
            filled.extend([base + gap * k / (missing + 1) for k in range(1, missing + 1)])
        filled.append(centre)
    return filled


def _edges_from_lines(centres: list[float], size: int, ink_profile: NDArray[np.float64]) -> Ints:
    """Cell edges from ruled lines; a missing outer border is taken as the image edge when
    there is a cell's worth of inked space beyond the outermost line."""
    edges = list(centres)
    spacing = float(np.median(np.diff(edges)))
    before = ink_profile[: max(0, int(edges[0]) - 3)].sum()
    after = ink_profile[int(edges[-1]) + 4 :].sum()
    # A cell's worth: a fifth of what an average row of cells inside the grid holds.
    inside = ink_profile[int(edges[0]) : int(edges[-1]) + 1].sum() / max(1, len(edges) - 1)
    if edges[0] > 0.6 * spacing and before > 0.2 * inside:
        edges.insert(0, max(0.0, edges[0] - spacing))
    if size - edges[-1] > 0.6 * spacing and after > 0.2 * inside:
        edges.append(min(float(size), edges[-1] + spacing))
    return np.rint(edges).astype(np.int64)


def _strength(runs: Mask, centre: float) -> float:
    row = round(centre)
    return float(runs[max(0, row - 3) : row + 4].sum())


@dataclass(frozen=True)
class Ruling:
    row_edges: Ints
    col_edges: Ints
    horizontal: Mask  # long horizontal runs, where the row lines are followed cell by cell
    vertical: Mask


def ruled_grid(mask: Mask) -> Ruling | None:
    """Row and column edges from ruled lines, and the mask of line pixels to erase."""
    height, width = mask.shape
    length = max(12, min(height, width) // 25)
    horizontal = long_runs(mask, length)
    across = _line_positions(horizontal, min_fraction=0.8)
    strength_h = [_strength(horizontal, c) for c in across.centres]
    row_lines = _regular(across.centres, strength_h)
    if len(row_lines) < 2:
        # No ruling across: a sheet of symbols separated by gaps, no need to look down.
        return None
    vertical = long_runs(mask.T, length).T
    down = _line_positions(vertical.T, min_fraction=0.8)
    strength_v = [_strength(vertical.T, c) for c in down.centres]
    col_lines = _regular(down.centres, strength_v)
    if len(col_lines) < 2:
        return None
    ink_rows = mask.sum(axis=1).astype(np.float64)
    ink_cols = mask.sum(axis=0).astype(np.float64)
    row_edges = _edges_from_lines(row_lines, height, ink_rows)
    col_edges = _edges_from_lines(col_lines, width, ink_cols)
    return Ruling(row_edges, col_edges, horizontal, vertical)


# Ruled-line pixels are erased this far either side of where a line was followed in a cell:
# a ruled line's own width, not a window that would reach into the cells' symbols.
LINE_HALF_WIDTH = 4


def along_lines(runs: Mask, followed: Ints, across: Ints) -> Mask:
    """The pixels of long runs within LINE_HALF_WIDTH of each line where it was followed,
    segment by segment (`followed` as `follow_lines` gives it)."""
    lines = np.zeros_like(runs)
    size = runs.shape[0]
    # The outer segments reach past the outer lines, where keystoned cells stick out.
    starts = across[:-1].copy()
    ends = across[1:].copy()
    starts[0] = max(0, int(starts[0]) - 4 * LINE_HALF_WIDTH)
    ends[-1] = int(ends[-1]) + 4 * LINE_HALF_WIDTH
    for line in range(followed.shape[0]):
        for segment in range(followed.shape[1]):
            centre = int(followed[line, segment])
            area = np.s_[
                max(0, centre - LINE_HALF_WIDTH) : min(size, centre + LINE_HALF_WIDTH + 1),
                int(starts[segment]) : int(ends[segment]),
            ]
            lines[area] |= runs[area]
    return lines


def follow_lines(runs: Mask, edges: Ints, across: Ints) -> Ints:
    """Where each ruled line (at `edges` along axis 0 of `runs`) really lies in each segment
    between `across` edges along axis 1: shape (len(edges), len(across) - 1).

    A photo's lines are not parallel (keystone perspective, bowed hand ruling), so one edge
    per line cuts the far cells through their neighbours' lines. Each line is looked for near
    its global place, segment by segment; a segment where it is not seen keeps the global place.
    """
    size = runs.shape[0]
    sums = np.zeros((size, runs.shape[1] + 1), dtype=np.int32)
    np.cumsum(runs, axis=1, out=sums[:, 1:])
    starts, ends = across[:-1], across[1:]
    spans = np.maximum(ends - starts, 1)
    per_segment = sums[:, ends] - sums[:, starts]  # (size, segments)
    spacing = float(np.median(np.diff(edges))) if edges.size > 1 else float(size)
    reach = max(2, round(0.25 * spacing))
    offsets = np.arange(-reach, reach + 1)
    rows = np.clip(edges[:, None] + offsets[None, :], 0, size - 1)  # (lines, window)
    window = per_segment[rows].astype(np.float64)  # (lines, window, segments)
    # A row of the line covers most of the segment; a glyph's bar covers a part of it.
    weights = np.clip(window - 0.5 * spans[None, None, :], 0.0, None)
    total = weights.sum(axis=1)
    centre = (weights * rows[:, :, None]).sum(axis=1) / np.where(total > 0, total, 1.0)
    followed = np.where(total > 0, np.rint(centre), edges[:, None])
    return np.clip(followed, 0, size).astype(np.int64)
