"""Digits from other hands than MNIST's, scored the way the pipeline reads them: a model that
only knows MNIST's writers can look better on MNIST's test split than on anyone's sheet.

- the 5000-cell OpenCV sheet (`data/sheets`), cut and normalized by the library;
- scikit-learn's 1,797 digits (8x8, 43 writers), each drawn dark on light as a tile and
  normalized like a cut cell;
- generated sheets: MNIST test digits laid out on paper with ruling, rotation and noise, found
  and cut with no grid given (a cell the cutting misses counts as wrong).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from tessera.imaging.decode import decode_image
from tessera.imaging.normalize import normalize_tile, to_vectors
from tessera.serving.model import OnnxClassifier
from tessera_dev.evaluation.sheets import (
    OPENCV_LABELS,
    OPENCV_SHEET,
    evaluate_sheet,
    generated_sheets,
)
from tessera_dev.samples import Glyphs, sklearn_digits

# scikit-learn's 8x8 digits drawn into a 32-pixel tile with a 3-pixel paper margin, as a cell.
_TILE, _MARGIN = 32, 3


@dataclass(frozen=True)
class SourceScore:
    source: str
    correct: int
    scored: int

    @property
    def accuracy(self) -> float:
        return self.correct / self.scored if self.scored else 0.0


def digit_tiles(glyphs: Glyphs) -> NDArray[np.uint8]:
    """Glyphs (ink in [0, 1]) as dark-on-light tiles through `normalize_tile`: (n, 784) bytes.
    A glyph the normalization finds no ink in gives a black vector (it will be misread)."""
    inner = _TILE - 2 * _MARGIN
    vectors = np.zeros((len(glyphs.ink), 28 * 28), np.uint8)
    for index, ink in enumerate(glyphs.ink):
        grown = Image.fromarray(ink.astype(np.float32), mode="F").resize(
            (inner, inner), Image.Resampling.BILINEAR
        )
        tile = np.ones((_TILE, _TILE), np.float32)
        tile[_MARGIN:-_MARGIN, _MARGIN:-_MARGIN] = 1.0 - np.clip(np.asarray(grown), 0, 1)
        normalized = normalize_tile(tile)
        if normalized is not None:
            vectors[index] = to_vectors(normalized[None])[0]
    return vectors


def score_vectors(
    model: OnnxClassifier, source: str, vectors: NDArray[np.uint8], labels: NDArray[np.str_]
) -> SourceScore:
    probabilities = model.probabilities(vectors.astype(np.float32) / np.float32(255.0))
    predicted = np.asarray(model.classes)[probabilities.argmax(axis=1)]
    return SourceScore(source, int((predicted == labels).sum()), len(labels))


def score_sources(
    model: OnnxClassifier,
    *,
    sheets_dir: Path | None,
    mnist_test: Glyphs | None,
    generated: int = 6,
    rows: int = 12,
    cols: int = 16,
) -> list[SourceScore]:
    """The model on every other source that is there: OpenCV sheet, sklearn digits, generated."""
    scores = []
    opencv = sheets_dir / OPENCV_SHEET if sheets_dir else None
    if opencv is not None and opencv.exists():
        result = evaluate_sheet(
            "opencv",
            decode_image(opencv.read_bytes()),
            expected=(50, 100),
            labels=OPENCV_LABELS,
            model=model,
        )
        scores.append(SourceScore("5000-cell sheet", result.correct, result.scored or 5000))
    digits = sklearn_digits()
    scores.append(score_vectors(model, "scikit-learn digits", digit_tiles(digits), digits.labels))
    if mnist_test is not None and generated:
        correct = scored = 0
        for sheet in generated_sheets(mnist_test, generated, rows=rows, cols=cols):
            result = evaluate_sheet(
                "generated",
                decode_image(sheet.png()),
                expected=(rows, cols),
                labels=sheet.labels,
                model=model,
            )
            correct += result.correct
            scored += result.scored or sum(label is not None for label in sheet.labels)
        scores.append(SourceScore(f"generated sheets ({generated})", correct, scored))
    return scores
