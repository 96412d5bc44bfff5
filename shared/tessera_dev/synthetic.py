"""Sheets with known truth, made the way people make real ones: glyphs written into a
hand-ruled grid on paper, then photographed (rotation, perspective, blur, noise, uneven light),
with some cells left empty. The evaluation, the benchmark and the tests all draw from here.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageDraw, ImageFilter


@dataclass(frozen=True, kw_only=True)
class SheetStyle:
    cell: int = 48
    margin: int = 40
    ruled: bool = True
    max_rotation: float = 5.0
    perspective: float = 0.02  # largest corner shift, as a fraction of the page side
    blur: float = 0.8
    noise: float = 0.03
    uneven_light: float = 0.35  # darkest corner is this much dimmer than the brightest
    empty_fraction: float = 0.08
    glyph_fill: tuple[float, float] = (0.55, 0.8)  # glyph height as a fraction of the cell


@dataclass(frozen=True)
class SyntheticSheet:
    image: NDArray[np.float32]  # grayscale [0, 1], dark ink on light paper
    rows: int
    cols: int
    labels: list[str | None]  # per cell in reading order; None = left empty
    glyphs: list[int | None]  # index of the glyph drawn in each cell
    rotation: float

    def png(self) -> bytes:
        return _png(self.image)

    def jpeg(self, quality: int = 90) -> bytes:
        return _jpeg(self.image, quality)


def _bytes(image: NDArray[np.float32]) -> NDArray[np.uint8]:
    scaled: NDArray[np.uint8] = np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)
    return scaled


def _jpeg(image: NDArray[np.float32], quality: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(_bytes(image), mode="L").save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def _png(image: NDArray[np.float32]) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(_bytes(image), mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


def _hand_line(
    draw: ImageDraw.ImageDraw,
    start: tuple[float, float],
    end: tuple[float, float],
    rng: np.random.Generator,
    *,
    shade: int,
    width: int,
) -> None:
    """A ruled line drawn by hand: a slight bow and wobble, uneven in places."""
    steps = 12
    normal = np.array([-(end[1] - start[1]), end[0] - start[0]], dtype=np.float64)
    normal /= max(1e-9, float(np.hypot(*normal)))
    bow = rng.normal(0, 1.2)
    points = []
    for k in range(steps + 1):
        t = k / steps
        offset = bow * math.sin(math.pi * t) + rng.normal(0, 0.35)
        points.append(
            (
                start[0] + (end[0] - start[0]) * t + normal[0] * offset,
                start[1] + (end[1] - start[1]) * t + normal[1] * offset,
            )
        )
    draw.line(points, fill=shade, width=width, joint="curve")


def make_sheet(
    ink: NDArray[np.float32],
    labels: NDArray[np.str_],
    *,
    rows: int,
    cols: int,
    seed: int,
    style: SheetStyle | None = None,
) -> SyntheticSheet:
    """Draw glyphs (n, h, w ink in [0, 1], taken in order) into a rows x cols sheet."""
    style = style or SheetStyle()
    rng = np.random.default_rng(seed)
    cell, margin = style.cell, style.margin
    height, width = rows * cell + 2 * margin, cols * cell + 2 * margin
    paper = Image.new("L", (width, height), 255)
    draw = ImageDraw.Draw(paper)
    if style.ruled:
        shade = int(rng.integers(40, 120))
        for r in range(rows + 1):
            y = margin + r * cell + rng.normal(0, 0.8)
            _hand_line(
                draw,
                (margin - 4 + rng.normal(0, 2), y),
                (width - margin + 4 + rng.normal(0, 2), y + rng.normal(0, 1.5)),
                rng,
                shade=shade,
                width=int(rng.integers(1, 4)),
            )
        for c in range(cols + 1):
            x = margin + c * cell + rng.normal(0, 0.8)
            _hand_line(
                draw,
                (x, margin - 4 + rng.normal(0, 2)),
                (x + rng.normal(0, 1.5), height - margin + 4 + rng.normal(0, 2)),
                rng,
                shade=shade,
                width=int(rng.integers(1, 4)),
            )
    page = np.asarray(paper, dtype=np.float32) / 255.0
    cell_labels: list[str | None] = []
    cell_glyphs: list[int | None] = []
    next_glyph = 0
    for r in range(rows):
        for c in range(cols):
            if rng.random() < style.empty_fraction or next_glyph >= len(ink):
                cell_labels.append(None)
                cell_glyphs.append(None)
                continue
            glyph = ink[next_glyph]
            size = int(cell * rng.uniform(*style.glyph_fill))
            scaled = np.asarray(
                Image.fromarray(glyph.astype(np.float32), mode="F").resize(
                    (size, size), Image.Resampling.BILINEAR
                ),
                dtype=np.float32,
            )
            slack = cell - size - 6
            top = margin + r * cell + 3 + int(rng.integers(0, max(1, slack)))
            left = margin + c * cell + 3 + int(rng.integers(0, max(1, slack)))
            strength = rng.uniform(0.7, 0.95)
            region = page[top : top + size, left : left + size]
            np.minimum(region, 1.0 - strength * np.clip(scaled, 0, 1), out=region)
            cell_labels.append(str(labels[next_glyph]))
            cell_glyphs.append(next_glyph)
            next_glyph += 1

    photo = Image.fromarray(_bytes(page), mode="L")
    rotation = float(rng.uniform(-style.max_rotation, style.max_rotation))
    photo = photo.rotate(rotation, resample=Image.Resampling.BILINEAR, expand=False, fillcolor=255)
    if style.perspective > 0:
        shift = style.perspective * min(width, height)
        corners = [
            (0.0, 0.0),
            (float(width), 0.0),
            (float(width), float(height)),
            (0.0, float(height)),
        ]
        moved = [
            (x + rng.uniform(-shift, shift), y + rng.uniform(-shift, shift)) for x, y in corners
        ]
        coefficients = _perspective_coefficients(corners, moved)
        photo = photo.transform(
            photo.size,
            Image.Transform.PERSPECTIVE,
            coefficients,
            resample=Image.Resampling.BILINEAR,
            fillcolor=255,
        )
    if style.blur > 0:
        photo = photo.filter(ImageFilter.GaussianBlur(style.blur))
    image = np.asarray(photo, dtype=np.float32) / 255.0
    if style.uneven_light > 0:
        ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        distance = np.hypot(xs - cx, ys - cy) / float(np.hypot(width, height))
        light = 1.0 - style.uneven_light * np.clip(distance * 1.4, 0, 1)
        image = image * light * rng.uniform(0.85, 1.0)
    if style.noise > 0:
        image = image + rng.normal(0, style.noise, image.shape).astype(np.float32)
    image = np.clip(image, 0.0, 1.0).astype(np.float32)
    return SyntheticSheet(
        image=image,
        rows=rows,
        cols=cols,
        labels=cell_labels,
        glyphs=cell_glyphs,
        rotation=rotation,
    )


def _perspective_coefficients(
    target: list[tuple[float, float]], source: list[tuple[float, float]]
) -> tuple[float, ...]:
    """Pillow's 8 perspective coefficients mapping output points `target` to input `source`."""
    matrix = []
    values = []
    for (x, y), (u, v) in zip(target, source, strict=True):
        matrix.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        matrix.append([0, 0, 0, x, y, 1, -v * x, -v * y])
        values.extend([u, v])
    solution = np.linalg.solve(np.asarray(matrix, dtype=np.float64), np.asarray(values))
    return tuple(float(v) for v in solution)
