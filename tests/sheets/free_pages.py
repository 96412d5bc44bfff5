"""Small free-form pages for tests: glyphs hand-placed in wobbly lines on plain paper, with the
truth of where each one went (its ink's box, line and position)."""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageDraw, ImageFont


@dataclass
class FreePage:
    image: NDArray[np.float32]  # [0, 1], dark ink on light paper
    boxes: list[tuple[int, int, int, int]] = field(default_factory=list)  # top, left, bottom, right
    lines: list[int] = field(default_factory=list)  # symbols per line
    labels: list[str] = field(default_factory=list)

    def png(self) -> bytes:
        buffer = io.BytesIO()
        pixels = np.clip(np.rint(self.image * 255), 0, 255).astype(np.uint8)
        Image.fromarray(pixels, mode="L").save(buffer, format="PNG")
        return buffer.getvalue()


def font_digits(count: int, *, seed: int = 0) -> tuple[NDArray[np.float32], NDArray[np.str_]]:
    """Digits drawn with Pillow's own font at a pen's stroke, each a little turned and sheared:
    thin strokes like handwriting's (scikit-learn's 8x8 digits, scaled up, are blobs)."""
    rng = np.random.default_rng(seed)
    font = ImageFont.load_default(size=64)
    glyphs, labels = [], []
    for index in range(count):
        label = str(index % 10)
        canvas = Image.new("L", (90, 90), 0)
        ImageDraw.Draw(canvas).text((20, 5), label, fill=255, font=font)
        shear = float(rng.uniform(-0.2, 0.2))
        canvas = canvas.transform(
            canvas.size, Image.Transform.AFFINE, (1, shear, -shear * 45, 0, 1, 0)
        ).rotate(float(rng.uniform(-8, 8)), resample=Image.Resampling.BILINEAR)
        glyphs.append(np.asarray(canvas, dtype=np.float32) / 255.0)
        labels.append(label)
    return np.stack(glyphs), np.array(labels)


def glyph_at(ink: NDArray[np.float32], height: int) -> NDArray[np.float32]:
    """A glyph (ink in [0, 1]) cropped to its ink and scaled to `height` pixels tall."""
    ys, xs = np.nonzero(ink > 0.05)
    crop = ink[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    width = max(2, round(crop.shape[1] * height / crop.shape[0]))
    scaled = Image.fromarray(crop.astype(np.float32), mode="F").resize(
        (width, height), Image.Resampling.BILINEAR
    )
    return np.clip(np.asarray(scaled, dtype=np.float32), 0, 1)


def free_page(
    ink: NDArray[np.float32],
    labels: NDArray[np.str_],
    lines: list[int],
    *,
    seed: int = 0,
    height: int = 48,
    size: tuple[int, int] = (700, 520),
    notebook: bool = False,
    printed_text: bool = False,
    specks: int = 0,
) -> FreePage:
    """Glyphs taken in order into `lines` (symbols per line), each line wobbling."""
    rng = np.random.default_rng(seed)
    width, page_height = size
    paper = np.ones((page_height, width), dtype=np.float32)
    page = FreePage(image=paper, lines=list(lines))
    spacing = int(height * 1.8)
    glyph = 0
    for line, count in enumerate(lines):
        baseline = 40 + height + line * spacing
        x = 30 + int(rng.integers(0, 15))
        phase = rng.uniform(0, 2 * math.pi)
        for _ in range(count):
            shape = glyph_at(ink[glyph], int(height * rng.uniform(0.85, 1.1)))
            h, w = shape.shape
            top = baseline - h + round(4 * math.sin(phase + x / 90) + rng.normal(0, 1.5))
            region = paper[top : top + h, x : x + w]
            np.minimum(region, 1.0 - shape, out=region)
            ys, xs = np.nonzero(shape > 0.3)
            page.boxes.append(
                (
                    top + int(ys.min()),
                    x + int(xs.min()),
                    top + int(ys.max()) + 1,
                    x + int(xs.max()) + 1,
                )
            )
            page.labels.append(str(labels[glyph]))
            glyph += 1
            x += w + int(height * rng.uniform(0.35, 0.9))
    if notebook:
        for line in range(len(lines) + 1):
            y = 40 + height + line * spacing + 2
            paper[y : y + 2, 5 : width - 5] = np.minimum(paper[y : y + 2, 5 : width - 5], 0.55)
    if printed_text:
        canvas = Image.fromarray(np.rint(paper * 255).astype(np.uint8), mode="L")
        draw = ImageDraw.Draw(canvas)
        font = ImageFont.load_default(size=11)
        draw.text(
            (30, 12), "Name: ____________   Date: 2026-12-02   Exercise 4b", fill=90, font=font
        )
        draw.text(
            (30, page_height - 24), "page 1 of 1 - tessera practice sheet", fill=90, font=font
        )
        paper[:] = np.asarray(canvas, dtype=np.float32) / 255.0
    for _ in range(specks):
        y, x = int(rng.integers(0, page_height - 2)), int(rng.integers(0, width - 2))
        paper[y : y + 2, x : x + 2] = 0.2
    return page
