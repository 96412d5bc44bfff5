"""The strong CNN fits on randomly distorted digits while its export stays deterministic and
matches the native model under the job's parity gate."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort

from tessera_dev.samples import Glyphs
from training.candidates import check_parity
from training.export import keras_to_onnx
from training.families.augmentation import STRONG_AUGMENTATION, augmentation_model
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
    assert np.abs(first - x).max(axis=1).min() > 0.05
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
    assert model.params["augmentation"] == {
        "shift_pixels": 2,
        "rotation_degrees": 10.0,
        "zoom": 0.1,
    }
    # ... answers the same twice and agrees with the native model under the job's gate
    session = ort.InferenceSession(exported, providers=["CPUExecutionProvider"])
    probabilities, embedding = session.run(["probabilities", "embedding"], {"input": x})
    again, _ = session.run(["probabilities", "embedding"], {"input": x})
    np.testing.assert_array_equal(probabilities, again)
    parity = check_parity(model.probabilities(x), np.asarray(probabilities, np.float32))
    assert parity["passed"], parity
    assert np.abs(embedding - model.embedding(x)).max() < 1e-3
    assert model.epochs_run == model.best_epoch == 1
