"""Connected components of ink, with numpy only (serving imports this: no SciPy, no OpenCV).

Labelling works on horizontal runs rather than pixels: runs of consecutive rows that touch are
joined with a vectorized union-find, so a page of thousands of glyphs is labelled in a few array
passes instead of a Python loop over pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

Mask = NDArray[np.bool_]
Ints = NDArray[np.int64]
# Up to this many runs (one tile's worth), a Python union-find beats the array passes.
SMALL_RUNS = 96


@dataclass(frozen=True)
class Components:
    """Components of a mask: component k has `area[k]` pixels inside its box
    rows [top[k], bottom[k]) and columns [left[k], right[k])."""

    count: int
    area: Ints
    top: Ints
    left: Ints
    bottom: Ints
    right: Ints
    # The runs that make up each component, for painting a selection back into a mask.
    run_row: Ints
    run_start: Ints
    run_end: Ints
    run_label: Ints

    def paint(self, keep: NDArray[np.bool_], shape: tuple[int, int]) -> Mask:
        """A mask holding only the components where `keep` is true."""
        out = np.zeros(shape, dtype=np.bool_)
        chosen = keep[self.run_label]
        rows, starts, ends = self.run_row[chosen], self.run_start[chosen], self.run_end[chosen]
        width = shape[1]
        # Mark run starts with +1 and ends with -1 on a flat row-major buffer, then cumsum.
        marks = np.zeros(shape[0] * (width + 1) + 1, dtype=np.int32)
        np.add.at(marks, rows * (width + 1) + starts, 1)
        np.add.at(marks, rows * (width + 1) + ends, -1)
        filled = np.cumsum(marks[:-1]).reshape(shape[0], width + 1)[:, :width] > 0
        out |= filled
        return out


def runs(mask: Mask) -> tuple[Ints, Ints, Ints]:
    """The horizontal runs of a mask: (row, start, end) each, in row-major order."""
    height, width = mask.shape
    padded = np.zeros((height, width + 2), dtype=np.int8)
    padded[:, 1:-1] = mask
    change = np.diff(padded, axis=1)
    start_rows, starts = np.nonzero(change == 1)
    _, ends = np.nonzero(change == -1)
    # np.nonzero walks row-major, so starts and ends pair up in order.
    return start_rows.astype(np.int64), starts.astype(np.int64), ends.astype(np.int64)


def label_components(mask: Mask, *, connectivity: int = 8) -> Components:
    """Label the 4- or 8-connected components of a boolean mask."""
    height, width = mask.shape
    rows, starts, ends = runs(mask)
    n = rows.size
    if n == 0:
        empty = np.zeros(0, dtype=np.int64)
        return Components(0, empty, empty, empty, empty, empty, empty, empty, empty, empty)
    reach = 1 if connectivity == 8 else 0
    if n <= SMALL_RUNS:
        return _small_components(rows, starts, ends, reach)
    # Runs are sorted by (row, start). A run in row r touches runs of row r-1 whose end is past
    # its start and whose start is before its end (widened by one for diagonal contact).
    key_scale = width + 4
    start_keys = rows * key_scale + starts
    end_keys = rows * key_scale + ends
    above_rows = rows - 1
    lo = np.searchsorted(end_keys, above_rows * key_scale + starts - reach, side="right")
    hi = np.searchsorted(start_keys, above_rows * key_scale + ends + reach, side="left")
    # Clip the candidate range to runs that really are in the row above.
    row_first = np.searchsorted(rows, above_rows, side="left")
    row_last = np.searchsorted(rows, above_rows, side="right")
    lo = np.maximum(lo, row_first)
    hi = np.minimum(hi, row_last)
    counts = np.maximum(hi - lo, 0)
    b = np.repeat(np.arange(n, dtype=np.int64), counts)
    firsts = np.repeat(np.cumsum(counts) - counts, counts)
    offsets = np.arange(counts.sum(), dtype=np.int64) - firsts
    a = np.repeat(lo, counts) + offsets

    parent = np.arange(n, dtype=np.int64)
    if a.size:
        while True:
            low = np.minimum(parent[a], parent[b])
            before = parent.copy()
            np.minimum.at(parent, parent[a], low)
            np.minimum.at(parent, parent[b], low)
            np.minimum.at(parent, a, low)
            np.minimum.at(parent, b, low)
            # Pointer jumping until every run points at a root.
            while True:
                jumped = parent[parent]
                if np.array_equal(jumped, parent):
                    break
                parent = jumped
            if np.array_equal(parent, before):
                break
    _, labels = np.unique(parent, return_inverse=True)
    return _summarize(labels.reshape(-1), rows, starts, ends, height, width)


def _small_components(run_rows: Ints, run_starts: Ints, run_ends: Ints, reach: int) -> Components:
    """`label_components` by a plain union-find, numbered like the vectorized path (components
    in the order of their first run): for one tile's few dozen runs, the array passes' fixed
    cost is most of the work."""
    rows, starts, ends = run_rows.tolist(), run_starts.tolist(), run_ends.tolist()
    n = len(rows)
    parent = list(range(n))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    above_first = above_last = 0  # runs of the row above: [above_first, above_last)
    row_first = 0
    for i in range(n):
        if i and rows[i] != rows[i - 1]:
            if rows[i] == rows[i - 1] + 1:
                above_first, above_last = row_first, i
            else:
                above_first = above_last = i
            row_first = i
        low, high = starts[i] - reach, ends[i] + reach
        for j in range(above_first, above_last):
            if ends[j] > low and starts[j] < high:
                a, b = root(i), root(j)
                if a != b:
                    # The smaller index is the root, so a root is its component's first run.
                    parent[max(a, b)] = min(a, b)
    labels = [0] * n
    area: list[int] = []
    top: list[int] = []
    left: list[int] = []
    bottom: list[int] = []
    right: list[int] = []
    for i in range(n):
        r = root(i)
        if r == i:
            # Runs come row by row, so a component's first run is its top row.
            labels[i] = len(area)
            area.append(ends[i] - starts[i])
            top.append(rows[i])
            left.append(starts[i])
            bottom.append(rows[i] + 1)
            right.append(ends[i])
        else:
            k = labels[i] = labels[r]
            area[k] += ends[i] - starts[i]
            left[k] = min(left[k], starts[i])
            bottom[k] = rows[i] + 1
            right[k] = max(right[k], ends[i])
    return Components(
        len(area),
        np.asarray(area, dtype=np.int64),
        np.asarray(top, dtype=np.int64),
        np.asarray(left, dtype=np.int64),
        np.asarray(bottom, dtype=np.int64),
        np.asarray(right, dtype=np.int64),
        run_rows,
        run_starts,
        run_ends,
        np.asarray(labels, dtype=np.int64),
    )


def _summarize(
    labels: Ints, rows: Ints, starts: Ints, ends: Ints, height: int, width: int
) -> Components:
    count = int(labels.max()) + 1
    lengths = ends - starts
    area = np.bincount(labels, weights=lengths, minlength=count).astype(np.int64)
    top = np.full(count, height, dtype=np.int64)
    left = np.full(count, width, dtype=np.int64)
    bottom = np.zeros(count, dtype=np.int64)
    right = np.zeros(count, dtype=np.int64)
    np.minimum.at(top, labels, rows)
    np.minimum.at(left, labels, starts)
    np.maximum.at(bottom, labels, rows + 1)
    np.maximum.at(right, labels, ends)
    return Components(count, area, top, left, bottom, right, rows, starts, ends, labels)
