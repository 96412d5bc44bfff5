"""The strong CNN fits on randomly distorted digits while its export stays deterministic and
matches the native model under the job's parity gate."""

from __future__ import annotations

from dataclasses import asdict, replace

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from tessera_dev.samples import Glyphs
from training.candidates import check_parity
from training.errors import TrainingError
from training.export import keras_to_onnx
from training.families.augmentation import STRONG_AUGMENTATION, Augmentation, augmentation_model
from training.families.base import FitOptions
from training.families.keras import KERAS_RECIPES, fit_keras


def padded_digits(digits: Glyphs, count: int) -> tuple[np.ndarray, np.ndarray]:
    # sklearn's 8x8 digits in the middle of a 28x28 canvas: room to shift, turn and zoom.
    canvas = np.zeros((count, 28, 28), np.float32)
    canvas[:, 10:18, 10:18] = digits.ink[:count]
    return canvas.reshape(count, 784), digits.labels[:count]


def test_augmentation_distorts_only_while_fitting_and_repeats_with_its_seed(
    digits: Glyphs,
) -> None:
    # GIVEN the strong recipe's augmentation and a batch of digits
    x, _ = padded_digits(digits, 64)
    # WHEN it runs in training mode twice from the same seed, and once in inference mode
    first = np.asarray(augmentation_model(STRONG_AUGMENTATION, seed=3)(x, training=True))
    again = np.asarray(augmentation_model(STRONG_AUGMENTATION, seed=3)(x, training=True))
    other = np.asarray(augmentation_model(STRONG_AUGMENTATION, seed=4)(x, training=True))
    served = np.asarray(augmentation_model(STRONG_AUGMENTATION, seed=3)(x, training=False))
    # THEN training moves the ink, reproducibly for one seed and differently for another,
    # and inference passes the digits through untouched
    assert first.shape == x.shape
    moved = np.abs(first - x).max(axis=1) > 0.05
    untouched = np.abs(first - x).max(axis=1) == 0
    # (the recipe distorts about half the digits and fits the rest as they are)
    assert 0.25 < moved.mean() < 0.75 and (moved | untouched).all()
    always = replace(STRONG_AUGMENTATION, probability=1.0)
    every = np.asarray(augmentation_model(always, seed=3)(x, training=True))
    assert np.abs(every - x).max(axis=1).min() > 0.05
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first, other)
    np.testing.assert_array_equal(served, x)


def test_the_augmented_strong_cnn_trains_exports_without_random_ops_and_passes_parity(
    digits: Glyphs,
) -> None:
    # GIVEN the cnn-strong family, which fits on distorted digits
    assert KERAS_RECIPES["cnn-strong"].augmentation == STRONG_AUGMENTATION
    x, y = padded_digits(digits, 300)
    # WHEN it trains for one epoch and is exported
    model = fit_keras("cnn-strong", x, y, FitOptions(epochs=1))
    exported = keras_to_onnx(model.native, classes=model.classes, family="cnn-strong")
    # THEN the served graph holds no random op and no augmentation layer ...
    graph = onnx.load_from_string(exported).graph
    assert not [node.op_type for node in graph.node if "Random" in node.op_type]
    assert not [name for name in model.params["layers"] if name.startswith("Random")]
    assert model.params["augmentation"] == asdict(STRONG_AUGMENTATION)
    assert STRONG_AUGMENTATION.elastic_pixels > 0 and STRONG_AUGMENTATION.stroke > 0
    assert STRONG_AUGMENTATION.shear_degrees > 0
    # ... answers the same twice and agrees with the native model under the job's gate
    session = ort.InferenceSession(exported, providers=["CPUExecutionProvider"])
    probabilities, embedding = session.run(["probabilities", "embedding"], {"input": x})
    again, _ = session.run(["probabilities", "embedding"], {"input": x})
    np.testing.assert_array_equal(probabilities, again)
    parity = check_parity(model.probabilities(x), np.asarray(probabilities, np.float32))
    assert parity["passed"], parity
    assert np.abs(embedding - model.embedding(x)).max() < 1e-3
    assert model.epochs_run == model.best_epoch == 1


def blob_images(count: int) -> np.ndarray:
    """A 4x4 blob of ink at the centre of every tile."""
    images = np.zeros((count, 28, 28), np.float32)
    images[:, 12:16, 12:16] = 1.0
    return images.reshape(count, 784)


def centroids(images: np.ndarray) -> np.ndarray:
    tiles = images.reshape(-1, 28, 28)
    grid = np.arange(28, dtype=np.float64)
    mass = tiles.sum(axis=(1, 2))
    rows = (tiles.sum(axis=2) * grid).sum(axis=1) / mass
    cols = (tiles.sum(axis=1) * grid).sum(axis=1) / mass
    return np.stack([rows, cols], axis=1)


def test_elastic_distortion_moves_ink_along_rows_and_columns_independently() -> None:
    # GIVEN an augmentation that is elastic distortion only, and 400 identical blobs
    elastic = Augmentation(0, 0.0, 0.0, elastic_pixels=1.0)
    x = blob_images(400)
    # WHEN each is distorted
    moved = np.asarray(augmentation_model(elastic, seed=0)(x, training=True))
    # THEN the blobs wander by about a pixel, vertically and horizontally, the two directions
    # uncorrelated (Keras' own elastic_transform moves both by the same amount: along the
    # diagonal only); a blob stretched here and squeezed there keeps its ink on average
    shift = centroids(moved) - centroids(x)
    assert 0.3 < shift[:, 0].std() < 3 and 0.3 < shift[:, 1].std() < 3
    assert abs(np.corrcoef(shift[:, 0], shift[:, 1])[0, 1]) < 0.2
    ratio = moved.sum(axis=1) / x.sum(axis=1)
    assert abs(ratio.mean() - 1) < 0.15 and ratio.min() > 0.3


def test_stroke_width_thickens_some_digits_and_thins_others_in_place() -> None:
    # GIVEN an augmentation that only changes the stroke width
    stroke = Augmentation(0, 0.0, 0.0, stroke=0.5)
    x = blob_images(200)
    # WHEN it runs
    changed = np.asarray(augmentation_model(stroke, seed=1)(x, training=True))
    # THEN some blobs gain ink and some lose it, each stays where it was, and values stay in
    # [0, 1]
    ratio = changed.sum(axis=1) / x.sum(axis=1)
    assert (ratio > 1.2).any() and (ratio < 0.8).any()
    np.testing.assert_allclose(centroids(changed), centroids(x), atol=1e-3)
    assert changed.min() >= 0.0 and changed.max() <= 1.0


def test_shear_slants_a_vertical_bar() -> None:
    # GIVEN a vertical bar and an augmentation that only shears (up to 20 degrees)
    bars = np.zeros((100, 28, 28), np.float32)
    bars[:, 4:24, 13:15] = 1.0
    shear = Augmentation(0, 0.0, 0.0, shear_degrees=20.0)
    # WHEN it runs
    slanted = np.asarray(augmentation_model(shear, seed=2)(bars.reshape(100, 784), training=True))
    # THEN the bar's top and bottom ends move apart sideways, in both directions over the batch
    tiles = slanted.reshape(100, 28, 28)
    grid = np.arange(28)
    top = (tiles[:, 6] * grid).sum(axis=1) / np.maximum(tiles[:, 6].sum(axis=1), 1e-6)
    bottom = (tiles[:, 21] * grid).sum(axis=1) / np.maximum(tiles[:, 21].sum(axis=1), 1e-6)
    lean = top - bottom
    assert lean.max() > 1.5 and lean.min() < -1.5


def test_a_fit_can_name_another_augmentation_and_watch_every_epoch(digits: Glyphs) -> None:
    # GIVEN the augmented family asked to train without augmentation, with an epoch hook
    x, y = padded_digits(digits, 200)
    seen: list[tuple[int, float, float]] = []

    def watch(epoch: int, seconds: float, current: object) -> None:
        probabilities = current(x)  # type: ignore[operator]
        seen.append((epoch, seconds, float(probabilities.sum(axis=1).mean())))

    # WHEN it trains for two epochs
    model = fit_keras(
        "cnn-strong", x, y, FitOptions(epochs=2, patience=5, augmentation="none", epoch_end=watch)
    )
    # THEN the hook saw both epochs, in order, with the current weights' probabilities, and
    # the params record that no augmentation ran
    assert [epoch for epoch, _, _ in seen] == [1, 2]
    assert 0 < seen[0][1] < seen[1][1]
    assert all(abs(total - 1) < 1e-4 for _, _, total in seen)
    assert model.params["augmentation"] is None
    # AND an unknown augmentation is a clear error
    with pytest.raises(TrainingError) as error:
        fit_keras("cnn-strong", x, y, FitOptions(epochs=1, augmentation="wild"))
    assert error.value.code == "unknown_augmentation"
