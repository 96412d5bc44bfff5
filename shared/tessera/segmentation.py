"""Real sheets into clean cells: illumination flattening, adaptive threshold, deskew, grid
finding (ruled lines or ink gaps), ruled-line removal, empty-cell detection, and, for pages
with no grid, ink grouped into symbols in reading order.

Serving imports this module too, so it depends on numpy and Pillow only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from tessera.components import label_components
from tessera.config import PIPELINE
from tessera.errors import InvalidInput
from tessera.imaging import Gray, Tile, check_grid_fits, clean_ink, normalize_ink

Mask = NDArray[np.bool_]
Ints = NDArray[np.int64]

# Pages are analysed at no more than this many pixels on their long side: a 4000x3000 photo
# holds no more information about a 28x28 glyph than its 2000x1500 reduction, and a quarter of
# the pixels keeps a Lambda's memory and time in bounds.
WORKING_SIDE = 2000
MAX_SKEW_DEGREES = 8.0
# Below this the page is left unrotated: resampling would blur more than it straightens.
MIN_SKEW_DEGREES = 0.15


@dataclass(frozen=True)
class Page:
    """A page as ink: bright strokes on zero, lit evenly, with the threshold that separates
    strokes from paper noise. `ink` is smoothed, for deciding what is ink; `values` is the
    same ink unsmoothed, what the cells are cut from (smoothing thickens thin strokes and
    closes the loops of small glyphs)."""

    ink: Gray
    values: Gray
    threshold: float
    scale: float  # working pixels per source pixel

    @property
    def mask(self) -> Mask:
        return self.ink > self.threshold


@dataclass(frozen=True)
class Cutting:
    """A sheet cut into cells. Tiles hold cleaned ink (bright on black, ruled lines and
    neighbours' fragments removed), one per cell in reading order, empty cells included."""

    rows: int
    cols: int
    empty: list[tuple[int, int]]
    grid_source: str  # "given", "ruled" or "gaps"
    skew_degrees: float
    row_edges: list[int]
    col_edges: list[int]
    _ink: Gray = field(repr=False)
    _present: NDArray[np.bool_] = field(repr=False)
    _heights: Ints = field(repr=False)
    _widths: Ints = field(repr=False)

    @cached_property
    def tiles(self) -> list[Tile]:
        # Made on first use: the vectors come from the stack, and a 5000-cell sheet's tile
        # objects cost more than its whole normalization.
        return [
            Tile(
                row=r, col=c, pixels=self._ink[index, : self._heights[index], : self._widths[index]]
            )
            for index, (r, c) in enumerate(np.ndindex(self.rows, self.cols))
        ]

    @property
    def inked(self) -> list[Tile]:
        return [tile for tile, present in zip(self.tiles, self._present, strict=True) if present]

    def normalized(self, *, deslant: bool = False) -> tuple[Gray, NDArray[np.bool_]]:
        """All cells as (n, 28, 28) MNIST-style arrays, and which cells hold ink."""
        return normalize_ink(self._ink, deslant=deslant), self._present.copy()

    def manifest(self) -> dict[str, object]:
        return {
            "rows": self.rows,
            "cols": self.cols,
            "grid_source": self.grid_source,
            "skew_degrees": round(self.skew_degrees, 2),
            "cells": self.rows * self.cols,
            "inked": int(self._present.sum()),
            "empty": [[r, c] for r, c in self.empty],
        }


@dataclass(frozen=True)
class Symbol:
    """One symbol on a page with no grid; box is (left, top, right, bottom) in source pixels."""

    line: int
    index: int
    box: tuple[int, int, int, int]
    pixels: Gray


@dataclass(frozen=True)
class Reading:
    symbols: list[Symbol]
    _ink: Gray = field(repr=False)

    def normalized(self, *, deslant: bool = False) -> Gray:
        return normalize_ink(self._ink, deslant=deslant)


# --------------------------------------------------------------------------- page preparation


def _working_size(gray: Gray) -> tuple[Gray, float]:
    height, width = gray.shape
    factor = math.ceil(max(height, width) / WORKING_SIDE)
    if factor <= 1:
        return gray, 1.0
    # A box mean over whole blocks, straight from the array: no second full-size copy.
    rows, cols = height // factor, width // factor
    blocks = gray[: rows * factor, : cols * factor].reshape(rows, factor, cols, factor)
    reduced = blocks.mean(axis=(1, 3), dtype=np.float32)
    return reduced, 1.0 / factor


def _block_level(gray: Gray, block: int, quantile: float) -> Gray:
    """A smooth map of `quantile` of each block x block tile, at full size."""
    height, width = gray.shape
    rows = max(1, -(-height // block))
    cols = max(1, -(-width // block))
    padded = np.pad(gray, ((0, rows * block - height), (0, cols * block - width)), mode="edge")
    blocks = padded.reshape(rows, block, cols, block)[:, ::2, :, ::2]
    # Every other pixel each way: a quarter of the sorting for the same light map.
    blocks = blocks.transpose(0, 2, 1, 3).reshape(rows, cols, -1)
    level = np.quantile(blocks, quantile, axis=2).astype(np.float32)
    image = Image.fromarray(level, mode="F").resize(
        (cols * block, rows * block), Image.Resampling.BILINEAR
    )
    # A writable copy: callers work on it in place.
    return np.array(np.asarray(image, dtype=np.float32)[:height, :width])


def _mean3(image: Gray) -> Gray:
    padded = np.pad(image, 1, mode="edge")
    rows = padded[:-2] + padded[1:-1]
    rows += padded[2:]
    mean = rows[:, :-2] + rows[:, 1:-1]
    mean += rows[:, 2:]
    mean *= np.float32(1.0 / 9.0)
    return mean


def prepare_page(gray: Gray) -> Page:
    """Flatten the lighting and turn the page into ink intensity with an adaptive threshold.

    Paper (dark ink on light) is divided by a smooth estimate of the paper's brightness, which
    undoes uneven light and shadows in photos; light ink on a dark ground has its ground level
    subtracted. The threshold adapts to the page's paper noise.
    """
    working, scale = _working_size(np.asarray(gray, dtype=np.float32))
    height, width = working.shape
    # Blocks larger than a glyph, so each holds some paper to measure the light by.
    block = int(np.clip(min(height, width) // 16, 32, 160))
    # Statistics of the page are taken on every other pixel each way: the same figures from a
    # quarter of the sorting.
    # In place where it can be: a page is millions of pixels and every pass shows.
    if float(np.median(working[::2, ::2])) >= 0.5:
        paper = _block_level(working, block, 0.9)
        np.maximum(paper, 0.05, out=paper)
        values = np.divide(working, paper, out=paper)
        np.subtract(1.0, values, out=values)
    else:
        ground = _block_level(working, block, 0.1)
        values = np.subtract(working, ground, out=ground)
    np.clip(values, 0.0, 1.0, out=values)
    # A 3x3 mean takes two thirds off sensor noise, so faint ruling and pencil clear the
    # threshold; it only decides what is ink, the cells keep the unsmoothed values.
    ink = _mean3(values)
    # Paper noise from the lower quantiles, which are paper even when ink covers half the
    # page: for Gaussian noise q25 - q10 is 0.607 sigma and the mean sits 0.674 sigma above q25.
    sample = ink[::2, ::2]
    low, quarter = (float(v) for v in np.quantile(sample, [0.10, 0.25]))
    sigma = (quarter - low) / 0.607
    threshold = max(0.1, quarter + 0.674 * sigma + 5.0 * sigma)
    strokes = sample[sample > threshold]
    if strokes.size < 4:
        # A small symbol can fall between the sampled pixels.
        strokes = ink[ink > threshold]
    if strokes.size < 4:
        blank = np.zeros_like(ink)
        return Page(ink=blank, values=blank, threshold=1.0, scale=scale)
    # Strokes are brought to full strength, as MNIST's are, so faint pencil reads like ink; the
    # scale comes from the strongest strokes, so the grey edges of strokes stay grey (clipping
    # at a lower quantile thickened strokes and closed the loops of small 8s and 9s).
    level = max(float(np.quantile(strokes, 0.99)), threshold * 1.5)
    for page in (ink, values):
        page *= 1.0 / level
        np.minimum(page, 1.0, out=page)
    return Page(ink=ink, values=values, threshold=min(threshold / level, 0.5), scale=scale)


# --------------------------------------------------------------------------------- deskewing


@dataclass(frozen=True)
class Tilt:
    """How the page's rows and columns lean, in degrees: `rows` is the angle of its rows of
    ink and horizontal lines, `cols` that of its columns and vertical lines (the same angle
    for a page that is only rotated; different under keystone perspective or a stretched
    photo, where the grid is sheared)."""

    rows: float
    cols: float

    @property
    def degrees(self) -> float:
        """The rotation (counter-clockwise, as Pillow's `rotate` takes it) that levels rows."""
        return -self.rows


# An axis gets its own angle when that sharpens its projection this much over the shared one;
# below it, an axis with little structure (one row of symbols has no columns to speak of)
# follows the other.
_OWN_ANGLE_GAIN = 0.02


def estimate_tilt(mask: Mask) -> Tilt:
    """The page's lean: the angles at which its row and column projections are sharpest."""
    height, width = mask.shape
    step = max(1, round(max(height, width) / 800))
    ys, xs = np.nonzero(mask[::step, ::step])
    if ys.size < 20:
        return Tilt(0.0, 0.0)
    if ys.size > 60_000:
        # An even thinning keeps the projections' shape at a fraction of the cost.
        keep = slice(None, None, -(-ys.size // 60_000))
        ys, xs = ys[keep], xs[keep]
    y = ys.astype(np.float64) - ys.mean()
    x = xs.astype(np.float64) - xs.mean()

    def sharpness(degrees: float, axis: int, thin: int = 1) -> float:
        # The coarse search only has to land within half a degree: a quarter of the points
        # does that; the fine search uses them all.
        angle = math.radians(degrees)
        cos, sin = math.cos(angle), math.sin(angle)
        ys, xs = y[::thin], x[::thin]
        coordinate = ys * cos + xs * sin if axis == 0 else xs * cos - ys * sin
        bins = np.rint(coordinate - coordinate.min()).astype(np.int64)
        counts = np.bincount(bins).astype(np.float64)
        return float((counts * counts).sum())

    def sharpest(angles: NDArray[np.float64], scores: NDArray[np.float64], prefer: float) -> int:
        # A sparse page scores several angles alike: of the ties, the least turn is taken, so
        # a straight page is not resampled for nothing.
        ties = np.flatnonzero(scores >= scores.max() * (1 - 1e-9))
        return int(ties[np.argmin(np.abs(angles[ties] - prefer))])

    def refine(centre: float, axes: tuple[int, ...]) -> tuple[float, dict[int, float]]:
        fine = np.round(np.arange(centre - 0.5, centre + 0.5 + 1e-9, 0.1), 2)
        scores = np.array([[sharpness(a, axis) for axis in axes] for a in fine])
        pick = sharpest(fine, scores.sum(axis=1), centre)
        return float(fine[pick]), {axis: float(scores[pick, k]) for k, axis in enumerate(axes)}

    coarse = np.arange(-MAX_SKEW_DEGREES, MAX_SKEW_DEGREES + 1e-9, 0.5)
    scores = np.array([[sharpness(a, 0, thin=4), sharpness(a, 1, thin=4)] for a in coarse])
    shared, at_shared = refine(float(coarse[sharpest(coarse, scores.sum(axis=1), 0.0)]), (0, 1))
    angles = []
    for axis in (0, 1):
        own, at_own = refine(float(coarse[sharpest(coarse, scores[:, axis], shared)]), (axis,))
        gain = at_own[axis] / max(at_shared[axis], 1.0) - 1.0
        angles.append(own if gain >= _OWN_ANGLE_GAIN else shared)
    return Tilt(round(angles[0], 2), round(angles[1], 2))


def estimate_skew(mask: Mask) -> float:
    """The rotation in degrees (counter-clockwise, as Pillow's `rotate` takes it) that makes
    the page's rows of ink and ruled lines level."""
    return estimate_tilt(mask).degrees


def _level(ink: Gray, tilt: Tilt) -> Gray:
    """Turn rows and columns upright about the page centre: a rotation when both lean alike,
    a shear correction when they do not. New coordinates are the projections that were
    sharpest: x' = x cos(c) - y sin(c), y' = x sin(r) + y cos(r)."""
    r, c = math.radians(tilt.rows), math.radians(tilt.cols)
    det = math.cos(r - c)
    height, width = ink.shape
    cx, cy = (width - 1) / 2, (height - 1) / 2
    # Pillow's affine maps each output pixel (x', y') back to its input (x, y).
    a, b = math.cos(r) / det, math.sin(c) / det
    d, e = -math.sin(r) / det, math.cos(c) / det
    data = (a, b, cx - a * cx - b * cy, d, e, cy - d * cx - e * cy)
    levelled = Image.fromarray(ink, mode="F").transform(
        (width, height), Image.Transform.AFFINE, data, resample=Image.Resampling.BILINEAR
    )
    return np.asarray(levelled, dtype=np.float32)


# ------------------------------------------------------------------------------ ruled lines


def _long_runs(mask: Mask, length: int) -> Mask:
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


def _autocorrelation(profile: NDArray[np.float64]) -> NDArray[np.float64] | None:
    """The profile's autocorrelation (via FFT), normalized to 1 at lag 0; None for a flat or
    empty profile."""
    if profile.sum() <= 0:
        return None
    size = profile.size
    centred = profile - profile.mean()
    spectrum = np.fft.rfft(centred, n=2 * size)
    autocorrelation: NDArray[np.float64] = np.fft.irfft(spectrum * np.conj(spectrum))[:size]
    if autocorrelation[0] <= 0:
        return None
    normalized: NDArray[np.float64] = autocorrelation / autocorrelation[0]
    return normalized


def _line_spacing(profile: NDArray[np.float64]) -> float | None:
    """The usual distance between ruled lines from the long runs' profile across them (its
    first strong autocorrelation peak), or None when the profile has no clear period."""
    size = profile.size
    if size < 32:
        return None
    autocorrelation = _autocorrelation(profile)
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
class _Ruling:
    row_edges: Ints
    col_edges: Ints
    horizontal: Mask  # long horizontal runs, where the row lines are followed cell by cell
    vertical: Mask


def _ruled_grid(mask: Mask) -> _Ruling | None:
    """Row and column edges from ruled lines, and the mask of line pixels to erase."""
    height, width = mask.shape
    length = max(12, min(height, width) // 25)
    horizontal = _long_runs(mask, length)
    across = _line_positions(horizontal, min_fraction=0.8)
    strength_h = [_strength(horizontal, c) for c in across.centres]
    row_lines = _regular(across.centres, strength_h)
    if len(row_lines) < 2:
        # No ruling across: a sheet of symbols separated by gaps, no need to look down.
        return None
    vertical = _long_runs(mask.T, length).T
    down = _line_positions(vertical.T, min_fraction=0.8)
    strength_v = [_strength(vertical.T, c) for c in down.centres]
    col_lines = _regular(down.centres, strength_v)
    if len(col_lines) < 2:
        return None
    ink_rows = mask.sum(axis=1).astype(np.float64)
    ink_cols = mask.sum(axis=0).astype(np.float64)
    row_edges = _edges_from_lines(row_lines, height, ink_rows)
    col_edges = _edges_from_lines(col_lines, width, ink_cols)
    return _Ruling(row_edges, col_edges, horizontal, vertical)


# Ruled-line pixels are erased this far either side of where a line was followed in a cell:
# a ruled line's own width, not a window that would reach into the cells' symbols.
LINE_HALF_WIDTH = 4


def _along_lines(runs: Mask, followed: Ints, across: Ints) -> Mask:
    """The pixels of long runs within LINE_HALF_WIDTH of each line where it was followed,
    segment by segment (`followed` as `_follow_lines` gives it)."""
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


def _follow_lines(runs: Mask, edges: Ints, across: Ints) -> Ints:
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


# --------------------------------------------------------------------------------- ink gaps


def _periodic_edges(profile: NDArray[np.float64], *, min_cell: int) -> Ints | None:
    """Cell edges along one axis of a grid with no lines: the period of the ink profile (its
    autocorrelation peak), placed where the cuts cross the least ink."""
    size = profile.size
    if size < 2 * min_cell:
        return None
    autocorrelation = _autocorrelation(profile)
    if autocorrelation is None:
        return None
    lags = np.arange(min_cell, size // 2 + 1)
    if lags.size < 3:
        return None
    values = autocorrelation[lags]
    peaks = (values[1:-1] > values[:-2]) & (values[1:-1] >= values[2:]) & (values[1:-1] > 0.2)
    candidates = lags[1:-1][peaks]
    if candidates.size == 0:
        return None
    # The first strong peak is the period; later ones are its multiples.
    top = autocorrelation[candidates].max()
    period = float(candidates[np.flatnonzero(autocorrelation[candidates] >= 0.7 * top)[0]])
    positions = np.arange(size, dtype=np.float64)
    # Every trial period, phase and cut at once: cuts (trials, phases, k) where the profile is
    # read; phases past a trial's own period are masked out.
    trials = np.arange(period - 1.0, period + 1.0001, 0.05)
    phases = np.arange(0.0, trials[-1], 0.5)
    steps = np.arange(int(size // trials[0]) + 1)
    cuts = phases[None, :, None] + trials[:, None, None] * steps[None, None, :]
    inside = cuts < size
    read = np.interp(np.where(inside, cuts, 0.0), positions, profile)
    counts = inside.sum(axis=2)
    costs = (read * inside).sum(axis=2) / np.maximum(counts, 1)
    costs[phases[None, :] >= trials[:, None]] = np.inf
    pick_trial, pick_phase = np.unravel_index(int(np.argmin(costs)), costs.shape)
    cost = float(costs[pick_trial, pick_phase])
    period, phase = float(trials[pick_trial]), float(phases[pick_phase])
    if cost > 0.35 * float(profile.mean()):
        return None
    inked = np.flatnonzero(profile > 0.05 * profile.max())
    first = phase + math.floor((inked[0] - phase) / period) * period
    last = phase + math.ceil((inked[-1] + 1 - phase) / period) * period
    count = max(1, round((last - first) / period))
    edges: Ints = np.rint(first + period * np.arange(count + 1)).astype(np.int64)
    return np.clip(edges, 0, size)


def _single_span(profile: NDArray[np.float64]) -> Ints | None:
    inked = np.flatnonzero(profile > 0)
    if inked.size == 0:
        return None
    return np.array([0, profile.size], dtype=np.int64)


def _gap_grid(mask: Mask, min_cell: int) -> tuple[Ints, Ints] | None:
    rows_profile = mask.mean(axis=1).astype(np.float64)
    cols_profile = mask.mean(axis=0).astype(np.float64)
    row_edges = _periodic_edges(rows_profile, min_cell=min_cell)
    col_edges = _periodic_edges(cols_profile, min_cell=min_cell)
    if row_edges is None and col_edges is None:
        return None
    # One row (or one column) of symbols has no period along that axis.
    row_edges = row_edges if row_edges is not None else _single_span(rows_profile)
    col_edges = col_edges if col_edges is not None else _single_span(cols_profile)
    if row_edges is None or col_edges is None:
        return None
    return row_edges, col_edges


def _equal_edges(size: int, count: int) -> Ints:
    return np.linspace(0, size, count + 1).round().astype(np.int64)


# ---------------------------------------------------------------------------------- cutting


def _check_page(gray: Gray) -> None:
    height, width = gray.shape
    side = PIPELINE.limits.min_cell_pixels
    if height < side or width < side:
        raise InvalidInput(
            "image_too_small",
            f"a {width}x{height} image is smaller than one {side}x{side} cell",
        )


def cut_sheet(
    image: Gray,
    rows: int | None = None,
    cols: int | None = None,
    *,
    square: bool = False,
) -> Cutting:
    """Cut a photographed or scanned sheet into clean cells, finding the grid when not told.

    A grid given in rows/cols wins; ruled lines that agree with it place the cell edges, else
    the page is cut evenly. With no grid given it comes from ruled lines, else from the gaps
    between rows and columns of ink. Raises `InvalidInput` for pages with no ink
    (`blank_page`), no findable grid (`grid_not_found`) or cells too small to read.
    """
    gray = np.asarray(image, dtype=np.float32)
    _check_page(gray)
    if rows is not None and cols is not None:
        check_grid_fits(width=gray.shape[1], height=gray.shape[0], rows=rows, cols=cols)
    page = prepare_page(gray)
    mask = page.mask
    if not mask.any() and (rows is None or cols is None):
        raise InvalidInput("blank_page", "the page holds no ink, so there is no grid to find")
    tilt = estimate_tilt(mask) if mask.any() else Tilt(0.0, 0.0)
    skew = tilt.degrees
    ink, values = page.ink, page.values
    if max(abs(tilt.rows), abs(tilt.cols)) >= MIN_SKEW_DEGREES:
        ink, values = _level(ink, tilt), _level(values, tilt)
        mask = ink > page.threshold
    height, width = ink.shape
    min_cell = PIPELINE.limits.min_cell_pixels

    ruled = _ruled_grid(mask) if mask.any() else None
    source = "given"
    if ruled is not None:
        row_edges, col_edges = ruled.row_edges, ruled.col_edges
        source = "ruled"
    else:
        gaps = _gap_grid(mask, max(min_cell, 6)) if mask.any() else None
        if gaps is None:
            if rows is None or cols is None:
                raise InvalidInput(
                    "grid_not_found",
                    "no ruled lines or regular gaps between symbols were found: "
                    "set metadata grid=ROWSxCOLS",
                )
            row_edges, col_edges = _equal_edges(height, rows), _equal_edges(width, cols)
        else:
            row_edges, col_edges = gaps
            source = "gaps"
    # The given grid wins; found edges are kept only along an axis where they agree with it.
    if rows is not None and len(row_edges) - 1 != rows:
        row_edges, source = _equal_edges(height, rows), "given"
    if cols is not None and len(col_edges) - 1 != cols:
        col_edges, source = _equal_edges(width, cols), "given"
    found_rows, found_cols = len(row_edges) - 1, len(col_edges) - 1
    if rows is None or cols is None:
        _check_found_grid(row_edges, col_edges, width=width, height=height)
    # Cell (r, c) spans rows tops[r, c]:tops[r + 1, c] and columns lefts[c, r]:lefts[c + 1, r].
    tops = np.repeat(row_edges[:, None], found_cols, axis=1)
    lefts = np.repeat(col_edges[:, None], found_rows, axis=1)
    if ruled is not None and source == "ruled":
        tops = _follow_lines(ruled.horizontal, row_edges, col_edges)
        lefts = _follow_lines(ruled.vertical.T, col_edges, row_edges)
        line_pixels = _along_lines(ruled.horizontal, tops, col_edges)
        line_pixels |= _along_lines(ruled.vertical.T, lefts, row_edges).T
        ink = np.where(line_pixels, 0.0, ink).astype(np.float32)
        values = np.where(line_pixels, 0.0, values).astype(np.float32)
    return _cells(
        ink,
        values,
        tops,
        lefts,
        row_edges=row_edges,
        col_edges=col_edges,
        threshold=page.threshold,
        square=square,
        source=source,
        skew=skew,
        rows=found_rows,
        cols=found_cols,
    )


def _check_found_grid(row_edges: Ints, col_edges: Ints, *, width: int, height: int) -> None:
    limits = PIPELINE.limits
    cells = (len(row_edges) - 1) * (len(col_edges) - 1)
    if cells > limits.max_grid_cells:
        raise InvalidInput("bad_grid", f"found {cells} cells, over {limits.max_grid_cells}")
    smallest = min(int(np.diff(row_edges).min()), int(np.diff(col_edges).min()))
    if smallest < limits.min_cell_pixels:
        raise InvalidInput(
            "grid_too_dense",
            f"the grid's cells are {smallest} pixels across in a {width}x{height} image; "
            f"at least {limits.min_cell_pixels} are needed to read a symbol",
        )


def _cells(
    ink: Gray,
    values: Gray,
    tops: Ints,
    lefts: Ints,
    *,
    row_edges: Ints,
    col_edges: Ints,
    threshold: float,
    square: bool,
    source: str,
    skew: float,
    rows: int,
    cols: int,
) -> Cutting:
    # Per cell in reading order, as arrays: a sheet can hold thousands of cells.
    top = tops[:-1].reshape(-1)
    bottom = tops[1:].reshape(-1)
    left = lefts[:-1].T.reshape(-1)
    right = lefts[1:].T.reshape(-1)
    if square:
        side = np.minimum(bottom - top, right - left)
        top = top + (bottom - top - side) // 2
        left = left + (right - left - side) // 2
        bottom, right = top + side, left + side
    bottom = np.maximum(bottom, top + 1)
    right = np.maximum(right, left + 1)
    heights, widths = bottom - top, right - left
    shape = (rows * cols, int(heights.max()), int(widths.max()))
    uniform = heights.min() == heights.max() and widths.min() == widths.max()
    straight = bool((tops == tops[:, :1]).all() and (lefts == lefts[:, :1]).all())
    if uniform and straight and not square and _contiguous(row_edges) and _contiguous(col_edges):
        # Equal cells tile the page: one reshape instead of thousands of slices.
        h, w = shape[1], shape[2]
        first, start = int(row_edges[0]), int(col_edges[0])

        def stacked(page: Gray) -> Gray:
            block = page[first : first + rows * h, start : start + cols * w]
            return block.reshape(rows, h, cols, w).transpose(0, 2, 1, 3).reshape(-1, h, w)

        stack, value_stack = stacked(ink), stacked(values)
    else:
        stack = np.zeros(shape, dtype=np.float32)
        value_stack = np.zeros(shape, dtype=np.float32)
        for index in range(rows * cols):
            area = np.s_[top[index] : bottom[index], left[index] : right[index]]
            stack[index, : heights[index], : widths[index]] = ink[area]
            value_stack[index, : heights[index], : widths[index]] = values[area]
    cleaned, present = clean_ink(
        stack, heights, widths, threshold=threshold, ruled=source != "gaps", values=value_stack
    )
    empty = [divmod(int(index), cols) for index in np.flatnonzero(~present)]
    return Cutting(
        rows=rows,
        cols=cols,
        empty=empty,
        grid_source=source,
        skew_degrees=skew,
        row_edges=[int(v) for v in row_edges],
        col_edges=[int(v) for v in col_edges],
        _ink=cleaned,
        _present=present,
        _heights=heights,
        _widths=widths,
    )


def _contiguous(edges: Ints) -> bool:
    steps = np.diff(edges)
    return bool(steps.size and (steps == steps[0]).all())


# ------------------------------------------------------------------------------ no grid


def find_symbols(image: Gray) -> Reading:
    """Ink on a page with no grid, grouped into symbols read in order: lines top to bottom,
    symbols left to right. Pieces of one symbol stacked over each other (the dot of an i, the
    bars of =) are grouped; long ruled lines are ignored. Boxes are in source pixels."""
    gray = np.asarray(image, dtype=np.float32)
    _check_page(gray)
    page = prepare_page(gray)
    mask = page.mask
    height, width = mask.shape
    if not mask.any():
        return Reading([], np.zeros((0, 1, 1), dtype=np.float32))
    # Notebook rules and margins run a third of the page or more; symbols do not.
    lines = _long_runs(mask, max(60, width // 3)) | _long_runs(mask.T, max(60, height // 3)).T
    mask &= ~lines
    parts = label_components(mask)
    if parts.count == 0:
        return Reading([], np.zeros((0, 1, 1), dtype=np.float32))
    big = parts.area[parts.area >= 4]
    typical = float(np.median(big)) if big.size else 1.0
    keep = parts.area >= max(4.0, 0.04 * typical)
    boxes = [
        [int(parts.left[k]), int(parts.top[k]), int(parts.right[k]), int(parts.bottom[k]), [k]]
        for k in np.flatnonzero(keep)
    ]
    groups = _group_stacked(boxes)
    ordered = _reading_order(groups)
    symbols: list[Symbol] = []
    crops: list[Gray] = []
    for line, members in enumerate(ordered):
        for box in members:
            left, top, right, bottom, labels = box
            chosen = np.zeros(parts.count, dtype=np.bool_)
            chosen[labels] = True
            only = parts.paint(chosen, mask.shape)[top:bottom, left:right]
            crop = np.where(only, page.ink[top:bottom, left:right], 0.0).astype(np.float32)
            crops.append(crop)
            source_box = tuple(round(v / page.scale) for v in (left, top, right, bottom))
            symbols.append(
                Symbol(
                    line=line,
                    index=len(symbols),
                    box=(source_box[0], source_box[1], source_box[2], source_box[3]),
                    pixels=crop,
                )
            )
    tallest = max(c.shape[0] for c in crops)
    widest = max(c.shape[1] for c in crops)
    stack = np.zeros((len(crops), tallest, widest), dtype=np.float32)
    for index, crop in enumerate(crops):
        stack[index, : crop.shape[0], : crop.shape[1]] = crop
    return Reading(symbols, stack)


_Box = list[Any]  # [left, top, right, bottom, [component labels]]


def _group_stacked(boxes: list[_Box]) -> list[_Box]:
    """Merge pieces that overlap mostly in x and sit close in y: one symbol."""
    merged = True
    while merged:
        merged = False
        boxes.sort(key=lambda b: b[0])
        out: list[_Box] = []
        for box in boxes:
            for other in out:
                overlap = min(box[2], other[2]) - max(box[0], other[0])
                narrower = min(box[2] - box[0], other[2] - other[0])
                gap = max(box[1], other[1]) - min(box[3], other[3])
                taller = max(box[3] - box[1], other[3] - other[1])
                if overlap >= 0.5 * narrower and gap <= 0.8 * max(taller, narrower):
                    other[0] = min(other[0], box[0])
                    other[1] = min(other[1], box[1])
                    other[2] = max(other[2], box[2])
                    other[3] = max(other[3], box[3])
                    other[4] = other[4] + box[4]
                    merged = True
                    break
            else:
                out.append(box)
        boxes = out
    return boxes


def _reading_order(boxes: list[_Box]) -> list[list[_Box]]:
    """Lines top to bottom (a symbol joins a line when its middle lies within the line's
    height), then symbols left to right within each line."""
    lines: list[list[_Box]] = []
    spans: list[list[float]] = []
    for box in sorted(boxes, key=lambda b: (b[1] + b[3]) / 2):
        middle = (box[1] + box[3]) / 2
        for line, span in zip(lines, spans, strict=True):
            if span[0] <= middle <= span[1]:
                line.append(box)
                break
        else:
            lines.append([box])
            spans.append([float(box[1]), float(box[3])])
    order = sorted(range(len(lines)), key=lambda i: spans[i][0])
    return [sorted(lines[i], key=lambda b: b[0]) for i in order]
