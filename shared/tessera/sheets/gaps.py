"""A grid with no ruled lines: cell edges from the period of the ink profile, placed where the
cuts cross the least ink."""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from tessera.imaging.connected_components import Ints, Mask
from tessera.sheets.symbols import find_symbols


def profile_autocorrelation(profile: NDArray[np.float64]) -> NDArray[np.float64] | None:
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


def _periodic_edges(profile: NDArray[np.float64], *, min_cell: int) -> Ints | None:
    """Cell edges along one axis of a grid with no lines: the period of the ink profile (its
    autocorrelation peak), placed where the cuts cross the least ink."""
    size = profile.size
    if size < 2 * min_cell:
        return None
    autocorrelation = profile_autocorrelation(profile)
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


def gap_grid(mask: Mask, min_cell: int) -> tuple[Ints, Ints] | None:
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


# A gap grid of more cells than this is a printed or ruled-less grid sheet, never hand-placed
# rows (which hold tens to a few hundred symbols): it is not checked against the symbols.
GAP_GRID_CHECKED_CELLS = 1000


def grid_holds_symbols(row_edges: Ints, col_edges: Ints, mask: Mask) -> bool:
    """Whether the grid cuts no symbol and holds one per cell: each symbol found on the page
    falls inside a cell of its own (a line of hand-placed symbols is no one-column grid)."""
    if (len(row_edges) - 1) * (len(col_edges) - 1) > GAP_GRID_CHECKED_CELLS:
        return True
    found = find_symbols(mask).symbols
    if not found:
        return True
    misplaced = 0
    taken: set[tuple[int, int]] = set()
    for symbol in found:
        top, left, bottom, right = symbol.box
        row = int(np.searchsorted(row_edges, (top + bottom) / 2)) - 1
        col = int(np.searchsorted(col_edges, (left + right) / 2)) - 1
        if not (0 <= row < len(row_edges) - 1 and 0 <= col < len(col_edges) - 1):
            misplaced += 1
            continue
        # The share of the symbol's box inside its cell.
        inside_h = min(bottom, row_edges[row + 1]) - max(top, row_edges[row])
        inside_w = min(right, col_edges[col + 1]) - max(left, col_edges[col])
        share = max(0, inside_h) * max(0, inside_w) / max(1, (bottom - top) * (right - left))
        if share < 0.85 or (row, col) in taken:
            misplaced += 1
        taken.add((row, col))
    return misplaced <= 0.02 * len(found)
