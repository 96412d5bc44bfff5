"""The model families from the reference notebooks, fitted with fixed seeds and early stopping.

- `mlp`: scikit-learn StandardScaler + MLPClassifier, optionally hyper-parameter searched over the
  reference grid (successive halving by default, or the exhaustive 720-fit grid search);
- `dense`: Keras Dense 128 relu, Dense 32 relu, Dense N softmax (Adam, sparse cross-entropy);
- `cnn`: Keras Conv2D(30, 3x3), MaxPooling, Dropout(0.25), Dense, softmax (RMSprop, one-hot);
- `cnn-strong`: two batch-normalized conv blocks, for MNIST's 99.3% goal, fitted on randomly
  shifted, rotated and zoomed digits so it also reads cells cut from real sheets.

Every family returns a `FittedModel`: native probabilities and embedding, per-epoch curves,
the best epoch (the one kept), the hyper-parameters used, and the search table when one ran.
"""

from __future__ import annotations

import contextlib
import copy
import os
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import log_loss
from sklearn.model_selection import train_test_split

from training.data import TrainingError

FAMILIES = ("mlp", "dense", "cnn", "cnn-strong")
CV_FOLDS = 5
# Early stopping: the validation loss must drop by this much to count as better (like Keras'
# min_delta); smaller gains on small data go on for hundreds of epochs without changing accuracy.
MIN_IMPROVEMENT = 1e-3

# The reference notebook's grid: 4 x 3 x 4 x 3 = 144 candidates, 720 fits with 5-fold CV.
REFERENCE_GRID: dict[str, list[Any]] = {
    "mlp__hidden_layer_sizes": [(50,), (100,), (200,), (300,)],
    "mlp__activation": ["relu", "tanh", "logistic"],
    "mlp__alpha": [1e-4, 1e-3, 1e-2, 0.5],
    "mlp__max_iter": [200, 300, 400],
}
# Defaults when no search runs, measured on full MNIST (test accuracy): alpha 1e-2 98.16%,
# 1e-4 97.70% (early stopping on validation loss stops it too soon). Searches on small subsets
# prefer alpha 0.5, which underfits the full 60k rows (96.8% validation after 20 epochs).
MLP_DEFAULTS: dict[str, Any] = {
    "hidden_layer_sizes": (300,),
    "activation": "relu",
    "alpha": 1e-2,
    "max_iter": 400,
}

Floats = NDArray[np.float32]
Labels = NDArray[np.str_]


def log(message: str) -> None:
    """Progress goes to stderr: stdout's last line is the run's JSON result."""
    print(message, file=sys.stderr, flush=True)


@dataclass
class FitOptions:
    seed: int = 0
    epochs: int | None = None  # overrides each family's epoch budget (tests, quick runs)
    search: str = "none"  # none | halving | exhaustive (mlp only)
    search_rows: int = 10_000
    jobs: int = 2
    patience: int | None = None


@dataclass
class SearchReport:
    strategy: str
    rows: int
    fits: int
    seconds: float
    best_params: dict[str, Any]
    best_cv_accuracy: float
    table: list[dict[str, Any]]


@dataclass
class FittedModel:
    family: str
    classes: list[str]
    native: Any
    probabilities: Callable[[Floats], Floats]
    embedding: Callable[[Floats], Floats]
    history: dict[str, list[float]]
    best_epoch: int
    epochs_run: int
    params: dict[str, Any]
    seconds: float = 0.0
    search: SearchReport | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def class_index(classes: list[str], y: Labels) -> NDArray[np.int64]:
    return np.searchsorted(np.asarray(classes), y).astype(np.int64)


def validation_split(
    x: Floats, y: Labels, *, fraction: float, seed: int
) -> tuple[Floats, Floats, Labels, Labels]:
    classes = len(np.unique(y))
    size = max(round(len(y) * fraction), classes)
    x_fit, x_val, y_fit, y_val = train_test_split(
        x, y, test_size=size, random_state=seed, stratify=y
    )
    return x_fit, x_val, y_fit, y_val


# --- scikit-learn MLP --------------------------------------------------------------------------


def input_scaler() -> Any:
    """Per-pixel centring, inside the pipeline so the exported model carries its preprocessing.

    Not unit variance: MNIST's border pixels are almost always 0, so dividing by their tiny
    standard deviation turns a stray test pixel into a huge input (measured on 15k MNIST rows:
    95.9% with per-pixel scaling against 96.7% without, and five times the fit time).
    """
    from sklearn.preprocessing import StandardScaler

    return StandardScaler(with_std=False)


def _mlp_pipeline(*, seed: int, early_stopping: bool, **params: Any) -> Any:
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import Pipeline

    return Pipeline(
        [
            ("scale", input_scaler()),
            (
                "mlp",
                MLPClassifier(random_state=seed, early_stopping=early_stopping, **params),
            ),
        ]
    )


def search_mlp(x: Floats, y: Labels, *, strategy: str, options: FitOptions) -> SearchReport:
    """Search the reference grid on (a subset of) the training rows.

    `exhaustive` is the reference: GridSearchCV over all 144 candidates, 720 fits, each run to
    its max_iter. `halving` reaches the same accuracy much faster: early stopping makes every fit
    stop at its best iteration, so max_iter is only a cap and its three values collapse into the
    largest; successive halving then races the 48 remaining candidates on growing subsets.
    """
    from sklearn.experimental import enable_halving_search_cv  # noqa: F401
    from sklearn.model_selection import GridSearchCV, HalvingGridSearchCV, StratifiedKFold

    if len(y) > options.search_rows:
        x, _, y, _ = train_test_split(
            x, y, train_size=options.search_rows, random_state=options.seed, stratify=y
        )
    classes = len(np.unique(y))
    cv = StratifiedKFold(n_splits=CV_FOLDS, shuffle=True, random_state=options.seed)
    started = time.perf_counter()
    search: Any
    if strategy == "exhaustive":
        search = GridSearchCV(
            _mlp_pipeline(seed=options.seed, early_stopping=False),
            REFERENCE_GRID,
            cv=cv,
            n_jobs=options.jobs,
            refit=False,
            verbose=1,
        )
    elif strategy == "halving":
        grid = {k: v for k, v in REFERENCE_GRID.items() if k != "mlp__max_iter"}
        # Each round-0 fit must still hold out a stratified early-stopping split.
        min_resources = min(len(y), max(len(y) // 27, 50 * classes))
        search = HalvingGridSearchCV(
            _mlp_pipeline(
                seed=options.seed,
                early_stopping=True,
                max_iter=max(REFERENCE_GRID["mlp__max_iter"]),
            ),
            grid,
            cv=cv,
            factor=3,
            resource="n_samples",
            min_resources=min_resources,
            n_jobs=options.jobs,
            refit=False,
            random_state=options.seed,
            verbose=1,
        )
    else:
        raise ValueError(f"unknown search strategy {strategy!r}")
    log(f"search: {strategy} over the reference grid on {len(y)} rows, {CV_FOLDS}-fold CV")
    with warnings.catch_warnings(), contextlib.redirect_stdout(sys.stderr):
        warnings.simplefilter("ignore", ConvergenceWarning)
        search.fit(x, y)
    seconds = time.perf_counter() - started
    results = search.cv_results_
    fits = int(len(results["params"]) * CV_FOLDS)
    table = []
    for index, params in enumerate(results["params"]):
        row = {name.removeprefix("mlp__"): _plain(value) for name, value in params.items()}
        row.update(
            cv_accuracy=round(float(results["mean_test_score"][index]), 5),
            cv_std=round(float(results["std_test_score"][index]), 5),
            fit_seconds=round(float(results["mean_fit_time"][index]), 3),
            rank=int(results["rank_test_score"][index]),
        )
        if "n_resources" in results:
            row["rows"] = int(results["n_resources"][index])
            row["round"] = int(results["iter"][index])
        table.append(row)
    # Halving ranks the last round first; within a round, by score.
    table.sort(key=lambda row: (-row.get("round", 0), row["rank"]))
    best = {name.removeprefix("mlp__"): value for name, value in search.best_params_.items()}
    best.setdefault("max_iter", max(REFERENCE_GRID["mlp__max_iter"]))
    log(f"search: best {best} cv accuracy {search.best_score_:.4f} in {seconds:.1f}s ({fits} fits)")
    return SearchReport(
        strategy=strategy,
        rows=len(y),
        fits=fits,
        seconds=round(seconds, 2),
        best_params=best,
        best_cv_accuracy=float(search.best_score_),
        table=table,
    )


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, np.generic):
        return value.item()
    return value


def fit_mlp(x: Floats, y: Labels, options: FitOptions, params: dict[str, Any]) -> FittedModel:
    """Epoch by epoch (partial_fit) so the curves have train and validation loss and accuracy,
    early stopping watches the validation loss, and the best epoch's weights are kept."""
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import Pipeline

    from training.export import mlp_embedding

    started = time.perf_counter()
    x_fit, x_val, y_fit, y_val = validation_split(x, y, fraction=0.1, seed=options.seed)
    classes = np.unique(y)
    scaler = input_scaler().fit(x_fit)
    xs_fit, xs_val = scaler.transform(x_fit), scaler.transform(x_val)
    # Train-set curves on a fixed sample: a full pass per epoch would double the cost.
    sample = np.random.default_rng(options.seed).permutation(len(y_fit))[:10_000]
    mlp = MLPClassifier(
        hidden_layer_sizes=tuple(params["hidden_layer_sizes"]),
        activation=params["activation"],
        alpha=float(params["alpha"]),
        random_state=options.seed,
    )
    max_epochs = options.epochs or int(params.get("max_iter", 200))
    patience = options.patience or 10
    history: dict[str, list[float]] = {
        "loss": [],
        "val_loss": [],
        "accuracy": [],
        "val_accuracy": [],
    }
    best_loss, best_epoch, best_weights, waited = np.inf, 0, None, 0
    for epoch in range(1, max_epochs + 1):
        mlp.partial_fit(xs_fit, y_fit, classes=classes)
        for prefix, xs, ys in (("", xs_fit[sample], y_fit[sample]), ("val_", xs_val, y_val)):
            proba = mlp.predict_proba(xs)
            history[prefix + "loss"].append(float(log_loss(ys, proba, labels=mlp.classes_)))
            history[prefix + "accuracy"].append(
                float((mlp.classes_[proba.argmax(axis=1)] == ys).mean())
            )
        val_loss = history["val_loss"][-1]
        if val_loss < best_loss - MIN_IMPROVEMENT:
            best_loss, best_epoch, waited = val_loss, epoch, 0
            best_weights = (copy.deepcopy(mlp.coefs_), copy.deepcopy(mlp.intercepts_))
        else:
            waited += 1
        if epoch == 1 or epoch % 5 == 0:
            log(
                f"mlp epoch {epoch}/{max_epochs} loss={history['loss'][-1]:.4f} "
                f"val_loss={val_loss:.4f} val_accuracy={history['val_accuracy'][-1]:.4f}"
            )
        if waited >= patience:
            log(f"mlp: early stop at epoch {epoch}, keeping epoch {best_epoch}")
            break
    if best_weights is not None:
        mlp.coefs_, mlp.intercepts_ = best_weights
    pipeline = Pipeline([("scale", scaler), ("mlp", mlp)])
    return FittedModel(
        family="mlp",
        classes=[str(c) for c in mlp.classes_],
        native=pipeline,
        probabilities=lambda data: pipeline.predict_proba(data).astype(np.float32),
        embedding=lambda data: mlp_embedding(pipeline, data),
        history=history,
        best_epoch=best_epoch,
        epochs_run=len(history["loss"]),
        params={**params, "hidden_layer_sizes": list(params["hidden_layer_sizes"])},
        seconds=round(time.perf_counter() - started, 2),
    )


# --- Keras -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Augmentation:
    """Random distortions of the training digits, applied only while fitting."""

    shift_pixels: int
    rotation_degrees: float
    zoom: float


# Cells cut from real sheets sit a pixel or two off MNIST's centre of mass, lean a little and
# vary in size. The job's 12-epoch champion (`tessera eval sheets`): 99.52% on the 5000-cell
# sheet, 98.49% on the generated sheets, 60/60 on the hand-drawn one; MNIST test 99.43%.
STRONG_AUGMENTATION = Augmentation(shift_pixels=2, rotation_degrees=10.0, zoom=0.1)


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
    # 12 epochs (the cosine schedule spans them): augmented, 8 reached only 99.26% on MNIST;
    # 12 reach 99.43% in 11 minutes on 2 shared cores.
    "cnn-strong": KerasRecipe(
        epochs=12, batch_size=128, one_hot=True, patience=4, augmentation=STRONG_AUGMENTATION
    ),
}


def augmentation_model(augmentation: Augmentation, *, seed: int) -> Any:
    """(n, 784) -> (n, 784) distorted copies in training mode, the identity otherwise.

    A model of its own in front of the shared layers, not part of them: the exported model never
    holds a random op, so its ONNX graph is deterministic and matches the native model exactly.
    """
    import keras
    from keras import layers

    side = 28
    return keras.Sequential(
        [
            keras.Input((side * side,)),
            layers.Reshape((side, side, 1)),
            layers.RandomTranslation(
                augmentation.shift_pixels / side,
                augmentation.shift_pixels / side,
                fill_mode="constant",
                seed=seed,
            ),
            layers.RandomRotation(
                augmentation.rotation_degrees / 360, fill_mode="constant", seed=seed + 1
            ),
            layers.RandomZoom(augmentation.zoom, fill_mode="constant", seed=seed + 2),
            layers.Reshape((side * side,)),
        ],
        name="augmentation",
    )


def _keras_models(
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

    inputs = keras.Input((784,), name="input")
    if family == "dense":
        x = layers.Flatten()(inputs)
        x = layers.Dense(128, activation="relu")(x)
        embedding = layers.Dense(32, activation="relu", name="embedding")(x)
        optimizer: Any = keras.optimizers.Adam()
        loss = "sparse_categorical_crossentropy"
    elif family == "cnn":
        x = layers.Reshape((28, 28, 1))(inputs)
        x = layers.Conv2D(30, (3, 3), activation="relu")(x)
        x = layers.MaxPooling2D((2, 2))(x)
        x = layers.Dropout(0.25)(x)
        x = layers.Flatten()(x)
        embedding = layers.Dense(128, activation="relu", name="embedding")(x)
        optimizer = keras.optimizers.RMSprop()
        loss = "categorical_crossentropy"
    elif family == "cnn-strong":
        x = layers.Reshape((28, 28, 1))(inputs)
        for filters in (32, 64):
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
            1e-3, decay_steps=max(1, steps_per_epoch * epochs), alpha=0.05
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
        fitting_inputs = keras.Input((784,), name="input")
        distorted = augmentation_model(augmentation, seed=seed)(fitting_inputs)
        trained = keras.Model(fitting_inputs, exported(distorted)[0])
    trained.compile(optimizer=optimizer, loss=loss, metrics=["accuracy"])
    return trained, exported


def fit_keras(family: str, x: Floats, y: Labels, options: FitOptions) -> FittedModel:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    started = time.perf_counter()
    recipe = KERAS_RECIPES[family]
    keras.utils.set_random_seed(options.seed)
    classes = [str(c) for c in np.unique(y)]
    # Keras' validation_split takes the last rows: shuffle first so it is a fair sample.
    order = np.random.default_rng(options.seed).permutation(len(y))
    x, targets = x[order], class_index(classes, y[order])
    if recipe.one_hot:
        targets = keras.utils.to_categorical(targets, len(classes))
    epochs = options.epochs or recipe.epochs
    steps = int(np.ceil(len(y) * 0.8 / recipe.batch_size))
    trained, exported = _keras_models(
        family,
        len(classes),
        steps_per_epoch=steps,
        epochs=epochs,
        augmentation=recipe.augmentation,
        seed=options.seed,
    )

    class Progress(keras.callbacks.Callback):  # type: ignore[misc]
        def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
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
            "augmentation": (None if recipe.augmentation is None else asdict(recipe.augmentation)),
        },
        seconds=round(time.perf_counter() - started, 2),
    )


def fit_family(family: str, x: Floats, y: Labels, options: FitOptions) -> FittedModel:
    if family == "mlp":
        report = None
        params = dict(MLP_DEFAULTS)
        if options.search != "none":
            report = search_mlp(x, y, strategy=options.search, options=options)
            params = dict(report.best_params)
        model = fit_mlp(x, y, options, params)
        model.search = report
        return model
    if family in KERAS_RECIPES:
        return fit_keras(family, x, y, options)
    raise TrainingError("unknown_family", f"{family!r} is not one of {', '.join(FAMILIES)}")
