"""Free-form pages scored against known truth: symbols found, spurious and missed, lines read
in the right order, and the model's accuracy on what was found. `tessera eval sheets` prints
this as its second table; the detector is passed in, so any detector (or a fake) is scored the
same way.

A found box matches the truth box whose centre it contains and that contains its centre (or
any truth box with IoU >= 0.3), one to one, best IoU first. A truth line is right when every
symbol in it is matched, all to one found line, in the same left-to-right order, and that found
line holds nothing else.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from itertools import pairwise
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from tessera.errors import InvalidInput
from tessera.imaging.decode import decode_image
from tessera.imaging.normalize import model_input, normalize_tile
from tessera.sheets.cutting import cut_sheet
from tessera.sheets.freeform import SymbolCutting
from tessera_dev.samples import Glyphs, data_dir, mnist
from tessera_dev.synthetic_pages import (
    PageStyle,
    SyntheticPage,
    TruthSymbol,
    make_page,
    make_single,
)

Box = tuple[int, int, int, int]  # top, left, bottom, right; bottom and right exclusive
MATCH_IOU = 0.3
GOALS = {"found": 0.99, "spurious": 0.01, "lines": 0.99, "classified": 0.97}


class FoundSymbol(Protocol):
    """What a free-form detector reports per symbol: its line and position in reading order
    and its box (top, left, bottom, right; bottom and right exclusive) in source pixels."""

    @property
    def line(self) -> int: ...
    @property
    def position(self) -> int: ...
    @property
    def box(self) -> Box: ...


class ClassifiableSymbol(FoundSymbol, Protocol):
    @property
    def pixels(self) -> NDArray[Any]: ...  # cleaned ink bright on black, as a grid tile


class Classifier(Protocol):
    @property
    def classes(self) -> Sequence[str]: ...
    def predict(self, x: NDArray[np.float32], *, top_k: int = 3) -> list[dict[str, Any]]: ...


Detector = Callable[[NDArray[np.float32]], Sequence[ClassifiableSymbol]]


@dataclass(frozen=True, kw_only=True)
class PageCounts:
    """What was found on a page against its truth: symbols and lines."""

    expected: int
    found: int
    matched: int
    spurious: int
    missed: int
    lines_expected: int
    lines_right: int


@dataclass(frozen=True, kw_only=True)
class PageScore(PageCounts):
    matched_pairs: tuple[tuple[int, int], ...]  # (truth index, found index)


@dataclass(frozen=True)
class PageKind:
    name: str
    style: PageStyle
    single: bool = False


PAGE_KINDS: tuple[PageKind, ...] = (
    PageKind("clean lines", PageStyle()),
    PageKind("printed text", PageStyle(printed_text=True)),
    PageKind("notebook lines", PageStyle(notebook_lines=True)),
    PageKind("shadow + uneven light", PageStyle(shadow=0.45, uneven_light=0.3)),
    PageKind("rotated 5 deg", PageStyle(rotation=5.0)),
    PageKind("rotated 9 deg", PageStyle(rotation=-9.0)),
    PageKind(
        "photo on a table",
        PageStyle(
            perspective=0.06, rotation=2.0, shadow=0.35, uneven_light=0.2, blur=0.9, noise=0.03
        ),
    ),
    PageKind("broken strokes", PageStyle(broken_strokes=0.35)),
    PageKind(
        "mixed sizes and strokes",
        PageStyle(glyph_height=(45.0, 80.0), size_jitter=0.18, stroke_change=0.6),
    ),
    PageKind("scattered", PageStyle(scattered=True)),
    PageKind("specks", PageStyle(specks=200)),
    PageKind("single-symbol photo", PageStyle(), single=True),
)


@dataclass(frozen=True)
class Detected:
    """A symbol as the library's free-form reading cuts it: its tile's place (row = line,
    col = position) and pixels, and its box in source pixels."""

    line: int
    position: int
    box: Box
    pixels: NDArray[Any]


def default_detector() -> Detector:
    """The library's reading of a page dropped with no metadata, `cut_sheet(image)`, as a
    detector: a free-form page must come back read as symbols. A page read as a grid, or on
    which nothing is found (`no_symbols`), scores as all missed."""

    def detect(image: NDArray[np.float32]) -> list[Detected]:
        try:
            cut = cut_sheet(image)
        except InvalidInput:
            return []
        if not isinstance(cut, SymbolCutting):
            return []
        return [
            Detected(tile.row, tile.col, box, tile.pixels)
            for tile, box in zip(cut.tiles, cut.boxes, strict=True)
        ]

    return detect


def score_page(truth: Sequence[TruthSymbol], found: Sequence[FoundSymbol]) -> PageScore:
    """Found symbols against the truth, one to one (see the module's docstring)."""
    pairs = _match([t.box for t in truth], [f.box for f in found])
    lines = sorted({t.line for t in truth if t.line >= 0})
    right = sum(1 for line in lines if _line_right(line, truth, found, pairs))
    return PageScore(
        expected=len(truth),
        found=len(found),
        matched=len(pairs),
        spurious=len(found) - len(pairs),
        missed=len(truth) - len(pairs),
        lines_expected=len(lines),
        lines_right=right,
        matched_pairs=tuple(sorted(pairs.items())),
    )


def _match(truth: list[Box], found: list[Box]) -> dict[int, int]:
    """Truth index -> found index: every candidate pair ranked by IoU, taken greedily."""
    candidates = []
    for t, t_box in enumerate(truth):
        for f, f_box in enumerate(found):
            iou = _iou(t_box, f_box)
            centred = _contains(f_box, _centre(t_box)) and _contains(t_box, _centre(f_box))
            if centred or iou >= MATCH_IOU:
                candidates.append((-iou, t, f))
    pairs: dict[int, int] = {}
    used: set[int] = set()
    for _, t, f in sorted(candidates):
        if t not in pairs and f not in used:
            pairs[t] = f
            used.add(f)
    return pairs


def _line_right(
    line: int, truth: Sequence[TruthSymbol], found: Sequence[FoundSymbol], pairs: dict[int, int]
) -> bool:
    members = sorted(
        (t for t, s in enumerate(truth) if s.line == line), key=lambda t: truth[t].position
    )
    if any(t not in pairs for t in members):
        return False
    partners = [found[pairs[t]] for t in members]
    found_line = partners[0].line
    if any(p.line != found_line for p in partners):
        return False
    positions = [p.position for p in partners]
    in_order = all(a < b for a, b in pairwise(positions))
    return in_order and sum(1 for f in found if f.line == found_line) == len(members)


def _iou(a: Box, b: Box) -> float:
    height = min(a[2], b[2]) - max(a[0], b[0])
    width = min(a[3], b[3]) - max(a[1], b[1])
    if height <= 0 or width <= 0:
        return 0.0
    inter = height * width
    union = _area(a) + _area(b) - inter
    return inter / union if union > 0 else 0.0


def _area(box: Box) -> int:
    return max(0, box[2] - box[0]) * max(0, box[3] - box[1])


def _centre(box: Box) -> tuple[float, float]:
    return (box[0] + box[2]) / 2, (box[1] + box[3]) / 2


def _contains(box: Box, point: tuple[float, float]) -> bool:
    return box[0] <= point[0] < box[2] and box[1] <= point[1] < box[3]


@dataclass(frozen=True, kw_only=True)
class PageResult(PageCounts):
    """A page's counts, and how its matched symbols were classified."""

    name: str
    correct: int
    scored: int
    seconds: float

    def row(self) -> list[str]:
        lines = f"{self.lines_right}/{self.lines_expected}" if self.lines_expected else "-"
        accuracy = f"{self.correct / self.scored:.2%}" if self.scored else "-"
        return [
            self.name,
            str(self.expected),
            str(self.found),
            str(self.spurious),
            str(self.missed),
            lines,
            f"{self.correct}/{self.scored}",
            accuracy,
            f"{self.seconds:.2f}",
        ]


HEADER = ["page", "expected", "found", "spurious", "missed", "lines right", "correct"]
HEADER += ["accuracy", "seconds"]


def generated_pages(glyphs: Glyphs, *, count: int, seed: int) -> list[tuple[str, SyntheticPage]]:
    """`count` pages cycling through PAGE_KINDS, each drawing glyphs not used by the pages
    before it (wrapping round when the glyphs run out)."""
    pages = []
    offset = 0
    for index in range(count):
        kind = PAGE_KINDS[index % len(PAGE_KINDS)]
        if offset + 200 > len(glyphs.ink):
            offset = 0
        page_seed = seed + index
        if kind.single:
            page = make_single(glyphs.ink[offset], str(glyphs.labels[offset]), page_seed)
        else:
            ink, labels = glyphs.ink[offset:], glyphs.labels[offset:]
            page = make_page(ink, labels, seed=page_seed, style=kind.style)
        offset += max(s.glyph for s in page.symbols) + 1
        pages.append((kind.name, page))
    return pages


def evaluate_page(
    name: str, page: SyntheticPage, *, model: Classifier, detector: Detector
) -> PageResult:
    """The page through its PNG bytes (as an upload reaches the detector), the detector timed,
    and the model's label for each matched symbol's pixels."""
    image = decode_image(page.png())
    start = time.perf_counter()
    found = list(detector(image))
    seconds = time.perf_counter() - start
    score = score_page(page.symbols, found)
    known = set(model.classes)
    pairs = [(t, f) for t, f in score.matched_pairs if page.symbols[t].label in known]
    vectors = [_vector(found[f].pixels) for _, f in pairs]
    kept = [(t, v) for (t, _), v in zip(pairs, vectors, strict=True) if v is not None]
    correct = 0
    if kept:
        predicted = model.predict(np.stack([v for _, v in kept]), top_k=1)
        labels = [p["label"] for p in predicted]
        correct = sum(
            1 for (t, _), p in zip(kept, labels, strict=True) if p == page.symbols[t].label
        )
    counts = {f.name: getattr(score, f.name) for f in fields(PageCounts)}
    return PageResult(name=name, correct=correct, scored=len(pairs), seconds=seconds, **counts)


def _vector(pixels: NDArray[Any]) -> NDArray[np.float32] | None:
    """A found symbol's pixels as the model's input, the way a grid tile becomes one."""
    tile = np.asarray(pixels, dtype=np.float32)
    if np.asarray(pixels).dtype == np.uint8:
        tile = tile / np.float32(255.0)
    normalized = normalize_tile(tile)
    return None if normalized is None else model_input(normalized)


def evaluate_pages(
    model: Classifier,
    *,
    count: int,
    seed: int,
    detector: Detector,
    glyphs: Glyphs | None = None,
) -> list[PageResult]:
    """`count` generated pages (default glyphs: the MNIST test split, so a model trained on
    MNIST's train split is scored on digits it never saw) through the detector and the model."""
    if glyphs is None:
        glyphs = mnist(data_dir() / "mnist", split="test")
    return [
        evaluate_page(name, page, model=model, detector=detector)
        for name, page in generated_pages(glyphs, count=count, seed=seed)
    ]


def totals(results: Sequence[PageResult]) -> dict[str, float]:
    """The rates the goals are about, over all pages: found = matched / expected, spurious =
    unmatched / found, lines = lines right / lines, classified = correct / matched and known."""
    expected = sum(r.expected for r in results)
    found = sum(r.found for r in results)
    return {
        "found": sum(r.matched for r in results) / max(1, expected),
        "spurious": sum(r.spurious for r in results) / max(1, found),
        "lines": sum(r.lines_right for r in results)
        / max(1, sum(r.lines_expected for r in results)),
        "classified": sum(r.correct for r in results) / max(1, sum(r.scored for r in results)),
    }


def summary(results: Sequence[PageResult]) -> str:
    """One line: each total beside its goal, and whether it is met."""
    rates = totals(results)
    parts = []
    for key, value in rates.items():
        goal = GOALS[key]
        met = value <= goal if key == "spurious" else value >= goal
        bound = "<=" if key == "spurious" else ">="
        parts.append(f"{value:.2%} {key} ({bound} {goal:.0%}: {'met' if met else 'NOT met'})")
    return "free-form pages: " + ", ".join(parts)


def format_table(header: list[str], rows: list[list[str]]) -> str:
    """Columns padded to their widest cell, a rule under the header."""
    table = [header, *rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)) for row in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def page_table(results: Sequence[PageResult]) -> str:
    return format_table(HEADER, [r.row() for r in results])
