"""Which stored labels are probably wrong, and which tiles the model is least sure of: what a
person should look at first (models/<name>/<version>/review.json, read by the review console).

Confident learning (cleanlab's `find_label_issues`) needs each row's predicted probabilities from
a model that never saw that row, so every row is predicted by k-fold cross-validation. The model
is the scikit-learn family's pipeline (the same centring, a smaller MLP, a fixed epoch budget):
not the run's best model, but one fast enough to fit k times on 20,000 rows in about a minute
on two cores, and good enough that its confident disagreements with a label mean something.

Folds hold out whole sheets when the rows come from enough of them: a sheet's labels come from
its layout, so a layout mistake mislabels many rows of one sheet at once, and with those rows on
both sides of a fold the model learns the wrong label from the sheet's other rows and vouches
for it. Rows without a sheet (CSV, MNIST) are groups of one. When no split by sheet leaves every
class in every fold's training rows, the folds are stratified by row instead (`folds_by`).
"""

from __future__ import annotations

import time
import warnings
from typing import Any

import numpy as np
from numpy.typing import NDArray

from tessera.dataset import Dataset
from training.families.mlp import MLP_DEFAULTS, mlp_pipeline
from training.holdout import sheet_ids

# Fixed and modest: the review ranks rows, it does not compete for champion. 30 epochs are 2,000
# updates on a fold of 13,000 rows: 95.8% out-of-sample on 20,000 MNIST rows, and 85 of 100 rows
# given a wrong label at random among 5,000 flagged. Fitting longer learns the other folds' wrong
# labels: with 20 of sklearn's 1,000 first digits' "3"s labelled "8", 30 epochs rank 11 to 17 of
# them among the first 30 (seeds 0-2), 100 epochs 10 to 13. Labels wrong at random gain a little
# from longer fits (3% of the 1,797 digits: 38-42 of 53 flagged at 30 epochs, 44-48 at 300).
# Early stopping needs a stratified validation split that small classes cannot give.
REVIEW_MLP: dict[str, Any] = {
    "hidden_layer_sizes": (100,),
    "activation": MLP_DEFAULTS["activation"],
    "alpha": MLP_DEFAULTS["alpha"],
    "max_iter": 30,
}
MODEL_DESCRIPTION = (
    "a scikit-learn MLP (per-pixel centring, one hidden layer of "
    f"{REVIEW_MLP['hidden_layer_sizes'][0]} {REVIEW_MLP['activation']} units, "
    f"alpha {REVIEW_MLP['alpha']}, {REVIEW_MLP['max_iter']} epochs)"
)
BY_SHEET = "sheet"
BY_ROW = "row"

Probabilities = NDArray[np.float64]


def review_labels(
    data: Dataset, *, seed: int, folds: int = 3, max_rows: int = 20_000, limit: int = 500
) -> dict[str, Any]:
    """The review document (JSON-ready): suspected label errors ranked most suspicious first
    (`score` is 1 - the probability the model gives the stored label), then the least confident
    of the other rows (`score` is 1 - the top probability). Above `max_rows` a per-class sample
    drawn with `seed` is reviewed. One class, or a class with fewer rows than `folds`, gives
    empty lists and the reason under `skipped`."""
    started = time.perf_counter()
    index = sample_rows(data.y, max_rows=max_rows, folds=folds, seed=seed)
    y = data.y[index]
    classes, counts = np.unique(y, return_counts=True)
    document: dict[str, Any] = {
        "method": (
            "confident learning (cleanlab find_label_issues, self_confidence) on "
            f"{folds}-fold out-of-sample probabilities of {MODEL_DESCRIPTION}"
        ),
        "folds": folds,
        "rows": len(index),
        "rows_total": len(data),
        "sample": (
            None
            if len(index) == len(data)
            else f"{len(index)} of {len(data)} rows, drawn per class with seed {seed}"
        ),
        "classes": [str(label) for label in classes.tolist()],
    }
    rare = {str(c): int(n) for c, n in zip(classes, counts, strict=True) if n < folds}
    skipped = None
    if len(classes) < 2:
        skipped = f"one class only ({document['classes']}): there is no other label to suggest"
    elif rare:
        skipped = f"classes {rare} have fewer rows than the {folds} folds"
    if skipped is not None:
        return {
            **document,
            "skipped": skipped,
            "folds_by": None,
            "out_of_sample_accuracy": None,
            "label_issues_found": 0,
            "label_issues": [],
            "least_confident": [],
            "seconds": round(time.perf_counter() - started, 2),
        }
    x = data.x[index].astype(np.float32) / 255.0  # as Dataset.features(): [0, 1]
    sources = data.sources[index]
    labels = np.searchsorted(classes, y)
    folds_by, probabilities = out_of_sample(x, labels, sheet_ids(sources), folds=folds, seed=seed)
    issues = label_issues(labels, probabilities)
    listed = issues[:limit]
    document.update(
        folds_by=folds_by,
        out_of_sample_accuracy=round(float((probabilities.argmax(axis=1) == labels).mean()), 5),
        label_issues_found=len(issues),
        label_issues=[
            _entry(i, sources, y, classes, probabilities, 1 - probabilities[i, labels[i]])
            for i in listed.tolist()
        ],
        least_confident=[
            _entry(i, sources, y, classes, probabilities, 1 - probabilities[i].max())
            for i in least_confident(probabilities, exclude=listed, limit=limit).tolist()
        ],
        seconds=round(time.perf_counter() - started, 2),
    )
    return document


def sample_rows(y: NDArray[np.str_], *, max_rows: int, folds: int, seed: int) -> NDArray[np.int64]:
    """Every row up to `max_rows`; above it the same fraction of every class (at least `folds`
    rows of each, so a rare class is still reviewed), in the dataset's order."""
    if len(y) <= max_rows:
        return np.arange(len(y))
    rng = np.random.default_rng(seed)
    fraction = max_rows / len(y)
    chosen = []
    for label in np.unique(y):
        rows = np.flatnonzero(y == label)
        keep = min(len(rows), max(folds, round(len(rows) * fraction)))
        chosen.append(rng.permutation(rows)[:keep])
    return np.sort(np.concatenate(chosen))


def out_of_sample(
    x: NDArray[np.float32], labels: NDArray[np.int64], sheets: list[str], *, folds: int, seed: int
) -> tuple[str, Probabilities]:
    """How the folds were drawn (by sheet or by row), and each row's probabilities from the
    fold whose model did not see it, columns in class order."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import cross_val_predict

    folds_by, splits = fold_splits(labels, sheets, folds=folds, seed=seed)
    model = mlp_pipeline(seed=seed, early_stopping=False, **REVIEW_MLP)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # the epoch budget is the point
        probabilities = cross_val_predict(model, x, labels, cv=splits, method="predict_proba")
    return folds_by, np.asarray(probabilities, dtype=np.float64)


def fold_splits(
    labels: NDArray[np.int64], sheets: list[str], *, folds: int, seed: int
) -> tuple[str, list[tuple[NDArray[np.int64], NDArray[np.int64]]]]:
    """Stratified folds of whole sheets when every class is in every fold's training rows
    (each fold's model must be able to give a row its stored label), else stratified by row."""
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    classes = len(np.unique(labels))
    if len(set(sheets) - {""}) >= folds:
        groups = np.array([sheet or f"row:{i}" for i, sheet in enumerate(sheets)])
        splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
        with warnings.catch_warnings():  # "the least populated class has fewer than n_splits"
            warnings.simplefilter("ignore", UserWarning)
            splits = list(splitter.split(np.zeros(len(labels)), labels, groups))
        if all(len(np.unique(labels[train])) == classes for train, _ in splits):
            return BY_SHEET, splits
    splitter_by_row = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return BY_ROW, list(splitter_by_row.split(np.zeros(len(labels)), labels))


def label_issues(labels: NDArray[np.int64], probabilities: Probabilities) -> NDArray[np.int64]:
    """Rows whose stored label confident learning doubts, most doubtful first."""
    from cleanlab.filter import find_label_issues

    # n_jobs=1: its worker pool costs more than it saves at this size, and the job owns no pool.
    ranked = find_label_issues(
        labels=labels,
        pred_probs=probabilities,
        return_indices_ranked_by="self_confidence",
        n_jobs=1,
    )
    return np.asarray(ranked, dtype=np.int64)


def least_confident(
    probabilities: Probabilities, *, exclude: NDArray[np.int64], limit: int
) -> NDArray[np.int64]:
    """The rows with the lowest top probability (ties in row order), `exclude` left out."""
    order = np.argsort(probabilities.max(axis=1), kind="stable")
    return order[~np.isin(order, exclude)][:limit]


def _entry(
    row: int,
    sources: NDArray[np.str_],
    y: NDArray[np.str_],
    classes: NDArray[np.str_],
    probabilities: Probabilities,
    score: float,
) -> dict[str, Any]:
    suggested = int(probabilities[row].argmax())
    return {
        "tile": str(sources[row]),
        "label": str(y[row]),
        "suggested": str(classes[suggested]),
        "score": round(float(np.clip(score, 0.0, 1.0)), 6),
        "confidence": round(float(probabilities[row, suggested]), 6),
    }
