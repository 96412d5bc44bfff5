"""What was cut, drawn: the page as the pipeline read it (levelled), with every grid cell or
found symbol boxed, empty cells crossed out, and each tile's caption (its training label, or a
prediction and its confidence). The image a person looks at when a sheet goes wrong."""

from __future__ import annotations

import io
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont, features

from tessera.sheets.cutting import SheetCut

# Wide enough to read a 10x10 sheet's captions, small enough to open on a phone.
MAX_WIDTH = 1200
_INKED = (0, 150, 70)
_EMPTY = (200, 60, 60)
_CAPTION = (20, 70, 200)


@lru_cache(maxsize=8)
def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    if features.check("freetype2"):
        return ImageFont.load_default(size=size)
    return ImageFont.load_default()


def render_overlay(
    cutting: SheetCut, captions: Sequence[str | None], *, max_width: int = MAX_WIDTH
) -> bytes:
    """A PNG of the levelled page with each tile's box and caption. `captions` go with
    `cutting.tiles` in order (None: no caption); boxes of empty cells are crossed out."""
    page = np.asarray(cutting.page, dtype=np.float32)
    height, width = page.shape
    factor = min(1.0, max_width / max(1, width))
    paper = np.clip(np.rint((1.0 - page) * 255.0), 0, 255).astype(np.uint8)
    image = Image.fromarray(paper, mode="L")
    if factor < 1.0:
        size = (max(1, round(width * factor)), max(1, round(height * factor)))
        image = image.resize(size, Image.Resampling.BOX)
    canvas = image.convert("RGB")
    draw = ImageDraw.Draw(canvas)
    boxes = cutting.working_boxes
    tiles = cutting.tiles
    empty = set(cutting.empty)
    if len(captions) != len(tiles):
        raise ValueError(f"{len(captions)} captions for {len(tiles)} tiles")
    sides = [min(b[2] - b[0], b[3] - b[1]) * factor for b in boxes] or [12.0]
    font = _font(int(np.clip(np.median(sides) / 3, 9, 22)))
    line_width = max(1, round(2 * factor))
    for tile, box, caption in zip(tiles, boxes, captions, strict=True):
        top, left, bottom, right = (round(v * factor) for v in box)
        right, bottom = max(right - 1, left), max(bottom - 1, top)
        is_empty = (tile.row, tile.col) in empty
        colour = _EMPTY if is_empty else _INKED
        draw.rectangle((left, top, right, bottom), outline=colour, width=line_width)
        if is_empty:
            draw.line((left, top, right, bottom), fill=colour, width=1)
            draw.line((left, bottom, right, top), fill=colour, width=1)
        if caption:
            draw.text((left + 2, top + 1), caption, fill=_CAPTION, font=font)
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def overlay_key(key: str) -> str:
    """Where a manifest's or prediction's overlay lives: beside it."""
    return key.removesuffix(".json") + ".overlay.png"
