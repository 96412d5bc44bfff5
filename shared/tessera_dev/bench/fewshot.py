"""Few examples of new symbols: `transfer` from a digit model against training from scratch.

- Column cross-validation on the hand-ruled seed sheet (rows x, y, z, t, 1..6, ten tiles each,
  cut by the pipeline): fold k holds out column k, one tile of every class, so every tile is
  tested once by a model that never saw it, and every family sees the same folds.
- A few-shot curve on classes the base never saw: a base trained on MNIST digits 0-4 only,
  heads for digits 5-9 from 10, 30 and 100 training digits per class, tested on all of MNIST's
  test digits 5-9; against the same families trained from scratch on the same rows.

Models are scored natively (the parity gate holds every export to the native model within
1e-4, `tessera bench training` checks it on MNIST).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from tessera.dataset import Dataset
from tessera.imaging.decode import decode_image
from tessera.imaging.normalize import to_vectors
from tessera.sheets.cutting import cut_sheet
from tessera_dev.evaluation.sheets import SEED_ROWS, SEED_SHEET

SHOTS = (10, 30, 100)


@dataclass(frozen=True)
class Tiles:
    x: NDArray[np.uint8]  # (n, 784)
    y: NDArray[np.str_]
    groups: NDArray[np.int64]  # the column each tile was cut from
    empty: int  # cells the cutting found no ink in (not in x)


def dataset(x: NDArray[np.uint8], y: NDArray[np.str_], name: str) -> Dataset:
    sources = np.asarray([f"{name}/{i}" for i in range(len(y))])
    digest = hashlib.sha256(x.tobytes() + "\0".join(y.tolist()).encode()).hexdigest()[:16]
    return Dataset(x=x, y=y, sources=sources, fingerprint=digest)


def seed_sheet_tiles(image: bytes, row_labels: tuple[str, ...] = SEED_ROWS) -> Tiles:
    """The seed sheet cut as Split cuts it (10 x 10, one label per row), column of every tile."""
    rows, cols = len(row_labels), 10
    cutting = cut_sheet(decode_image(image), rows, cols)
    normalized, present = cutting.normalized()
    index = np.flatnonzero(present)
    labels = np.asarray([row_labels[i // cols] for i in index])
    return Tiles(
        x=to_vectors(normalized[index]),
        y=labels,
        groups=(index % cols).astype(np.int64),
        empty=int((~present).sum()),
    )


def _fit(family: str, data: Dataset, options: Any) -> Any:
    from training.families import fit_family

    return fit_family(family, data.features(), data.y, options)


def _accuracy(model: Any, x: NDArray[np.uint8], y: NDArray[np.str_]) -> tuple[int, int]:
    probabilities = model.probabilities(x.astype(np.float32) / np.float32(255.0))
    predicted = np.asarray(model.classes)[probabilities.argmax(axis=1)]
    return int((predicted == y).sum()), len(y)


def column_cv(
    tiles: Tiles, families: list[str], *, base: Any = None, seed: int = 0
) -> dict[str, dict[str, Any]]:
    """Each family over the same leave-one-column-out folds: pooled accuracy and per fold."""
    from training.families.base import FitOptions

    results: dict[str, dict[str, Any]] = {}
    for family in families:
        folds = []
        for column in np.unique(tiles.groups):
            held = tiles.groups == column
            train = dataset(tiles.x[~held], tiles.y[~held], "seed")
            options = FitOptions(seed=seed, base=base if family == "transfer" else None)
            model = _fit(family, train, options)
            folds.append(_accuracy(model, tiles.x[held], tiles.y[held]))
        correct, total = (sum(part) for part in zip(*folds, strict=True))
        results[family] = {
            "accuracy": correct / total,
            "correct": correct,
            "tiles": total,
            "folds": [c / t for c, t in folds],
        }
    return results


def per_class_sample(y: NDArray[np.str_], count: int, *, seed: int) -> NDArray[np.int64]:
    """Indices of `count` rows of every class, drawn without replacement."""
    rng = np.random.default_rng(seed)
    picked = [
        rng.choice(np.flatnonzero(y == label), count, replace=False) for label in np.unique(y)
    ]
    return np.sort(np.concatenate(picked)).astype(np.int64)


def fewshot_curve(
    pool: Dataset,
    test: Dataset,
    families: list[str],
    *,
    base: Any,
    shots: tuple[int, ...] = SHOTS,
    repeats: int = 3,
) -> list[dict[str, Any]]:
    """Accuracy on `test` of every family trained on `shots` rows per class drawn from `pool`,
    the mean (and spread) over `repeats` draws; the same draws for every family."""
    from training.families.base import FitOptions

    rows = []
    for count in shots:
        scores: dict[str, list[float]] = {family: [] for family in families}
        for repeat in range(repeats):
            chosen = per_class_sample(pool.y, count, seed=repeat)
            train = dataset(pool.x[chosen], pool.y[chosen], f"shots-{count}-{repeat}")
            for family in families:
                options = FitOptions(seed=repeat, base=base if family == "transfer" else None)
                model = _fit(family, train, options)
                correct, total = _accuracy(model, test.x, test.y)
                scores[family].append(correct / total)
        rows.append(
            {
                "per_class": count,
                **{family: float(np.mean(values)) for family, values in scores.items()},
                "spread": {family: float(np.ptp(values)) for family, values in scores.items()},
            }
        )
    return rows


def plot_curve(rows: list[dict[str, Any]], families: list[str], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 4))
    shots = [row["per_class"] for row in rows]
    for family in families:
        label = family if family == "transfer" else f"{family} (from scratch)"
        axis.plot(shots, [100 * row[family] for row in rows], marker="o", label=label)
    axis.set_xscale("log")
    axis.set_xticks(shots, [str(s) for s in shots])
    axis.set_xlabel("training digits per class (5-9)")
    axis.set_ylabel("accuracy on MNIST test digits 5-9 (%)")
    axis.set_title("Few-shot: base trained on digits 0-4 only")
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def base_from_onnx(name: str, version: str, model: bytes) -> Any:
    """An exported model as a transfer base, the way `--base-model` loads a champion."""
    from training.families.transfer import BaseModel, base_session

    return BaseModel(name, version, model, base_session(name, version, model))


def bench_seed_cv(
    sheets_dir: Path, families: list[str], base: Any, *, seed: int = 0
) -> dict[str, Any] | None:
    """Column CV on the seed sheet, or None when the sheet is not there."""
    path = sheets_dir / SEED_SHEET
    if not path.exists():
        return None
    tiles = seed_sheet_tiles(path.read_bytes())
    if base is None:
        families = [family for family in families if family != "transfer"]
    return {
        "sheet": SEED_SHEET,
        "tiles": len(tiles.y),
        "empty_cells": tiles.empty,
        "classes": len(np.unique(tiles.y)),
        "folds": len(np.unique(tiles.groups)),
        "base": None if base is None else f"{base.name}/{base.version}",
        "families": column_cv(tiles, families, base=base, seed=seed),
    }


def digits(data: Dataset, wanted: set[str]) -> Dataset:
    keep = np.isin(data.y, sorted(wanted))
    return Dataset(data.x[keep], data.y[keep], data.sources[keep], data.fingerprint)


def bench_fewshot(
    mnist_dir: Path,
    *,
    base_family: str,
    families: list[str],
    repeats: int,
    out: Path,
    seed: int = 0,
    epochs: int | None = None,
) -> dict[str, Any]:
    """The base trained on MNIST 0-4 (train split), the curve on 5-9, the plot written."""
    import time

    from training.candidates import accuracy_of, train_family
    from training.data import from_mnist
    from training.families.base import FitOptions

    seen, unseen = set("01234"), set("56789")
    train, test = from_mnist(mnist_dir, split="train"), from_mnist(mnist_dir, split="test")
    started = time.perf_counter()
    options = FitOptions(seed=seed, epochs=epochs)
    base_test = digits(test, seen)
    model, onnx_bytes, _, probabilities = train_family(
        base_family, digits(train, seen), base_test, options
    )
    base_seconds = time.perf_counter() - started
    base = base_from_onnx("mnist-0-4", base_family, onnx_bytes)
    rows = fewshot_curve(
        digits(train, unseen), digits(test, unseen), families, base=base, repeats=repeats
    )
    plot = plot_curve(rows, families, out / "fewshot.png")
    return {
        "base": {
            "family": base_family,
            "classes": model.classes,
            "test_accuracy_0_4": accuracy_of(model.classes, probabilities, base_test.y),
            "seconds": round(base_seconds, 1),
        },
        "test_rows": int(np.isin(test.y, sorted(unseen)).sum()),
        "repeats": repeats,
        "families": families,
        "curve": rows,
        "plot": str(plot),
    }
