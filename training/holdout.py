"""The held-out rows a run is judged on, and how they were chosen.

Tiles cut from one sheet were written by one hand at one time: a random split of rows puts
that writer on both sides and flatters the model. So rows from sheets are held out *by sheet*
(a stratified group split: no sheet is in both parts, every class in both). MNIST keeps its own
test split, whose writers are not among its training writers. CSV rows have no sheets and keep
the stratified row split; so does a dataset whose rows come from one sheet, or whose classes sit
on too few sheets for a split by sheet, with a warning naming why.
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sklearn.model_selection import StratifiedGroupKFold, train_test_split

from tessera.config import PIPELINE
from tessera.dataset import Dataset
from training.data import TrainingData
from training.errors import TrainingError
from training.families.base import CV_FOLDS

BY_SHEET = "by_sheet"
MNIST_TEST = "mnist_test"
BY_ROW = "by_row"
# Each class needs a few training rows for the families' stratified validation split.
TRAIN_MINIMUM = 2


@dataclass(frozen=True)
class Holdout:
    """(train, test) and how they were split: `method` is by_sheet, mnist_test or by_row."""

    train: Dataset
    test: Dataset
    method: str
    description: str
    warnings: tuple[str, ...] = field(default=())

    def as_dict(self) -> dict[str, Any]:
        train_sheets = set(sheet_ids(self.train.sources)) - {""}
        test_sheets = set(sheet_ids(self.test.sources)) - {""}
        total = len(self.train) + len(self.test)
        return {
            "method": self.method,
            "description": self.description,
            "warnings": list(self.warnings),
            "train_sheets": len(train_sheets),
            "test_sheets": len(test_sheets),
            "sheets_in_both": len(train_sheets & test_sheets),
            "test_fraction": round(len(self.test) / total, 4) if total else 0.0,
        }


def sheet_of(source: str) -> str:
    """`tiles/<dataset>/<sheet-id>/<cell>.png` -> `<dataset>/<sheet-id>`; "" for other rows
    (CSV lines, MNIST rows)."""
    parts = source.split("/")
    if source.startswith(PIPELINE.prefixes.tiles) and len(parts) >= 4 and parts[1] and parts[2]:
        return f"{parts[1]}/{parts[2]}"
    return ""


def sheet_ids(sources: NDArray[np.str_]) -> list[str]:
    return [sheet_of(str(source)) for source in sources.tolist()]


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


def held_out(data: TrainingData, *, test_size: float, seed: int, search: bool) -> Holdout:
    """The source's own test split when it has one (MNIST), else by sheet, else by row."""
    check_classes(data.train.y, minimum=CV_FOLDS)
    if data.test is not None:
        return Holdout(
            data.train,
            data.test,
            MNIST_TEST,
            "MNIST's own test split (its writers are not among the training split's)",
        )
    dataset = data.train
    sheets = sheet_ids(dataset.sources)
    distinct = sorted(set(sheets) - {""})
    # The CV folds of a search see only the training part: each class needs a row in every fold.
    minimum = CV_FOLDS if search else TRAIN_MINIMUM
    if not distinct:
        kinds = sorted({source.split(":", 1)[0].upper() for source in data.sources})
        holdout = _row_split(
            dataset,
            test_size,
            seed,
            f"by row (stratified): {' and '.join(kinds)} rows have no sheets",
        )
    elif len(distinct) == 1:
        warning = (
            f"every row from sheets comes from one sheet ({distinct[0]}): no sheet can be held "
            "out, so the held-out rows share their writer with the training rows and the "
            "accuracy is optimistic for other hands; split by row instead"
        )
        holdout = _row_split(dataset, test_size, seed, f"by row (stratified): {warning}", warning)
    else:
        holdout = _sheet_split(dataset, sheets, test_size, seed, minimum)
    if search:
        check_classes(holdout.train.y, minimum=CV_FOLDS)
    return holdout


def _row_split(
    dataset: Dataset, test_size: float, seed: int, description: str, *warning: str
) -> Holdout:
    """Today's split: stratified by class, rows drawn at random (the same rows for the same
    data and seed as before sheets were taken into account)."""
    index = np.arange(len(dataset))
    train_index, test_index = train_test_split(
        index, test_size=test_size, random_state=seed, stratify=dataset.y
    )
    return Holdout(
        _rows(dataset, np.sort(train_index)),
        _rows(dataset, np.sort(test_index)),
        BY_ROW,
        description,
        tuple(warning),
    )


def _sheet_split(
    dataset: Dataset, sheets: list[str], test_size: float, seed: int, minimum: int
) -> Holdout:
    """Whole sheets held out: one fold of a stratified group k-fold, the fold closest to
    `test_size` among those that leave every class in both parts. Rows without a sheet (CSV or
    MNIST merged in) are groups of one, so they are split by row."""
    y = dataset.y
    groups = np.array([sheet or f"row:{i}" for i, sheet in enumerate(sheets)])
    labels = np.unique(y)
    folds = min(max(2, round(1 / test_size)), len(np.unique(groups)))
    best: tuple[float, NDArray[np.int64], NDArray[np.int64]] | None = None
    short: dict[str, int] = {}
    for n_splits in range(folds, 1, -1):
        splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
        with warnings.catch_warnings():  # "the least populated class has fewer than n_splits"
            warnings.simplefilter("ignore", UserWarning)
            candidates = list(splitter.split(np.zeros(len(y)), y, groups))
        for train_index, test_index in candidates:
            lacking = _lacking(y[train_index], y[test_index], labels, minimum)
            for label in lacking:
                short[label] = short.get(label, 0) + 1
            if lacking:
                continue
            distance = abs(len(test_index) / len(y) - test_size)
            if best is None or distance < best[0]:
                best = (distance, np.sort(train_index), np.sort(test_index))
        if best is not None:
            break
    if best is None:
        warning = f"{_why_not_by_sheet(y, sheets, labels, short)}; split by row instead"
        return _row_split(dataset, test_size, seed, f"by row (stratified): {warning}", warning)
    _, train_index, test_index = best
    held = sorted({sheets[i] for i in test_index.tolist()} - {""})
    loose = sum(1 for sheet in sheets if not sheet)
    description = (
        f"by sheet (stratified group split): {len(held)} of {len(set(sheets) - {''})} sheets "
        f"held out ({len(test_index)} of {len(y)} rows); no sheet is in both parts"
    )
    if loose:
        description += f"; {loose} rows without a sheet (CSV, MNIST) were split by row"
    return Holdout(_rows(dataset, train_index), _rows(dataset, test_index), BY_SHEET, description)


def _lacking(
    y_train: NDArray[np.str_], y_test: NDArray[np.str_], labels: NDArray[np.str_], minimum: int
) -> list[str]:
    """The classes a candidate split leaves short: too few training rows, or none held out."""
    train_labels, train_counts = np.unique(y_train, return_counts=True)
    in_train = dict(zip(train_labels.tolist(), train_counts.tolist(), strict=True))
    in_test = set(y_test.tolist())
    return [
        str(label)
        for label in labels.tolist()
        if in_train.get(label, 0) < minimum or label not in in_test
    ]


def _why_not_by_sheet(
    y: NDArray[np.str_], sheets: list[str], labels: NDArray[np.str_], short: dict[str, int]
) -> str:
    """The warning of a split by sheet that could not be had, naming the classes to blame."""
    groups: dict[str, set[str]] = {str(label): set() for label in labels.tolist()}
    for label, sheet in zip(y.tolist(), sheets, strict=True):
        groups[label].add(sheet or "(rows without a sheet)")
    single = {label: sorted(found)[0] for label, found in groups.items() if len(found) < 2}
    if single:
        named = ", ".join(f"{label!r} (only on {sheet})" for label, sheet in sorted(single.items()))
        return (
            f"a split by sheet would leave class(es) {named} out of the training or the "
            "held-out part"
        )
    worst = sorted(short, key=lambda label: (-short[label], label))[:5]
    named = ", ".join(repr(label) for label in worst)
    return (
        f"no split by sheet keeps every class in both parts: class(es) {named} are on too few "
        "sheets"
    )


def _rows(dataset: Dataset, index: NDArray[np.int64]) -> Dataset:
    return Dataset(
        x=dataset.x[index], y=dataset.y[index], sources=dataset.sources[index], fingerprint=""
    )


def evaluation_fingerprint(test: Dataset) -> str:
    digest = hashlib.sha256(test.x.tobytes())
    digest.update("\n".join(test.y.tolist()).encode())
    return digest.hexdigest()[:16]
