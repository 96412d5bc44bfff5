"""The training job's entry point: the same command runs in the container and locally.

    python -m training.train --dataset digits [--dataset more] [--csv PATH] [--mnist DIR]
        [--family mlp|dense|cnn|cnn-strong|all] [--search none|halving|exhaustive]

Reads the rows (dataset shards in the bucket, CSV files, MNIST idx files), fits the chosen model
family, evaluates it on held-out rows, exports ONNX, checks the export against the native model,
writes the version (model, metrics, report, plots, config, embeddings) to the registry and
promotes it when it is at least as accurate as the champion on the same held-out rows.
`runs/<run-id>/status.json` says running, succeeded or failed (with the error) throughout.
The last line of stdout is the run's result as JSON.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
import traceback
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sklearn.model_selection import train_test_split

from tessera.config import PIPELINE
from tessera.dataset import Dataset
from tessera.registry import (
    CONFIG_FILE,
    METRICS_FILE,
    MODEL_FILE,
    REPORT_FILE,
    ModelRegistry,
    PromotionConflict,
    new_version,
    should_promote,
)
from tessera.serving import OnnxClassifier
from tessera.sheets import validate_dataset_name
from tessera.similarity import EMBEDDINGS_FILE, encode_index
from tessera.storage import ObjectStore
from training import report
from training.data import TrainingData, TrainingError, download_mnist, load_training_data
from training.export import keras_to_onnx, sklearn_to_onnx
from training.families import CV_FOLDS, FAMILIES, FitOptions, FittedModel, fit_family, log

PARITY_TOLERANCE = 1e-4
# The embedding is checked too, on a scale relative to its size: it feeds cosine similarity.
EMBEDDING_TOLERANCE = 1e-3


def run_id_now() -> str:
    return f"{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}-{uuid.uuid4().hex[:8]}"


def status_key(run_id: str) -> str:
    return f"{PIPELINE.prefixes.runs}{run_id}/status.json"


def write_status(store: ObjectStore | None, run_id: str, document: dict[str, Any]) -> None:
    if store is not None:
        store.put_json(
            status_key(run_id),
            {"run_id": run_id, "updated_at": datetime.now(UTC).isoformat(), **document},
        )


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


def check_parity(
    native: NDArray[np.float32], exported: NDArray[np.float32]
) -> dict[str, float | int | bool]:
    max_diff = float(np.abs(native - exported).max()) if native.size else 0.0
    disagreements = int((native.argmax(axis=1) != exported.argmax(axis=1)).sum())
    return {
        "max_probability_difference": max_diff,
        "argmax_disagreements": disagreements,
        "tolerance": PARITY_TOLERANCE,
        "passed": disagreements == 0 and max_diff <= PARITY_TOLERANCE,
    }


def accuracy_of(
    classes: list[str], probabilities: NDArray[np.float32], y: NDArray[np.str_]
) -> float:
    predicted = np.asarray(classes)[probabilities.argmax(axis=1)]
    return float((predicted == y).mean())


def export(model: FittedModel) -> bytes:
    if model.family == "mlp":
        return sklearn_to_onnx(model.native, classes=model.classes)
    return keras_to_onnx(model.native, classes=model.classes, family=model.family)


def onnx_outputs(
    classifier: OnnxClassifier, x: NDArray[np.float32], *, batch: int = 4096
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    probabilities, embeddings = [], []
    for start in range(0, len(x), batch):
        p, e = classifier.session.run(
            ["probabilities", "embedding"], {"input": x[start : start + batch]}
        )
        probabilities.append(np.asarray(p, np.float32))
        embeddings.append(np.asarray(e, np.float32))
    return np.concatenate(probabilities), np.concatenate(embeddings)


def embeddings_npz(embeddings: NDArray[np.float32], train: Dataset) -> bytes:
    """The training rows' embeddings through the exported model, for /similar."""
    return encode_index(embeddings, train.y, train.sources)


def train_family(
    family: str, train: Dataset, test: Dataset, options: FitOptions
) -> tuple[FittedModel, bytes, dict[str, Any], NDArray[np.float32]]:
    """Fit, export and gate one family: (model, onnx, parity, test probabilities)."""
    log(f"{family}: training on {len(train)} rows, testing on {len(test)}")
    x_train, x_test = train.features(), test.features()
    model = fit_family(family, x_train, train.y, options)
    native = model.probabilities(x_test)
    onnx_bytes = export(model)
    exported = OnnxClassifier.from_bytes(onnx_bytes, name=family, version="candidate")
    onnx_probabilities, onnx_embedding = onnx_outputs(exported, x_test)
    parity = check_parity(native, onnx_probabilities)
    native_embedding = model.embedding(x_test)
    scale = max(1.0, float(np.abs(native_embedding).max()))
    parity["max_embedding_difference"] = float(np.abs(native_embedding - onnx_embedding).max())
    parity["passed"] = bool(
        parity["passed"] and parity["max_embedding_difference"] <= EMBEDDING_TOLERANCE * scale
    )
    log(f"{family}: parity {parity}")
    if not parity["passed"]:
        raise TrainingError(
            "parity_failed", f"the {family} ONNX export disagrees with the native model: {parity}"
        )
    return model, onnx_bytes, parity, native


def artifacts_for(
    model: FittedModel,
    test: Dataset,
    probabilities: NDArray[np.float32],
    metrics: dict[str, Any],
) -> dict[str, bytes]:
    evaluation = report.evaluate(model.classes, probabilities, test.y)
    metrics["evaluation_details"] = evaluation.as_dict()
    predicted = np.asarray(model.classes)[probabilities.argmax(axis=1)]
    unit = "epoch"
    images = {
        "confusion.png": report.confusion_png(evaluation),
        "curves.png": report.curves_png(model.history, best_epoch=model.best_epoch, unit=unit),
        "misclassified.png": report.misclassified_png(
            test.features(), test.y, predicted, evaluation.misclassified
        ),
    }
    return {**images, REPORT_FILE: report.report_html(metrics, images).encode()}


def run(args: argparse.Namespace, store: ObjectStore, run_id: str) -> dict[str, Any]:
    started = time.perf_counter()
    names = [validate_dataset_name(name) for name in args.dataset]
    model_name = validate_dataset_name(args.model_name or (names[0] if names else "mnist"))
    registry = ModelRegistry(store, model_name)
    mnist_dir = args.mnist
    if args.mnist_download is not None:
        mnist_dir = download_mnist(args.mnist_download)
    data = load_training_data(
        store=store,
        datasets=names,
        csv_paths=args.csv,
        mnist_dir=mnist_dir,
        mnist_limit=args.mnist_limit,
    )
    train, test = held_out(
        data, test_size=args.test_size, seed=args.seed, search=args.search != "none"
    )
    options = FitOptions(
        seed=args.seed,
        epochs=args.epochs,
        search=args.search,
        search_rows=args.search_rows,
        jobs=args.jobs,
    )
    families = list(FAMILIES) if args.family == "all" else [args.family]
    evaluation = {
        "sources": data.sources,
        "fingerprint": data.train.fingerprint,
        "test_fingerprint": evaluation_fingerprint(test),
        "test_rows": len(test),
    }
    candidates = []
    for family in families:
        model, onnx_bytes, parity, probabilities = train_family(family, train, test, options)
        accuracy = accuracy_of(model.classes, probabilities, test.y)
        log(f"{family}: test accuracy {accuracy:.4f} in {model.seconds:.1f}s")
        candidates.append(Candidate(accuracy, model, onnx_bytes, parity, probabilities))
    # With --family all every family is registered; the most accurate competes for champion.
    candidates.sort(key=lambda candidate: -candidate.accuracy)
    measured: dict[str, float] = {}

    def champion_accuracy(pointer: dict[str, Any]) -> float:
        version = str(pointer["version"])
        if version not in measured:
            measured[version] = _champion_accuracy(registry, version, test)
        return measured[version]

    results = []
    for rank, candidate in enumerate(candidates):
        version = unused_version(registry, data.train.fingerprint)
        metrics = base_metrics(candidate, model_name, version, run_id, train, test, evaluation)
        config = {
            "run_id": run_id,
            "family": candidate.model.family,
            "params": candidate.model.params,
            "arguments": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "data": evaluation,
            "train_rows": len(train),
        }
        exported = OnnxClassifier.from_bytes(candidate.onnx, name=model_name, version=version)
        _, train_embeddings = onnx_outputs(exported, train.features())

        pointer, _ = registry.champion_with_etag()
        before = champion_accuracy(pointer) if pointer else None
        competes = rank == 0
        metrics.update(
            champion_before=pointer["version"] if pointer else None,
            champion_accuracy_on_this_evaluation=before,
            promoted=competes and should_promote(candidate.accuracy, before),
        )
        if not competes:
            metrics["not_promoted_because"] = "another family of this run was more accurate"
        artifacts = artifacts_for(candidate.model, test, candidate.probabilities, metrics)
        for filename, body in artifacts.items():
            kind = "text/html" if filename.endswith(".html") else "image/png"
            registry.put_artifact(version, filename, body, kind)
        registry.put_artifact(version, CONFIG_FILE, _json(config), "application/json")
        registry.put_artifact(
            version,
            EMBEDDINGS_FILE,
            embeddings_npz(train_embeddings, train),
            "application/x-npz",
        )
        registry.put_artifact(version, METRICS_FILE, _json(metrics), "application/json")
        # model.onnx last: a version is listed (and can be promoted) only once it is complete.
        registry.put_artifact(version, MODEL_FILE, candidate.onnx, "application/octet-stream")

        if competes:
            try:
                decision = registry.promote_if_better(
                    version,
                    accuracy=candidate.accuracy,
                    evaluation=evaluation,
                    champion_accuracy=champion_accuracy,
                )
            except PromotionConflict as error:
                raise TrainingError("promotion_conflict", str(error)) from None
            if (
                decision.promoted != metrics["promoted"]
                or (decision.champion_before or {}).get("version") != metrics["champion_before"]
            ):
                # Another run moved the champion between our read and our write.
                metrics.update(
                    champion_before=(decision.champion_before or {}).get("version"),
                    champion_accuracy_on_this_evaluation=decision.champion_accuracy,
                    promoted=decision.promoted,
                )
                artifacts = artifacts_for(candidate.model, test, candidate.probabilities, metrics)
                registry.put_artifact(version, REPORT_FILE, artifacts[REPORT_FILE], "text/html")
                registry.put_artifact(version, METRICS_FILE, _json(metrics), "application/json")
            log(
                f"{candidate.model.family}: {version} "
                f"{'promoted to champion' if decision.promoted else 'not promoted'} "
                f"(champion on this evaluation: {decision.champion_accuracy})"
            )
        results.append(metrics)

    best = results[0]
    summary = {k: v for k, v in best.items() if k not in ("history", "evaluation_details")}
    summary["search"] = (
        {k: v for k, v in best["search"].items() if k != "table"} if best["search"] else None
    )
    summary["artifacts"] = f"s3://{store.bucket}/{registry.prefix}{best['version']}/"
    summary["seconds"] = round(time.perf_counter() - started, 2)
    if len(results) > 1:
        summary["families"] = [
            {
                "family": r["family"],
                "version": r["version"],
                "test_accuracy": r["test_accuracy"],
                "train_seconds": r["train_seconds"],
                "promoted": r["promoted"],
            }
            for r in results
        ]
    return summary


def unused_version(registry: ModelRegistry, fingerprint: str) -> str:
    """A new version name: two runs on the same data in the same second (a retry, --family all)
    must never write into each other's folder, least of all the champion's."""
    for _ in range(10):
        version = new_version(fingerprint) + uuid.uuid4().hex[:4]
        if registry.store.head(registry.key(version, MODEL_FILE)) is None:
            return version
    raise TrainingError("version_collision", f"no unused version name for {fingerprint}")


@dataclass(frozen=True)
class Candidate:
    accuracy: float
    model: FittedModel
    onnx: bytes
    parity: dict[str, Any]
    probabilities: NDArray[np.float32]


def base_metrics(
    candidate: Candidate,
    model_name: str,
    version: str,
    run_id: str,
    train: Dataset,
    test: Dataset,
    evaluation: dict[str, Any],
) -> dict[str, Any]:
    model = candidate.model
    return {
        "model": model_name,
        "version": version,
        "run_id": run_id,
        "family": model.family,
        "classes": model.classes,
        "test_accuracy": candidate.accuracy,
        "train_rows": len(train),
        "test_rows": len(test),
        "evaluation": evaluation,
        "parity": candidate.parity,
        "params": model.params,
        "best_epoch": model.best_epoch,
        "epochs_run": model.epochs_run,
        "history": model.history,
        "train_seconds": model.seconds,
        "search": asdict(model.search) if model.search else None,
    }


def _json(document: Any) -> bytes:
    return json.dumps(document, indent=2, default=str).encode()


def _champion_accuracy(registry: ModelRegistry, version: str, test: Dataset) -> float:
    """The champion's accuracy on *this run's* held-out rows: the only fair comparison."""
    try:
        champion = OnnxClassifier.from_bytes(
            registry.model_bytes(version), name=registry.name, version=version
        )
    except Exception as error:  # a missing or broken champion must not be silently replaced
        raise TrainingError(
            "champion_unreadable", f"cannot load champion {registry.name}/{version}: {error}"
        ) from None
    probabilities, _ = (
        onnx_outputs(champion, test.features())
        if champion.has_embedding
        else (
            champion.probabilities(test.features()),
            None,
        )
    )
    return accuracy_of(champion.classes, probabilities, test.y)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m training.train",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    env = os.environ.get
    source = parser.add_argument_group("data (at least one; all given are merged)")
    source.add_argument(
        "--dataset", action="append", default=[], help="dataset name in the bucket; repeatable"
    )
    source.add_argument(
        "--csv", action="append", default=[], type=Path, help="a CSV file (either layout)"
    )
    source.add_argument("--mnist", type=Path, help="a folder of MNIST idx .gz files")
    source.add_argument(
        "--mnist-download", type=Path, help="download MNIST (checksum-verified) into this folder"
    )
    source.add_argument("--mnist-limit", type=int, help="use this many MNIST training rows")
    parser.add_argument("--model-name", help="registry name (default: the first dataset)")
    parser.add_argument("--bucket", default=env("TESSERA_BUCKET"))
    parser.add_argument(
        "--run-id", default=env("TESSERA_RUN_ID"), help="status under runs/<id>/ (default: new)"
    )
    parser.add_argument(
        "--family",
        default=env("TESSERA_FAMILY", "mlp"),
        choices=[*FAMILIES, "all"],
    )
    parser.add_argument(
        "--search",
        default=env("TESSERA_SEARCH", "none"),
        choices=["none", "halving", "exhaustive"],
        help="MLP hyper-parameter search over the reference grid (default: none)",
    )
    parser.add_argument("--search-rows", type=int, default=int(env("TESSERA_SEARCH_ROWS", "10000")))
    parser.add_argument("--epochs", type=int, help="override the family's epoch budget")
    parser.add_argument("--jobs", type=int, default=int(env("TESSERA_JOBS", "2")))
    parser.add_argument("--test-size", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=int(env("TESSERA_SEED", "0")))
    args = parser.parse_args(argv)
    if not args.bucket:
        parser.error("no bucket: pass --bucket or set TESSERA_BUCKET")
    if not (args.dataset or args.csv or args.mnist or args.mnist_download):
        parser.error("no data: pass --dataset, --csv, --mnist or --mnist-download")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    run_id = args.run_id or run_id_now()
    store = ObjectStore(bucket=args.bucket)
    started_at = datetime.now(UTC).isoformat()
    base = {"started_at": started_at, "family": args.family, "datasets": args.dataset}
    failure: dict[str, str] | None = None
    try:
        write_status(store, run_id, {**base, "status": "running"})
        summary = run(args, store, run_id)
    except TrainingError as error:
        failure = error.as_dict()
    except ValueError as error:  # e.g. an invalid dataset name
        failure = {"code": "invalid_argument", "message": str(error)}
    except Exception as error:
        traceback.print_exc(file=sys.stderr)
        failure = {"code": "internal_error", "message": f"{type(error).__name__}: {error}"}
    if failure is not None:
        log(f"training failed: {failure['code']}: {failure['message']}")
        try:
            write_status(store, run_id, {**base, "status": "failed", "error": failure})
        except Exception as error:  # the bucket itself may be what failed
            log(f"cannot record the failure in the bucket: {error}")
        print(
            json.dumps(
                {"status": "failed", "run_id": run_id, "error": failure["message"], **failure}
            ),
            flush=True,
        )
        return 1
    write_status(
        store,
        run_id,
        {
            **base,
            "status": "succeeded",
            "version": summary["version"],
            "model": summary["model"],
            "test_accuracy": summary["test_accuracy"],
            "promoted": summary["promoted"],
        },
    )
    print(json.dumps({"status": "succeeded", "run_id": run_id, **summary}, default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
