"""What every model family shares: the fit options, the fitted model every family returns, and
the validation split each fit holds out."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sklearn.model_selection import train_test_split

CV_FOLDS = 5


# Early stopping: the validation loss must drop by this much to count as better (like Keras'
# min_delta); smaller gains on small data go on for hundreds of epochs without changing accuracy.
MIN_IMPROVEMENT = 1e-3


Floats = NDArray[np.float32]


Labels = NDArray[np.str_]


@dataclass
class FitOptions:
    seed: int = 0
    epochs: int | None = None  # overrides each family's epoch budget (tests, quick runs)
    search: str = "none"  # none | halving | exhaustive (mlp only)
    search_rows: int = 10_000
    search_grid: str = "reference"  # or "quick" (training.families.mlp.GRIDS)
    # Set by the job for a fanned-out exhaustive search (training.fanout): rows -> report.
    search_runner: Callable[[Floats, Labels], SearchReport] | None = None
    jobs: int = 2
    patience: int | None = None
    base: Any = None  # transfer: the champion to transfer from (families.transfer.BaseModel)
    # Keras families: a named augmentation instead of the recipe's (AUGMENTATIONS; benchmarks).
    augmentation: str | None = None
    # Keras families: called after every epoch with (epoch, seconds spent fitting so far, a
    # function giving the current weights' probabilities); its own time is not counted.
    epoch_end: Callable[[int, float, Callable[[Floats], Floats]], None] | None = None


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
