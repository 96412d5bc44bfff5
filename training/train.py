"""The training job's entry point: the same command runs in the container and locally.

    python -m training.train --dataset digits [--dataset more] [--model-name digits]

Reads the datasets from the bucket (TESSERA_BUCKET), fits the model, exports ONNX, checks the
export against the native model, writes the version to the registry and promotes it when it is
at least as accurate as the champion on the same held-out data.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from tessera.dataset import Dataset, DatasetError, load_dataset, merge
from tessera.registry import METRICS_FILE, MODEL_FILE, ModelRegistry, new_version
from tessera.serving import OnnxClassifier
from tessera.sheets import validate_dataset_name
from tessera.storage import ObjectStore
from training.export import sklearn_to_onnx

PARITY_TOLERANCE = 1e-4


class TrainingError(Exception):
    """The job cannot produce a model; the message says why."""


@dataclass(frozen=True)
class Split:
    x_train: NDArray[np.float32]
    y_train: NDArray[np.str_]
    x_test: NDArray[np.float32]
    y_test: NDArray[np.str_]


def split_dataset(dataset: Dataset, *, test_size: float, seed: int) -> Split:
    labels, counts = np.unique(dataset.y, return_counts=True)
    if len(labels) < 2:
        raise TrainingError(f"the dataset has one class only ({labels.tolist()}); need two or more")
    if counts.min() < 2:
        rare = labels[counts < 2].tolist()
        raise TrainingError(f"classes {rare} have fewer than 2 examples; cannot hold any out")
    x = dataset.features()
    x_train, x_test, y_train, y_test = train_test_split(
        x, dataset.y, test_size=test_size, random_state=seed, stratify=dataset.y
    )
    return Split(x_train, y_train, x_test, y_test)


def fit_mlp(split: Split, *, seed: int) -> Pipeline:
    # The scaler lives inside the pipeline, so the exported model carries its preprocessing.
    model = Pipeline(
        [
            ("scale", StandardScaler()),
            (
                "mlp",
                MLPClassifier(
                    hidden_layer_sizes=(100,),
                    alpha=1e-3,
                    early_stopping=True,
                    max_iter=200,
                    random_state=seed,
                ),
            ),
        ]
    )
    model.fit(split.x_train, split.y_train)
    return model


def check_parity(
    native: NDArray[np.float32], exported: NDArray[np.float32]
) -> dict[str, float | int | bool]:
    max_diff = float(np.abs(native - exported).max()) if native.size else 0.0
    disagreements = int((native.argmax(axis=1) != exported.argmax(axis=1)).sum())
    return {
        "max_probability_difference": max_diff,
        "argmax_disagreements": disagreements,
        "passed": disagreements == 0 and max_diff <= PARITY_TOLERANCE,
    }


def accuracy_of(
    classes: list[str], probabilities: NDArray[np.float32], y: NDArray[np.str_]
) -> float:
    predicted = np.asarray(classes)[probabilities.argmax(axis=1)]
    return float((predicted == y).mean())


def run(args: argparse.Namespace) -> dict[str, Any]:
    store = ObjectStore(bucket=args.bucket)
    names = [validate_dataset_name(name) for name in args.dataset]
    model_name = validate_dataset_name(args.model_name or names[0])
    registry = ModelRegistry(store, model_name)

    started = time.perf_counter()
    try:
        dataset = merge([load_dataset(store, name) for name in names])
    except DatasetError as error:
        raise TrainingError(str(error)) from None
    split = split_dataset(dataset, test_size=args.test_size, seed=args.seed)
    print(f"training on {len(split.y_train)} rows, testing on {len(split.y_test)}", file=sys.stderr)

    model = fit_mlp(split, seed=args.seed)
    classes = [str(c) for c in model.classes_]
    native = model.predict_proba(split.x_test).astype(np.float32)
    onnx_bytes = sklearn_to_onnx(model, classes=classes)
    exported = OnnxClassifier.from_bytes(onnx_bytes, name=model_name, version="candidate")
    parity = check_parity(native, exported.probabilities(split.x_test))
    if not parity["passed"]:
        raise TrainingError(f"the ONNX export disagrees with the native model: {parity}")

    accuracy = accuracy_of(classes, native, split.y_test)
    version = new_version(dataset.fingerprint)
    evaluation = {
        "datasets": names,
        "fingerprint": dataset.fingerprint,
        "test_rows": len(split.y_test),
    }

    champion = registry.champion()
    champion_accuracy = None
    if champion is not None:
        current = OnnxClassifier.from_bytes(
            registry.model_bytes(champion["version"]), name=model_name, version=champion["version"]
        )
        champion_accuracy = accuracy_of(
            current.classes, current.probabilities(split.x_test), split.y_test
        )
    promoted = champion_accuracy is None or accuracy >= champion_accuracy

    metrics = {
        "model": model_name,
        "version": version,
        "family": "mlp",
        "classes": classes,
        "test_accuracy": accuracy,
        "train_rows": len(split.y_train),
        "evaluation": evaluation,
        "parity": parity,
        "champion_before": champion["version"] if champion else None,
        "champion_accuracy_on_this_evaluation": champion_accuracy,
        "promoted": promoted,
        "seconds": round(time.perf_counter() - started, 3),
    }
    registry.put_artifact(version, MODEL_FILE, onnx_bytes, "application/octet-stream")
    registry.put_artifact(
        version, METRICS_FILE, json.dumps(metrics, indent=2).encode(), "application/json"
    )
    if promoted:
        registry.promote(version, accuracy=accuracy, evaluation=evaluation)
    return metrics


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m training.train", description=__doc__)
    parser.add_argument(
        "--dataset", action="append", required=True, help="dataset name; repeat to merge"
    )
    parser.add_argument("--model-name", help="registry name (default: the first dataset)")
    parser.add_argument("--bucket", default=os.environ.get("TESSERA_BUCKET"))
    parser.add_argument("--test-size", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if not args.bucket:
        parser.error("no bucket: pass --bucket or set TESSERA_BUCKET")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        metrics = run(args)
    except (TrainingError, ValueError) as error:
        print(json.dumps({"status": "failed", "error": str(error)}))
        return 1
    print(json.dumps({"status": "succeeded", **metrics}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
