"""Deskewing: how a page's rows and columns lean, and turning them upright (a rotation, or a
shear correction when keystone perspective leans them differently)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from tessera.imaging.connected_components import Mask
from tessera.imaging.decode import Gray

MAX_SKEW_DEGREES = 8.0


# Below this the page is left unrotated: resampling would blur more than it straightens.
MIN_SKEW_DEGREES = 0.15


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


def _level_map(tilt: Tilt, shape: tuple[int, int]) -> tuple[float, ...]:
    """The affine Pillow's transform takes: each levelled pixel (x', y') back to the page."""
    r, c = math.radians(tilt.rows), math.radians(tilt.cols)
    det = math.cos(r - c)
    height, width = shape
    cx, cy = (width - 1) / 2, (height - 1) / 2
    a, b = math.cos(r) / det, math.sin(c) / det
    d, e = -math.sin(r) / det, math.cos(c) / det
    return (a, b, cx - a * cx - b * cy, d, e, cy - d * cx - e * cy)


def level(ink: Gray, tilt: Tilt) -> Gray:
    """Turn rows and columns upright about the page centre: a rotation when both lean alike,
    a shear correction when they do not. New coordinates are the projections that were
    sharpest: x' = x cos(c) - y sin(c), y' = x sin(r) + y cos(r)."""
    height, width = ink.shape
    levelled = Image.fromarray(ink, mode="F").transform(
        (width, height),
        Image.Transform.AFFINE,
        _level_map(tilt, (height, width)),
        resample=Image.Resampling.BILINEAR,
    )
    return np.asarray(levelled, dtype=np.float32)


def unlevel_box(
    box: tuple[int, int, int, int], tilt: Tilt, shape: tuple[int, int]
) -> tuple[float, float, float, float]:
    """A (top, left, bottom, right) box of the levelled page as the box around its corners on
    the page before levelling."""
    a, b, c, d, e, f = _level_map(tilt, shape)
    top, left, bottom, right = box
    xs = [a * x + b * y + c for x in (left, right) for y in (top, bottom)]
    ys = [d * x + e * y + f for x in (left, right) for y in (top, bottom)]
    return min(ys), min(xs), max(ys), max(xs)
