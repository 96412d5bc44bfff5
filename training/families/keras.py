"""The Keras families of the reference notebooks: the dense net, the reference CNN, and the
stronger batch-normalized CNN trained on augmented digits."""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from tessera.config import TILE_SIZE, VECTOR_LENGTH
from training.errors import TrainingError
from training.families.augmentation import (
    AUGMENTATIONS,
    STRONG_AUGMENTATION,
    Augmentation,
    augmentation_model,
)
from training.families.base import FitOptions, FittedModel, Floats, Labels, class_index
from training.progress import log


@dataclass(frozen=True)
class KerasRecipe:
    epochs: int
    batch_size: int
    one_hot: bool
    patience: int
    augmentation: Augmentation | None = None


KERAS_RECIPES = {
    "dense": KerasRecipe(epochs=25, batch_size=32, one_hot=False, patience=4),
    "cnn": KerasRecipe(epochs=10, batch_size=1000, one_hot=True, patience=3),
    # Measured by `tessera bench training` on a 2-core CPU (README): three quarters of the
    # earlier 32/64 filters and twice the batch make an epoch faster, and a one-epoch warm-up to
    # a three times higher peak learning rate, then cosine over the whole budget, reach 99.4% at
    # epoch 5 of 12 (the earlier recipe reached its 99.43% only at epoch 12, after 516 s).
    "cnn-strong": KerasRecipe(
        epochs=12, batch_size=256, one_hot=True, patience=4, augmentation=STRONG_AUGMENTATION
    ),
}
# cnn-strong: filters of its two conv-conv-pool blocks; the learning rate warms up over the
# first epoch from a tenth of its peak, then follows a cosine down to 2% of it.
STRONG_FILTERS = (24, 48)
STRONG_PEAK_LEARNING_RATE = 3e-3


def keras_models(
    family: str,
    classes: int,
    *,
    steps_per_epoch: int,
    epochs: int,
    augmentation: Augmentation | None = None,
    seed: int = 0,
) -> tuple[Any, Any]:
    """(training model, export model with outputs [probabilities, embedding]) sharing layers."""
    import keras
    from keras import layers

    inputs = keras.Input((VECTOR_LENGTH,), name="input")
    if family == "dense":
        x = layers.Flatten()(inputs)
        x = layers.Dense(128, activation="relu")(x)
        embedding = layers.Dense(32, activation="relu", name="embedding")(x)
        optimizer: Any = keras.optimizers.Adam()
        loss = "sparse_categorical_crossentropy"
    elif family == "cnn":
        x = layers.Reshape((TILE_SIZE, TILE_SIZE, 1))(inputs)
        x = layers.Conv2D(30, (3, 3), activation="relu")(x)
        x = layers.MaxPooling2D((2, 2))(x)
        x = layers.Dropout(0.25)(x)
        x = layers.Flatten()(x)
        embedding = layers.Dense(128, activation="relu", name="embedding")(x)
        optimizer = keras.optimizers.RMSprop()
        loss = "categorical_crossentropy"
    elif family == "cnn-strong":
        x = layers.Reshape((TILE_SIZE, TILE_SIZE, 1))(inputs)
        for filters in STRONG_FILTERS:
            x = layers.Conv2D(filters, (3, 3), activation="relu", padding="same")(x)
            x = layers.BatchNormalization()(x)
            x = layers.Conv2D(filters, (3, 3), activation="relu")(x)
            x = layers.BatchNormalization()(x)
            x = layers.MaxPooling2D((2, 2))(x)
            x = layers.Dropout(0.25)(x)
        x = layers.Flatten()(x)
        x = layers.Dense(128, activation="relu")(x)
        x = layers.BatchNormalization()(x)
        embedding = layers.Dropout(0.4, name="embedding")(x)
        schedule = keras.optimizers.schedules.CosineDecay(
            STRONG_PEAK_LEARNING_RATE / 10,
            decay_steps=max(1, steps_per_epoch * (epochs - 1)),
            alpha=0.02,
            warmup_target=STRONG_PEAK_LEARNING_RATE,
            warmup_steps=steps_per_epoch,
        )
        optimizer = keras.optimizers.Adam(learning_rate=schedule)
        loss = "categorical_crossentropy"
    else:
        raise ValueError(f"unknown family {family!r}")
    probabilities = layers.Dense(classes, activation="softmax", name="probabilities")(embedding)
    exported = keras.Model(inputs, [probabilities, embedding])
    if augmentation is None:
        trained = keras.Model(inputs, probabilities)
    else:
        fitting_inputs = keras.Input((VECTOR_LENGTH,), name="input")
        distorted = augmentation_model(augmentation, seed=seed)(fitting_inputs)
        trained = keras.Model(fitting_inputs, exported(distorted)[0])
    trained.compile(optimizer=optimizer, loss=loss, metrics=["accuracy"])
    return trained, exported


def keras_device() -> str:
    """Where Keras fits: "GPU" with the GPUs TensorFlow sees (the GPU image on the GPU queue),
    else "CPU". Recorded with the model's hyper-parameters, so a run shows where it ran."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    return f"GPU x{len(gpus)}" if gpus else "CPU"


def fit_keras(family: str, x: Floats, y: Labels, options: FitOptions) -> FittedModel:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    started = time.perf_counter()
    recipe = KERAS_RECIPES[family]
    device = keras_device()
    log(f"{family}: fitting on {device}")
    keras.utils.set_random_seed(options.seed)
    classes = [str(c) for c in np.unique(y)]
    # Keras' validation_split takes the last rows: shuffle first so it is a fair sample.
    order = np.random.default_rng(options.seed).permutation(len(y))
    x, targets = x[order], class_index(classes, y[order])
    if recipe.one_hot:
        targets = keras.utils.to_categorical(targets, len(classes))
    epochs = options.epochs or recipe.epochs
    steps = int(np.ceil(len(y) * 0.8 / recipe.batch_size))
    augmentation = recipe.augmentation
    if options.augmentation is not None:
        if options.augmentation not in AUGMENTATIONS:
            raise TrainingError(
                "unknown_augmentation",
                f"{options.augmentation!r} is not one of {', '.join(AUGMENTATIONS)}",
            )
        augmentation = AUGMENTATIONS[options.augmentation]
    trained, exported = keras_models(
        family,
        len(classes),
        steps_per_epoch=steps,
        epochs=epochs,
        augmentation=augmentation,
        seed=options.seed,
    )

    def current(data: Floats) -> Floats:
        return np.asarray(exported.predict(data, batch_size=1000, verbose=0)[0], np.float32)

    class Progress(keras.callbacks.Callback):  # type: ignore[misc]
        hook_seconds = 0.0

        def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
            if options.epoch_end is not None:
                hook_started = time.perf_counter()
                fitting = hook_started - started - self.hook_seconds
                options.epoch_end(epoch + 1, fitting, current)
                self.hook_seconds += time.perf_counter() - hook_started
            logs = logs or {}
            log(
                f"{family} epoch {epoch + 1}/{epochs} loss={logs.get('loss', 0):.4f} "
                f"accuracy={logs.get('accuracy', 0):.4f} val_loss={logs.get('val_loss', 0):.4f} "
                f"val_accuracy={logs.get('val_accuracy', 0):.4f}"
            )

    stopper = keras.callbacks.EarlyStopping(
        monitor="val_loss",
        patience=options.patience or recipe.patience,
        restore_best_weights=True,
    )
    callbacks = [stopper, Progress()]
    if family != "cnn-strong":  # which follows its own cosine schedule
        # A plateau in validation loss first lowers the step size, then stops: the fine-tuning
        # epochs are where the dense net gains its last few tenths of a point.
        callbacks.insert(
            0,
            keras.callbacks.ReduceLROnPlateau(
                monitor="val_loss", factor=0.3, patience=1, min_lr=1e-5
            ),
        )
    fit = trained.fit(
        x,
        targets,
        batch_size=recipe.batch_size,
        epochs=epochs,
        validation_split=0.2,
        callbacks=callbacks,
        verbose=0,
    )
    history = {
        key: [float(v) for v in values]
        for key, values in fit.history.items()
        if key != "learning_rate"
    }
    best_epoch = int(np.argmin(history["val_loss"])) + 1

    def predict(data: Floats) -> tuple[Floats, Floats]:
        probabilities, embedding = exported.predict(data, batch_size=1000, verbose=0)
        return probabilities.astype(np.float32), embedding.astype(np.float32)

    return FittedModel(
        family=family,
        classes=classes,
        native=exported,
        probabilities=lambda data: predict(data)[0],
        embedding=lambda data: predict(data)[1],
        history=history,
        best_epoch=best_epoch,
        epochs_run=len(history["loss"]),
        params={
            "epochs": epochs,
            "batch_size": recipe.batch_size,
            "validation_split": 0.2,
            "early_stopping": {"monitor": "val_loss", "patience": stopper.patience},
            "layers": [layer.__class__.__name__ for layer in exported.layers],
            "parameters": int(exported.count_params()),
            "augmentation": None if augmentation is None else asdict(augmentation),
            "device": device,
        },
        seconds=round(time.perf_counter() - started, 2),
    )
