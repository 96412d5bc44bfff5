"""`tessera eval sheets`: real and generated sheets through the same cutting and normalization
the functions run, scored against known truth with the current champion (or a local ONNX).

Per sheet it prints cells found vs expected, cells cut correctly (the found grid has the
expected shape and the cell's empty/inked state matches the truth) and the accuracy of the
model on the inked cells whose label is a class the model knows, twice: on the sheet's stack
normalized in one call, and "via tiles", the way a cell reaches the dataset and batch
predictions (an 8-bit tile PNG, then `normalize_tile` on its own).

A second table scores free-form pages (no grid: symbols in lines, scattered, photographed)
with the library's symbol detector; see tessera_dev.evaluation.pages.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tessera.errors import InvalidInput
from tessera.imaging.decode import decode_image, encode_png
from tessera.imaging.normalize import normalize_tile, to_vectors
from tessera.serving.model import OnnxClassifier
from tessera.sheets.cutting import cut_sheet
from tessera_dev.evaluation.pages import (
    PAGE_KINDS,
    PageResult,
    default_detector,
    evaluate_pages,
    format_table,
    page_table,
    summary,
    totals,
)
from tessera_dev.samples import Glyphs, data_dir, mnist
from tessera_dev.synthetic import SheetStyle, SyntheticSheet, make_sheet

SEED_SHEET = "seed_letters_digits_10x10.jpg"
SEED_ROWS = ("x", "y", "z", "t", "1", "2", "3", "4", "5", "6")
# OpenCV's digits.png: 50 rows x 100 cells of 20x20, five rows of each digit in turn.
OPENCV_SHEET = "opencv_digits_5000_grid.png"
OPENCV_LABELS: list[str | None] = [str(row // 5) for row in range(50) for _ in range(100)]


def generated_sheets(test: Glyphs, count: int, *, rows: int, cols: int) -> list[SyntheticSheet]:
    """`count` generated sheets of MNIST test digits, each drawing the next rows x cols."""
    per_sheet = rows * cols
    return [
        make_sheet(
            test.ink[index * per_sheet :],
            test.labels[index * per_sheet :],
            rows=rows,
            cols=cols,
            seed=index,
            style=SheetStyle(),
        )
        for index in range(count)
    ]


@dataclass
class SheetResult:
    name: str
    expected: tuple[int, int]
    found: tuple[int, int] | None
    source: str
    cut_ok: int
    cells: int
    correct: int
    scored: int
    seconds: float
    note: str = ""
    correct_via_tiles: int = 0

    def row(self) -> list[str]:
        found = f"{self.found[0]}x{self.found[1]}" if self.found else "-"
        accuracy = f"{self.correct / self.scored:.2%}" if self.scored else "-"
        return [
            self.name,
            f"{self.expected[0]}x{self.expected[1]}",
            found,
            self.source,
            f"{self.cut_ok}/{self.cells} ({self.cut_ok / max(1, self.cells):.2%})",
            f"{self.correct}/{self.scored}",
            accuracy,
            f"{self.correct_via_tiles / self.scored:.2%}" if self.scored else "-",
            f"{self.seconds:.2f}",
            self.note,
        ]


def _load_model(args: argparse.Namespace) -> OnnxClassifier:
    if args.model:
        return OnnxClassifier.from_bytes(
            Path(args.model).read_bytes(), name=Path(args.model).stem, version="local"
        )
    from tessera.registry import ModelRegistry
    from tessera.storage.s3 import S3ObjectStore

    registry = ModelRegistry(S3ObjectStore(bucket=args.bucket), args.model_name)
    champion = registry.champion()
    if champion is None:
        raise SystemExit(f"no champion for model {args.model_name!r} in bucket {args.bucket!r}")
    version = str(champion["version"])
    return OnnxClassifier.from_bytes(
        registry.model_bytes(version), name=args.model_name, version=version
    )


def evaluate_sheet(
    name: str,
    image: np.ndarray,
    *,
    expected: tuple[int, int],
    labels: list[str | None],
    model: OnnxClassifier,
    rows: int | None = None,
    cols: int | None = None,
) -> SheetResult:
    """Cut with no grid given (unless rows/cols are), then score cells and predictions."""
    start = time.perf_counter()
    try:
        cutting = cut_sheet(image, rows, cols)
    except InvalidInput as error:
        return SheetResult(
            name,
            expected,
            None,
            "-",
            0,
            len(labels),
            0,
            0,
            time.perf_counter() - start,
            note=error.code,
        )
    normalized, present = cutting.normalized()
    elapsed = time.perf_counter() - start
    found = (cutting.rows, cutting.cols)
    if found != expected:
        return SheetResult(
            name,
            expected,
            found,
            cutting.grid_source,
            0,
            len(labels),
            0,
            0,
            elapsed,
            note="grid differs",
        )
    truth_inked = np.array([label is not None for label in labels])
    cut_ok = int((truth_inked == present).sum())
    known = set(model.classes)
    scored = [i for i, label in enumerate(labels) if label in known and present[i]]
    missed = sum(1 for i, label in enumerate(labels) if label in known and not present[i])
    correct = correct_via_tiles = 0
    if scored:
        batch = to_vectors(normalized[scored]).astype(np.float32) / 255.0
        predicted = [p["label"] for p in model.predict(batch, top_k=1)]
        correct = sum(1 for i, p in zip(scored, predicted, strict=True) if p == labels[i])
        via_tiles = [_via_tile(cutting.tiles[i].pixels) for i in scored]
        kept = [i for i, v in zip(scored, via_tiles, strict=True) if v is not None]
        if kept:
            stack = np.stack([v for v in via_tiles if v is not None])
            batch = to_vectors(stack).astype(np.float32) / 255.0
            predicted = [p["label"] for p in model.predict(batch, top_k=1)]
            correct_via_tiles = sum(
                1 for i, p in zip(kept, predicted, strict=True) if p == labels[i]
            )
    # Cells with a known label that were wrongly found empty count as misclassified.
    return SheetResult(
        name,
        expected,
        found,
        cutting.grid_source,
        cut_ok,
        len(labels),
        correct,
        len(scored) + missed,
        elapsed,
        correct_via_tiles=correct_via_tiles,
    )


def _via_tile(pixels: np.ndarray) -> np.ndarray | None:
    """A cell as Split stores it (8-bit PNG) and Vectorize normalizes it."""
    return normalize_tile(decode_image(encode_png(pixels)))


def _table(results: list[SheetResult]) -> str:
    header = [
        "sheet",
        "expected",
        "found",
        "grid",
        "cut correctly",
        "correct",
        "accuracy",
        "via tiles",
        "seconds",
        "note",
    ]
    return format_table(header, [r.row() for r in results])


def _free_form(glyphs: Glyphs | None, pages: int, model: OnnxClassifier) -> list[PageResult]:
    """The free-form table and its totals, when there are test digits."""
    if not pages:
        return []
    if glyphs is None:
        print("free-form pages: skipped, no MNIST test digits")
        return []
    results = evaluate_pages(model, count=pages, seed=0, detector=default_detector(), glyphs=glyphs)
    print(page_table(results))
    print(summary(results))
    return results


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="tessera eval sheets", description=__doc__)
    parser.add_argument("--model", help="a local ONNX model file (else the bucket's champion)")
    parser.add_argument("--bucket", default="tessera-local")
    parser.add_argument("--model-name", default="digits")
    parser.add_argument("--data", type=Path, default=None, help="reference data folder")
    parser.add_argument("--generated", type=int, default=6, help="generated sheets to make")
    parser.add_argument("--rows", type=int, default=12)
    parser.add_argument("--cols", type=int, default=16)
    parser.add_argument(
        "--pages",
        type=int,
        default=len(PAGE_KINDS),
        help="free-form pages to make, cycling through their kinds (default: each once; 0: none)",
    )
    parser.add_argument("--json", action="store_true", help="also print one JSON summary line")
    args = parser.parse_args(argv)
    folder = args.data or data_dir()
    model = _load_model(args)
    results: list[SheetResult] = []

    opencv = folder / "sheets" / OPENCV_SHEET
    if opencv.exists():
        image = decode_image(opencv.read_bytes())
        results.append(
            evaluate_sheet(
                opencv.name, image, expected=(50, 100), labels=OPENCV_LABELS, model=model
            )
        )
    seed = folder / "sheets" / SEED_SHEET
    if seed.exists():
        image = decode_image(seed.read_bytes())
        labels: list[str | None] = [label for label in SEED_ROWS for _ in range(10)]
        results.append(
            evaluate_sheet(seed.name, image, expected=(10, 10), labels=labels, model=model)
        )
    mnist_dir = folder / "mnist"
    test: Glyphs | None = None
    if (mnist_dir / "t10k-images-idx3-ubyte.gz").exists():
        test = mnist(mnist_dir, split="test")
    if args.generated and test is not None:
        sheets = generated_sheets(test, args.generated, rows=args.rows, cols=args.cols)
        for index, sheet in enumerate(sheets):
            results.append(
                evaluate_sheet(
                    f"generated-{index} ({sheet.rotation:+.1f} deg)",
                    decode_image(sheet.png()),
                    expected=(args.rows, args.cols),
                    labels=sheet.labels,
                    model=model,
                )
            )
    print(f"model: {model.name} {model.version}")
    print(_table(results))
    generated = [r for r in results if r.name.startswith("generated")]
    if generated:
        cut = sum(r.cut_ok for r in generated) / max(1, sum(r.cells for r in generated))
        accuracy = sum(r.correct for r in generated) / max(1, sum(r.scored for r in generated))
        via_tiles = sum(r.correct_via_tiles for r in generated) / max(
            1, sum(r.scored for r in generated)
        )
        print(
            f"generated sheets: {cut:.2%} of cells cut correctly, {accuracy:.2%} classified "
            f"({via_tiles:.2%} via tiles)"
        )
    pages = _free_form(test, args.pages, model)
    if args.json:
        line = {
            "sheets": [r.__dict__ for r in results],
            "pages": [r.__dict__ for r in pages],
            "pages_totals": totals(pages) if pages else None,
        }
        print(json.dumps(line, default=str))
    return 0
