"""Free-form pages with known truth, made the way people write them: symbols in wobbly
hand-placed lines (or scattered) on white paper, beside what real pages also carry (a printed
header, notebook ruling, specks, broken strokes), then photographed (rotation, perspective on a
darker table, shadow, uneven light, blur, noise). Every symbol's box is given in the final
image's pixels, so a free-form detector is scored the way `synthetic.make_sheet` scores the
grid cutter.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from tessera.imaging.connected_components import label_components
from tessera_dev.synthetic import _hand_line, _jpeg, _png
from tessera_dev.synthetic_photo import Photo, Shot, photograph

Box = tuple[int, int, int, int]  # top, left, bottom, right; bottom and right exclusive
Ink = NDArray[np.float32]
# Scaled ink at or above this level is part of a glyph: its box is the box of these pixels.
BOX_INK = 0.2
# Fainter ink is still drawn (a stroke's soft edge) but belongs to no box.
FRINGE = 0.02
HEADER = (
    "Name: ____________   Date: 2024-05-17   Sheet {sheet} of 12",
    "Write one symbol at a time.",
)


@dataclass(frozen=True, kw_only=True)
class PageStyle:
    width: int = 1200
    height: int = 1700
    margin: int = 80
    lines: int = 12  # at most: as many as fit
    per_line: tuple[int, int] = (5, 10)  # symbols per line, drawn per line
    glyph_height: tuple[float, float] = (40.0, 90.0)  # the page's glyph height is drawn from this
    size_jitter: float = 0.06  # per glyph, relative; heights stay within +-2.5 of it
    stroke_change: float = 0.15  # fraction of glyphs thickened or thinned
    wobble: float = 4.0  # amplitude of the baseline's sine drift, in pixels
    gap: tuple[float, float] = (0.3, 1.2)  # between symbols, in glyph widths
    line_pitch: tuple[float, float] = (1.4, 1.9)  # baseline to baseline, in tallest glyphs
    strength: tuple[float, float] = (0.75, 0.95)  # how dark the pen is
    printed_text: bool = False
    notebook_lines: bool = False
    shadow: float = 0.0  # darkness of a smooth shadow over one corner
    uneven_light: float = 0.0
    rotation: float = 0.0  # degrees, counter-clockwise, the whole page
    perspective: float = 0.0  # largest corner shift as a fraction of the page; > 0: on a table
    broken_strokes: float = 0.0  # fraction of glyphs cut in two by a thin gap
    scattered: bool = False  # symbols at random places, not in lines (truth lines are -1)
    blur: float = 0.5
    noise: float = 0.01
    specks: int = 0  # dots of 1-3 px that are not symbols


@dataclass(frozen=True)
class TruthSymbol:
    label: str
    glyph: int  # index into the ink the page was drawn from
    box: Box  # in the final image's pixels
    line: int  # reading order: lines top to bottom; -1 on scattered pages
    position: int  # left to right within its line; -1 on scattered pages
    broken: bool = False  # drawn in two pieces


@dataclass(frozen=True)
class SyntheticPage:
    image: NDArray[np.float32]  # grayscale [0, 1], dark ink on light paper
    symbols: list[TruthSymbol]  # in reading order
    style: PageStyle
    rotation: float

    @property
    def lines(self) -> int:
        return len({s.line for s in self.symbols if s.line >= 0})

    def png(self) -> bytes:
        return _png(self.image)

    def jpeg(self, quality: int = 90) -> bytes:
        return _jpeg(self.image, quality)


@dataclass(frozen=True)
class _Placed:
    ink: Ink  # as drawn: scaled, stroke changed, maybe broken, cropped to its box
    top: int
    left: int
    glyph: int
    line: int
    position: int
    broken: bool


def make_page(
    ink: Ink, labels: NDArray[np.str_], *, seed: int, style: PageStyle | None = None
) -> SyntheticPage:
    """Write glyphs (n, h, w ink in [0, 1], taken in order) on a page and photograph it."""
    style = style or PageStyle()
    rng = np.random.default_rng(seed)
    height = float(rng.uniform(*style.glyph_height))
    paper = Image.new("L", (style.width, style.height), 255)
    top = style.margin
    if style.printed_text:
        top = _print_text(paper, height, rng, top=style.margin, sheet=seed % 12 + 1)
    pitch = height * (1 + 2.5 * style.size_jitter) * float(rng.uniform(*style.line_pitch))
    pitch += 2 * style.wobble + 4
    if style.scattered:
        placed = _scatter(ink, height, rng, style, top=top)
    else:
        placed = _write_lines(ink, height, pitch, rng, style, top=top)
    if style.notebook_lines:
        _rule_notebook(paper, placed, pitch, rng)
    page = np.asarray(paper, dtype=np.float32) / 255.0
    strength = float(rng.uniform(*style.strength))
    for item in placed:
        h, w = item.ink.shape
        region = page[item.top : item.top + h, item.left : item.left + w]
        dark = strength * float(rng.uniform(0.93, 1.0))
        np.minimum(region, 1.0 - dark * item.ink, out=region)
    _add_specks(page, placed, style.specks, rng)
    photo = photograph(page, _shot(style), rng)
    symbols = [_truth(item, labels, photo) for item in placed]
    return SyntheticPage(photo.image, symbols, style, style.rotation)


# A phone photo of one symbol: a small page on a table, in perspective and shadowed.
SINGLE = PageStyle(
    width=600, height=800, perspective=0.07, shadow=0.45, uneven_light=0.25, blur=1.0, noise=0.025
)


def make_single(
    ink: Ink, label: str, seed: int, *, style: PageStyle | None = None
) -> SyntheticPage:
    """A phone photo of a small page (on a table, in perspective, shadowed) holding one glyph
    (h, w ink in [0, 1]), large and roughly centred, the way one symbol is sent to /predict.
    The page is turned up to 8 degrees either way, drawn from the seed (style's rotation is
    not used): one photo is never quite square to its page."""
    rng = np.random.default_rng(seed)
    base = style or SINGLE
    turned = replace(base, rotation=float(rng.uniform(-8, 8)))
    height = float(rng.uniform(0.22, 0.42)) * turned.height
    glyph = _prepare(ink, height, rng, turned)
    h, w = glyph.shape
    top = int((turned.height - h) / 2 + rng.uniform(-0.15, 0.15) * turned.height)
    left = int((turned.width - w) / 2 + rng.uniform(-0.15, 0.15) * turned.width)
    page = np.ones((turned.height, turned.width), dtype=np.float32)
    region = page[top : top + h, left : left + w]
    np.minimum(region, 1.0 - float(rng.uniform(*turned.strength)) * glyph, out=region)
    photo = photograph(page, _shot(turned), rng)
    item = _Placed(glyph, top, left, 0, 0, 0, False)
    truth = _truth(item, np.array([label]), photo)
    return SyntheticPage(photo.image, [truth], turned, turned.rotation)


def _shot(style: PageStyle) -> Shot:
    return Shot(
        rotation=style.rotation,
        perspective=style.perspective,
        shadow=style.shadow,
        uneven_light=style.uneven_light,
        blur=style.blur,
        noise=style.noise,
    )


def _truth(item: _Placed, labels: NDArray[np.str_], photo: Photo) -> TruthSymbol:
    rows = np.flatnonzero((item.ink >= BOX_INK).any(axis=1))
    cols = np.flatnonzero((item.ink >= BOX_INK).any(axis=0))
    top, left = item.top + int(rows[0]), item.left + int(cols[0])
    box = photo.box((top, left, item.top + int(rows[-1]) + 1, item.left + int(cols[-1]) + 1))
    return TruthSymbol(
        str(labels[item.glyph]), item.glyph, box, item.line, item.position, item.broken
    )


def _write_lines(
    ink: Ink, height: float, pitch: float, rng: np.random.Generator, style: PageStyle, *, top: int
) -> list[_Placed]:
    """Lines of symbols as a hand places them: the baseline drifts by a sine and a little
    noise, gaps vary, and a line ends early when the next symbol would not fit."""
    placed: list[_Placed] = []
    baseline = top + height * (1 + 2.5 * style.size_jitter) + style.wobble + 2
    right_edge = style.width - style.margin
    for line in range(style.lines):
        if baseline + style.wobble + 3 > style.height - style.margin:
            break
        wanted = int(rng.integers(style.per_line[0], style.per_line[1] + 1))
        amplitude = float(rng.uniform(0.3, 1.0)) * style.wobble
        period = float(rng.uniform(300, 900))
        phase = float(rng.uniform(0, 2 * np.pi))
        x = style.margin + float(rng.uniform(0, 2 * height))
        previous_width = 0.0
        position = 0
        while position < wanted and len(placed) < len(ink):
            index = len(placed)
            glyph, broken = _glyph(ink[index], height, rng, style)
            h, w = glyph.shape
            if position:
                reference = max(previous_width, w, 0.5 * height)
                x += float(rng.uniform(*style.gap)) * reference
            if x + w > right_edge:
                break
            drift = amplitude * np.sin(2 * np.pi * x / period + phase) + rng.normal(0, 1.0)
            glyph_top = round(baseline + drift - h)
            placed.append(_Placed(glyph, glyph_top, round(x), index, line, position, broken))
            x += w
            previous_width = float(w)
            position += 1
        baseline += pitch
    return placed


def _scatter(
    ink: Ink, height: float, rng: np.random.Generator, style: PageStyle, *, top: int
) -> list[_Placed]:
    """Symbols at random places that keep clear of each other by a third of a glyph."""
    wanted = min(len(ink), style.lines * (style.per_line[0] + style.per_line[1]) // 2)
    taken: list[Box] = []
    placed: list[_Placed] = []
    pad = int(0.35 * height)
    for index in range(wanted):
        glyph, broken = _glyph(ink[index], height, rng, style)
        h, w = glyph.shape
        for _ in range(200):
            y = int(rng.integers(top, max(top + 1, style.height - style.margin - h)))
            x = int(
                rng.integers(style.margin, max(style.margin + 1, style.width - style.margin - w))
            )
            box = (y - pad, x - pad, y + h + pad, x + w + pad)
            if not any(_overlap(box, other) for other in taken):
                taken.append(box)
                placed.append(_Placed(glyph, y, x, index, -1, -1, broken))
                break
        else:
            break
    return placed


def _overlap(a: Box, b: Box) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _glyph(
    ink: Ink, page_height: float, rng: np.random.Generator, style: PageStyle
) -> tuple[Ink, bool]:
    """One symbol as this writer draws it: its own size around the page's, sometimes a
    thicker or thinner pen, sometimes a stroke broken in two."""
    bound = 2.5 * style.size_jitter
    height = page_height * (1 + float(np.clip(rng.normal(0, style.size_jitter), -bound, bound)))
    glyph = _prepare(ink, height, rng, style)
    if rng.random() < style.broken_strokes:
        cut = _break(glyph, rng)
        if cut is not None:
            return cut, True
    return glyph, False


def _prepare(ink: Ink, height: float, rng: np.random.Generator, style: PageStyle) -> Ink:
    """The glyph's ink cropped to its box, scaled to `height` keeping its aspect, its stroke
    maybe changed by a 3x3 (5x5 when large) max or min filter."""
    glyph = _crop(np.clip(np.asarray(ink, dtype=np.float32), 0, 1))
    h, w = glyph.shape
    size = (max(2, round(w * height / h)), max(2, round(height)))
    scaled = Image.fromarray(glyph, mode="F").resize(size, Image.Resampling.BILINEAR)
    if rng.random() < style.stroke_change:
        side = 3 if height < 70 else 5
        padded = Image.new("F", (size[0] + 2 * side, size[1] + 2 * side), 0.0)
        padded.paste(scaled, (side, side))
        thicker = rng.random() < 0.5 or height < 50  # thinning small glyphs erases them
        changed = padded.filter(
            ImageFilter.MaxFilter(side) if thicker else ImageFilter.MinFilter(side)
        )
        result = np.asarray(changed, dtype=np.float32)
        before = float(np.asarray(scaled).sum())
        if (result >= BOX_INK).any() and result.sum() >= 0.4 * before:
            return _crop(np.clip(result, 0, 1))
    return _crop(np.clip(np.asarray(scaled, dtype=np.float32), 0, 1))


def _crop(ink: Ink) -> Ink:
    """The glyph cropped to its ink with the soft edge kept: cut at BOX_INK, a stroke
    upscaled several times would end in a hard edge no pen makes."""
    rows = np.flatnonzero((ink >= FRINGE).any(axis=1))
    cols = np.flatnonzero((ink >= FRINGE).any(axis=0))
    if not (ink >= BOX_INK).any():
        return np.pad(np.ones((2, 2), dtype=np.float32), 1)
    cropped = ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    return np.ascontiguousarray(cropped, dtype=np.float32)


def _break(glyph: Ink, rng: np.random.Generator) -> Ink | None:
    """A thin gap erased across the stroke (a pen that skipped), kept only when it leaves
    exactly two sizeable pieces at any ink level; None when no tried cut does."""
    h, w = glyph.shape
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    gap = max(3.0, 0.06 * max(h, w))
    total = float((glyph >= BOX_INK).sum())
    for _ in range(12):
        angle = float(rng.uniform(-0.5, 0.5)) + (np.pi / 2 if rng.random() < 0.3 else 0.0)
        cy, cx = h * float(rng.uniform(0.3, 0.7)), w * float(rng.uniform(0.3, 0.7))
        distance = np.abs((ys - cy) * np.cos(angle) - (xs - cx) * np.sin(angle))
        cut = np.where(distance <= gap / 2, 0.0, glyph).astype(np.float32)
        if all(_two_pieces(cut >= level, total) for level in (BOX_INK, 0.6)):
            return _crop(cut)
    return None


def _two_pieces(mask: NDArray[np.bool_], total: float) -> bool:
    """Two sizeable pieces, whether the ink is taken at its faint edge or at its core."""
    pieces = label_components(mask)
    return pieces.count == 2 and int(pieces.area.min()) >= 0.1 * total


def _print_text(
    paper: Image.Image, glyph_height: float, rng: np.random.Generator, *, top: int, sheet: int
) -> int:
    """A printed header in light grey, small next to the handwriting (under a third of a
    glyph's height); returns where the writing may start below it."""
    size = int(np.clip(glyph_height * 0.3, 8, 18))
    font = ImageFont.load_default(size=size)
    draw = ImageDraw.Draw(paper)
    shade = int(255 * rng.uniform(0.4, 0.6))
    y = top
    for text in HEADER:
        draw.text((paper.width * 0.07, y), text.format(sheet=sheet), fill=shade, font=font)
        y += int(size * 1.6)
    footer = f"tessera practice pages - page {sheet}"
    draw.text((paper.width * 0.07, paper.height - top * 0.6), footer, fill=shade, font=font)
    return y + int(0.5 * glyph_height)


def _rule_notebook(
    paper: Image.Image, placed: list[_Placed], pitch: float, rng: np.random.Generator
) -> None:
    """Light ruled lines across the whole page, one pitch apart, under each written line's
    baseline so the symbols sit on them (as far as a hand keeps to a line)."""
    bottoms = {item.line: item.top + item.ink.shape[0] for item in placed if item.line >= 0}
    if not bottoms:
        return
    lines = sorted(bottoms)
    first = float(np.median([i.top + i.ink.shape[0] for i in placed if i.line == lines[0]]))
    draw = ImageDraw.Draw(paper)
    shade = int(rng.integers(150, 205))
    y = first + 1
    while y - pitch > 0:
        y -= pitch
    while y < paper.height:
        _hand_line(draw, (0.0, y), (float(paper.width), y), rng, shade=shade, width=2)
        y += pitch


def _add_specks(page: Ink, placed: list[_Placed], count: int, rng: np.random.Generator) -> None:
    """Dots of 1-3 px (dust, a pen's touch) kept a few pixels clear of every symbol, so each
    stays a speck and no symbol's box grows."""
    height, width = page.shape
    boxes = [
        (p.top - 4, p.left - 4, p.top + p.ink.shape[0] + 4, p.left + p.ink.shape[1] + 4)
        for p in placed
    ]
    made = 0
    for _ in range(count * 20):
        if made >= count:
            return
        side = int(rng.integers(1, 4))
        y, x = int(rng.integers(0, height - side)), int(rng.integers(0, width - side))
        if any(_overlap((y, x, y + side, x + side), box) for box in boxes):
            continue
        page[y : y + side, x : x + side] = np.minimum(
            page[y : y + side, x : x + side], float(rng.uniform(0.15, 0.6))
        )
        made += 1
