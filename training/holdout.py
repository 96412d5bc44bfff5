"""The held-out rows a run is judged on: the source's own test split when it has one (MNIST),
else a stratified split, with enough rows per class for it and the CV folds."""

from __future__ import annotations

import hashlib

import numpy as np
from numpy.typing import NDArray
from sklearn.model_selection import train_test_split

from tessera.dataset import Dataset
from training.data import TrainingData
from training.errors import TrainingError
from training.families.base import CV_FOLDS


def check_classes(y: NDArray[np.str_], *, minimum: int) -> None:
    """Every class needs enough rows for a stratified hold-out and the CV folds."""
    if len(y) == 0:
        raise TrainingError("empty_dataset", "the dataset has no rows")
    labels, counts = np.unique(y, return_counts=True)
    if len(labels) < 2:
        raise TrainingError(
            "one_class", f"the dataset has one class only ({labels.tolist()}); need two or more"
        )
    rare = {str(label): int(count) for label, count in zip(labels, counts, strict=True)}
    rare = {label: count for label, count in rare.items() if count < minimum}
    if rare:
        raise TrainingError(
            "class_too_small",
            f"classes {rare} have fewer than {minimum} examples "
            f"(the {CV_FOLDS}-fold cross-validation and the held-out split need {minimum})",
        )


def held_out(
    data: TrainingData, *, test_size: float, seed: int, search: bool
) -> tuple[Dataset, Dataset]:
    """(train, test): the source's own test split when it has one, else a stratified split."""
    check_classes(data.train.y, minimum=CV_FOLDS)
    if data.test is not None:
        return data.train, data.test
    index = np.arange(len(data.train))
    train_index, test_index = train_test_split(
        index, test_size=test_size, random_state=seed, stratify=data.train.y
    )
    train = _rows(data.train, np.sort(train_index))
    if search:
        # The CV folds see only the training part: each class needs a row in every fold.
        check_classes(train.y, minimum=CV_FOLDS)
    return train, _rows(data.train, np.sort(test_index))


def _rows(dataset: Dataset, index: NDArray[np.int64]) -> Dataset:
    return Dataset(
        x=dataset.x[index], y=dataset.y[index], sources=dataset.sources[index], fingerprint=""
    )


def evaluation_fingerprint(test: Dataset) -> str:
    digest = hashlib.sha256(test.x.tobytes())
    digest.update("\n".join(test.y.tolist()).encode())
    return digest.hexdigest()[:16]
