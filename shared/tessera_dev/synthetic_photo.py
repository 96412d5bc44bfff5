"""A drawn page photographed: turned, in perspective on a darker table, shadowed, unevenly lit,
blurred and noisy, through one homography that also carries every truth box into the photo's
pixels, so truth and image can never disagree about where a symbol went."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageFilter

from tessera_dev.synthetic import _bytes, _perspective_coefficients

Point = tuple[float, float]
# Room left around a page photographed on a table, as a fraction of its shorter side.
TABLE_MARGIN = 0.06


@dataclass(frozen=True, kw_only=True)
class Shot:
    """How the page is photographed (PageStyle's photo half)."""

    rotation: float = 0.0
    perspective: float = 0.0
    shadow: float = 0.0
    uneven_light: float = 0.0
    blur: float = 0.0
    noise: float = 0.0


@dataclass(frozen=True)
class Photo:
    image: NDArray[np.float32]
    forward: tuple[float, ...]  # Pillow's 8 coefficients, page point -> photo point

    def point(self, x: float, y: float) -> Point:
        a, b, c, d, e, f, g, h = self.forward
        scale = g * x + h * y + 1.0
        return (a * x + b * y + c) / scale, (d * x + e * y + f) / scale

    def box(self, box: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
        """A page box (top, left, bottom, right) as the photo's box around its four corners."""
        top, left, bottom, right = box
        corners = [self.point(x, y) for x, y in ((left, top), (right, top), (right, bottom))]
        corners.append(self.point(left, bottom))
        height, width = self.image.shape
        xs, ys = [p[0] for p in corners], [p[1] for p in corners]
        return (
            max(0, math.floor(min(ys))),
            max(0, math.floor(min(xs))),
            min(height, math.ceil(max(ys))),
            min(width, math.ceil(max(xs))),
        )


def photograph(page: NDArray[np.float32], shot: Shot, rng: np.random.Generator) -> Photo:
    """The page (grayscale [0, 1]) as a photo of it. A turned page keeps all of itself (the
    photo grows to hold it, white around it as a scanner's glass); a page in perspective lies
    on a darker, slightly textured table."""
    height, width = page.shape
    corners: list[Point] = [(0.0, 0.0), (width, 0.0), (width, height), (0.0, height)]
    moved = _turned(corners, shot.rotation, width, height)
    on_table = shot.perspective > 0
    if on_table:
        shift = shot.perspective * min(width, height)
        moved = [(x + rng.uniform(-shift, shift), y + rng.uniform(-shift, shift)) for x, y in moved]
    margin = round(TABLE_MARGIN * min(width, height)) if on_table else 0
    x0, y0 = min(p[0] for p in moved), min(p[1] for p in moved)
    moved = [(x - x0 + margin, y - y0 + margin) for x, y in moved]
    size = (
        math.ceil(max(p[0] for p in moved)) + margin,
        math.ceil(max(p[1] for p in moved)) + margin,
    )
    inverse = _perspective_coefficients(moved, corners)
    warped = _warp(page, inverse, size, fill=1.0)
    if on_table:
        cover = _warp(np.ones_like(page), inverse, size, fill=0.0)
        warped = cover * warped + (1.0 - cover) * _table(size, rng)
    image = _lit(warped, shot, rng)
    return Photo(image, _perspective_coefficients(corners, moved))


def _turned(corners: list[Point], degrees: float, width: float, height: float) -> list[Point]:
    """Corners turned counter-clockwise (as Pillow's rotate turns) about the page's centre."""
    angle = math.radians(degrees)
    cos, sin = math.cos(angle), math.sin(angle)
    cx, cy = width / 2, height / 2
    return [
        (cx + (x - cx) * cos + (y - cy) * sin, cy - (x - cx) * sin + (y - cy) * cos)
        for x, y in corners
    ]


def _warp(
    image: NDArray[np.float32], inverse: tuple[float, ...], size: tuple[int, int], *, fill: float
) -> NDArray[np.float32]:
    warped = Image.fromarray(image.astype(np.float32), mode="F").transform(
        size,
        Image.Transform.PERSPECTIVE,
        inverse,
        resample=Image.Resampling.BILINEAR,
        fillcolor=fill,
    )
    return np.asarray(warped, dtype=np.float32)


def _table(size: tuple[int, int], rng: np.random.Generator) -> NDArray[np.float32]:
    """A darker surface with a slow grain, as wood or a desk mat under a page."""
    width, height = size
    grain = Image.fromarray(rng.normal(0, 1, (6, 8)).astype(np.float32), mode="F")
    slow = np.asarray(grain.resize(size, Image.Resampling.BICUBIC), dtype=np.float32)
    shade = float(rng.uniform(0.2, 0.45))
    fine = rng.normal(0, 0.01, (height, width)).astype(np.float32)
    surface: NDArray[np.float32] = np.clip(shade + 0.04 * slow + fine, 0.0, 1.0).astype(np.float32)
    return surface


def _lit(image: NDArray[np.float32], shot: Shot, rng: np.random.Generator) -> NDArray[np.float32]:
    """Light as a phone meets it: uneven across the page, a shadow over one corner, the lens's
    blur and the sensor's noise."""
    height, width = image.shape
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    diagonal = float(np.hypot(width, height))
    if shot.uneven_light > 0:
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        distance = np.hypot(xs - cx, ys - cy) / diagonal
        image = image * (1.0 - shot.uneven_light * np.clip(distance * 1.4, 0, 1))
    if shot.shadow > 0:
        corner_x = float(width * rng.integers(0, 2))
        corner_y = float(height * rng.integers(0, 2))
        reach = float(rng.uniform(0.35, 0.6)) * diagonal
        near = np.clip(1.0 - np.hypot(xs - corner_x, ys - corner_y) / reach, 0, 1)
        # smoothstep: a soft edge, no visible border for a detector to take for a stroke
        image = image * (1.0 - shot.shadow * near * near * (3 - 2 * near))
    if shot.blur > 0:
        blurred = Image.fromarray(_bytes(image), mode="L").filter(
            ImageFilter.GaussianBlur(shot.blur)
        )
        image = np.asarray(blurred, dtype=np.float32) / 255.0
    if shot.noise > 0:
        image = image + rng.normal(0, shot.noise, image.shape).astype(np.float32)
    return np.clip(image, 0.0, 1.0).astype(np.float32)
