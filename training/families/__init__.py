"""The model families from the reference notebooks, fitted with fixed seeds and early stopping.

- `mlp`: scikit-learn StandardScaler + MLPClassifier, optionally hyper-parameter searched over the
  reference grid (successive halving by default, or the exhaustive 720-fit grid search);
- `dense`: Keras Dense 128 relu, Dense 32 relu, Dense N softmax (Adam, sparse cross-entropy);
- `cnn`: Keras Conv2D(30, 3x3), MaxPooling, Dropout(0.25), Dense, softmax (RMSprop, one-hot);
- `cnn-strong`: two batch-normalized conv blocks, for MNIST's 99.5% goal, fitted on digits
  randomly shifted, rotated, zoomed, sheared, elastically distorted and drawn with thicker or
  thinner strokes, so it also reads other writers' cells cut from real sheets;
- `transfer`: a new head on a champion's embedding (`--base-model`), for new symbols from a few
  examples.

Every family returns a `FittedModel`: native probabilities and embedding, per-epoch curves,
the best epoch (the one kept), the hyper-parameters used, and the search table when one ran.
"""

from __future__ import annotations

from tessera.config import MODEL_FAMILIES
from training.errors import TrainingError
from training.families.base import CV_FOLDS, FitOptions, FittedModel, Floats, Labels, SearchReport
from training.families.keras import KERAS_RECIPES, fit_keras
from training.families.mlp import MLP_DEFAULTS, fit_mlp, search_mlp
from training.families.transfer import fit_transfer

__all__ = [
    "CV_FOLDS",
    "FAMILIES",
    "TRANSFER",
    "FitOptions",
    "FittedModel",
    "SearchReport",
    "fit_family",
]

FAMILIES = MODEL_FAMILIES
# Trains on a champion's features (--base-model); in `all` when a base model is given.
TRANSFER = "transfer"


def fit_family(family: str, x: Floats, y: Labels, options: FitOptions) -> FittedModel:
    if family == "mlp":
        report = None
        params = dict(MLP_DEFAULTS)
        if options.search_runner is not None:
            report = options.search_runner(x, y)
            params = dict(report.best_params)
        elif options.search != "none":
            report = search_mlp(x, y, strategy=options.search, options=options)
            params = dict(report.best_params)
        model = fit_mlp(x, y, options, params)
        model.search = report
        return model
    if family in KERAS_RECIPES:
        return fit_keras(family, x, y, options)
    if family == TRANSFER:
        return fit_transfer(x, y, options)
    raise TrainingError("unknown_family", f"{family!r} is not one of {', '.join(FAMILIES)}")
