"""A photo of a page on a table: the page's quadrilateral found and warped flat, the classic
document-scanner step, so a photo taken at an angle reads like a scan.

The page is the largest bright region (Otsu's threshold) that stands out against a darker
surround; its corners are its extreme points along the two diagonals. A page that fills the
photo (a scan, a close-up) has no surround and is left as it is.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from tessera.imaging.connected_components import label_components
from tessera.imaging.decode import Gray

# The quadrilateral is found on a reduction of the photo with this long side.
_FIND_SIDE = 600
# A page covers at least this share of the photo, and leaves at least this share of its
# border to the surround; the surround is this much darker than the page.
_MIN_PAGE_SHARE = 0.2
_MIN_SURROUND_BORDER = 0.5
_MIN_CONTRAST = 0.15
# The quadrilateral must cover this much of the bright region (else it is no quadrilateral).
_MIN_QUAD_FILL = 0.9

# Corners are moved this share of the way towards the page's centre.
_INSET = 0.015

Point = tuple[float, float]  # (x, y)


@dataclass(frozen=True)
class Flattened:
    """The page warped flat, and the map from its pixels back to the photo's."""

    image: Gray
    coefficients: tuple[float, ...]  # Pillow's PERSPECTIVE: output (x, y) -> photo (x, y)
    corners: tuple[Point, Point, Point, Point]  # in the photo: tl, tr, br, bl

    def to_photo(
        self, box: tuple[int, int, int, int], shape: tuple[int, int]
    ) -> tuple[int, int, int, int]:
        """A (top, left, bottom, right) box of the flat page as the box around its corners in
        the photo (height, width = `shape`)."""
        a, b, c, d, e, f, g, h = self.coefficients
        top, left, bottom, right = box
        xs, ys = [], []
        for x in (left, right):
            for y in (top, bottom):
                w = g * x + h * y + 1.0
                xs.append((a * x + b * y + c) / w)
                ys.append((d * x + e * y + f) / w)
        height, width = shape
        return (
            int(np.clip(np.floor(min(ys)), 0, height)),
            int(np.clip(np.floor(min(xs)), 0, width)),
            int(np.clip(np.ceil(max(ys)), 0, height)),
            int(np.clip(np.ceil(max(xs)), 0, width)),
        )


def _otsu(values: NDArray[np.float32]) -> float:
    counts, edges = np.histogram(values, bins=64, range=(0.0, 1.0))
    centres = (edges[:-1] + edges[1:]) / 2
    weight = np.cumsum(counts).astype(np.float64)
    total = weight[-1]
    mean = np.cumsum(counts * centres)
    between = (mean[-1] * weight / total - mean) ** 2 / np.maximum(weight * (total - weight), 1)
    return float(centres[int(np.argmax(between))])


def find_page(gray: Gray) -> tuple[Point, Point, Point, Point] | None:
    """The corners (tl, tr, br, bl, in `gray`'s pixels) of a page lying on a darker surface,
    or None when the photo shows no such page."""
    height, width = gray.shape
    step = max(1, round(max(height, width) / _FIND_SIDE))
    small = np.asarray(gray[::step, ::step], dtype=np.float32)
    threshold = _otsu(small)
    bright = small > threshold
    if not bright.any() or bright.all():
        return None
    components = label_components(bright, connectivity=4)
    page = int(np.argmax(components.area))
    share = components.area[page] / bright.size
    if share < _MIN_PAGE_SHARE:
        return None
    mask = components.paint(np.arange(components.count) == page, bright.shape)
    border = np.concatenate([mask[0], mask[-1], mask[:, 0], mask[:, -1]])
    if 1.0 - border.mean() < _MIN_SURROUND_BORDER:
        return None
    if float(small[mask].mean()) - float(small[~mask].mean()) < _MIN_CONTRAST:
        return None
    ys, xs = np.nonzero(mask)
    corners_small = [
        (xs[i], ys[i])
        for i in (
            np.argmin(xs + ys),  # top left
            np.argmax(xs - ys),  # top right
            np.argmax(xs + ys),  # bottom right
            np.argmin(xs - ys),  # bottom left
        )
    ]
    if _area(corners_small) < _MIN_QUAD_FILL * components.area[page]:
        return None
    # A little inside the extreme points, so the warped page has no rim of table.
    cx, cy = float(np.mean(xs)) * step, float(np.mean(ys)) * step
    tl, tr, br, bl = (
        (cx + (x * step - cx) * (1 - _INSET), cy + (y * step - cy) * (1 - _INSET))
        for x, y in corners_small
    )
    return tl, tr, br, bl


def _area(corners: list[tuple[int, int]]) -> float:
    """The shoelace area of a quadrilateral."""
    xs = np.array([float(c[0]) for c in corners])
    ys = np.array([float(c[1]) for c in corners])
    return 0.5 * abs(float(np.dot(xs, np.roll(ys, -1)) - np.dot(ys, np.roll(xs, -1))))


def _perspective(source: list[Point], target: list[Point]) -> tuple[float, ...]:
    """Pillow's 8 PERSPECTIVE coefficients taking each `target` point to its `source` point."""
    rows, values = [], []
    for (x, y), (u, v) in zip(target, source, strict=True):
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y])
        values += [u, v]
    solution = np.linalg.solve(np.array(rows, dtype=np.float64), np.array(values))
    return tuple(float(v) for v in solution)


def flatten_page(gray: Gray) -> Flattened | None:
    """The page of a photo warped flat (see the module), or None when there is nothing to do."""
    corners = find_page(gray)
    if corners is None:
        return None
    tl, tr, br, bl = corners

    def distance(p: Point, q: Point) -> float:
        return float(np.hypot(p[0] - q[0], p[1] - q[1]))

    width = round(max(distance(tl, tr), distance(bl, br)))
    height = round(max(distance(tl, bl), distance(tr, br)))
    if width < 16 or height < 16:
        return None
    target = [(0.0, 0.0), (width - 1.0, 0.0), (width - 1.0, height - 1.0), (0.0, height - 1.0)]
    coefficients = _perspective([tl, tr, br, bl], target)
    warped = Image.fromarray(np.asarray(gray, dtype=np.float32), mode="F").transform(
        (width, height), Image.Transform.PERSPECTIVE, coefficients, Image.Resampling.BILINEAR
    )
    return Flattened(
        image=np.asarray(warped, dtype=np.float32),
        coefficients=coefficients,
        corners=(tl, tr, br, bl),
    )
