"""The pieces `tessera bench training` measures transfer and other sources with, on small
data made here: the seed sheet's columns as folds, the few-shot draws, the other-source
scoring through the pipeline's normalization and the curve's plot. (The figures themselves come
from running the bench on MNIST and the reference sheets, never from a test.)"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier

from tessera.serving.model import OnnxClassifier
from tessera_dev.bench.fewshot import (
    base_from_onnx,
    column_cv,
    dataset,
    fewshot_curve,
    per_class_sample,
    plot_curve,
    seed_sheet_tiles,
)
from tessera_dev.bench.sources import digit_tiles, score_sources, score_vectors
from tessera_dev.samples import Glyphs, render_sheet
from tests.serving.model_builder import HIDDEN, mlp_to_onnx, model_inputs
from tests.serving.model_builder import digit_tiles as paper_tiles

ROWS = tuple("0123456789")


def sorted_glyphs(digits: Glyphs, per_class: int) -> Glyphs:
    """`per_class` digits of every class, class by class (a sheet's rows)."""
    index = np.concatenate([np.flatnonzero(digits.labels == c)[:per_class] for c in ROWS])
    return Glyphs(ink=digits.ink[index], labels=digits.labels[index])


@pytest.fixture(scope="module")
def base_onnx() -> bytes:
    """A small digit model under the serving contract, trained on sklearn digits 0-4."""
    tiles, labels = paper_tiles(900)
    x = model_inputs(tiles)
    keep = np.isin(labels, list("01234"))
    mlp = MLPClassifier(hidden_layer_sizes=(HIDDEN,), max_iter=300, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        mlp.fit(x[keep], labels[keep])
    return mlp_to_onnx(mlp, [str(c) for c in mlp.classes_])


def test_the_seed_sheet_is_cut_into_labelled_rows_and_column_folds(digits: Glyphs) -> None:
    # GIVEN a 10 x 10 sheet: row r holds ten digits r, one per column
    glyphs = sorted_glyphs(digits, 10)
    sheet = render_sheet(glyphs.ink, cols=10)
    # WHEN it is cut the way Split cuts it
    tiles = seed_sheet_tiles(sheet, ROWS)
    # THEN every cell is a tile labelled by its row, and its group is its column
    assert tiles.x.shape == (100, 784) and tiles.empty == 0
    assert tiles.y.tolist() == [label for label in ROWS for _ in range(10)]
    assert tiles.groups.tolist() == list(range(10)) * 10
    assert (tiles.x.max(axis=1) > 200).all()


def test_column_folds_test_every_tile_once_and_transfer_beats_chance(
    digits: Glyphs, base_onnx: bytes
) -> None:
    # GIVEN seed-sheet tiles of ten classes (digits 5-9 unseen by the base) and a base
    tiles = seed_sheet_tiles(render_sheet(sorted_glyphs(digits, 10).ink, cols=10), ROWS)
    base = base_from_onnx("base", "v1", base_onnx)
    # WHEN transfer runs over the leave-one-column-out folds
    results = column_cv(tiles, ["transfer"], base=base)["transfer"]
    # THEN it scored all 100 tiles over 10 folds, well above chance (10%)
    assert results["tiles"] == 100 and len(results["folds"]) == 10
    assert results["accuracy"] == results["correct"] / 100 > 0.6


def test_few_shot_draws_are_per_class_repeatable_and_shared_by_families(
    digits: Glyphs, base_onnx: bytes, tmp_path: Path
) -> None:
    # GIVEN a pool of digits 5-9 and a test set of other digits 5-9
    tiles, labels = paper_tiles(1797)
    x = (model_inputs(tiles) * 255).round().astype(np.uint8)
    new = np.flatnonzero(np.isin(labels, list("56789")))
    pool = dataset(x[new[:400]], labels[new[:400]], "pool")
    test = dataset(x[new[400:]], labels[new[400:]], "test")
    # THEN a draw has exactly `count` rows of every class, the same for the same seed
    chosen = per_class_sample(pool.y, 4, seed=0)
    assert sorted(np.unique(pool.y[chosen], return_counts=True)[1].tolist()) == [4] * 5
    assert per_class_sample(pool.y, 4, seed=0).tolist() == chosen.tolist()
    assert per_class_sample(pool.y, 4, seed=1).tolist() != chosen.tolist()
    # WHEN the curve runs at two sizes with two draws each
    base = base_from_onnx("base", "v1", base_onnx)
    rows = fewshot_curve(pool, test, ["transfer", "mlp"], base=base, shots=(5, 20), repeats=2)
    # THEN each size has a mean accuracy per family, and more examples do not hurt transfer
    assert [row["per_class"] for row in rows] == [5, 20]
    assert all(0.2 < row["transfer"] <= 1 and 0 <= row["mlp"] <= 1 for row in rows)
    assert rows[1]["transfer"] >= rows[0]["transfer"] - 0.05
    # AND the plot is a PNG image
    path = plot_curve(rows, ["transfer", "mlp"], tmp_path / "plots" / "fewshot.png")
    with Image.open(path) as image:
        assert image.format == "PNG" and image.width > 300


def test_other_sources_go_through_the_normalization_and_are_scored(base_onnx: bytes) -> None:
    # GIVEN scikit-learn digits drawn as paper tiles, and a model of digits 0-4
    glyphs = Glyphs(ink=np.zeros((3, 8, 8), np.float32), labels=np.asarray(["1", "1", "1"]))
    glyphs.ink[:2, 1:7, 3:5] = 1.0  # two vertical bars, one blank tile
    vectors = digit_tiles(glyphs)
    # THEN inked glyphs come out as MNIST-style vectors (ink bright, centred, 20-pixel box)
    # and a blank one as a black vector
    assert vectors.shape == (3, 784) and vectors.dtype == np.uint8
    tile = vectors[0].reshape(28, 28)
    rows = np.flatnonzero(tile.max(axis=1) > 0)
    assert 18 <= rows[-1] - rows[0] + 1 <= 21 and abs(rows.mean() - 13.5) < 1.5
    assert vectors[2].max() == 0
    # WHEN a model scores them: correct counts against the labels
    model = OnnxClassifier.from_bytes(base_onnx, name="base", version="v1")
    score = score_vectors(model, "bars", vectors, glyphs.labels)
    assert score.scored == 3 and 0 <= score.correct <= 3
    assert score.accuracy == score.correct / 3
    # AND with no reference sheets and no MNIST, only scikit-learn's digits are scored
    scores = score_sources(model, sheets_dir=None, mnist_test=None)
    assert [s.source for s in scores] == ["scikit-learn digits"]
    assert scores[0].scored == 1797 and scores[0].accuracy > 0.3
