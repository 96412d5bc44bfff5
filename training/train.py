"""The training job's entry point: the same command runs in the container and locally.

    python -m training.train --dataset digits [--dataset more] [--csv PATH] [--mnist DIR]
        [--family mlp|dense|cnn|cnn-strong|all] [--search none|halving|exhaustive]
        [--no-review]

Reads the rows (dataset shards in the bucket, CSV files, MNIST idx files), fits the chosen model
family, evaluates it on held-out rows (whole sheets held out when the rows come from sheets,
MNIST's own test split, else rows), exports ONNX, checks the export against the native model,
writes the version (model, metrics, report, model card, plots, config, embeddings) to the
registry and promotes it when it is at least as accurate as the champion on the same held-out
rows, then ranks the rows' suspected label errors and least certain tiles into each version's
review.json (training.review). `runs/<run-id>/status.json` says running, succeeded or failed
(with the error) throughout, and how the rows were split with any warning about it. The last
line of stdout is the run's result as JSON.
"""

from __future__ import annotations

import json
import sys
import time
import traceback
import uuid
from datetime import UTC, datetime
from typing import Any

from tessera.config import PIPELINE
from tessera.dataset import merge
from tessera.errors import CodedError
from tessera.names import validate_dataset_name, validate_model_name
from tessera.registry import REVIEW_FILE, ModelRegistry
from tessera.storage import ObjectStore
from tessera.storage.s3 import S3ObjectStore
from training import fanout
from training.candidates import Candidate, accuracy_of, train_family
from training.card import run_context
from training.data import TrainingData, download_mnist, load_training_data
from training.errors import TrainingError
from training.families import FAMILIES, TRANSFER
from training.families.base import FitOptions
from training.families.transfer import check_no_leakage, load_base_model
from training.holdout import evaluation_fingerprint, held_out
from training.options import TrainOptions, parse_args
from training.progress import log
from training.publish import publish
from training.review import review_labels


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


def review_versions(
    registry: ModelRegistry, data: TrainingData, versions: list[str], *, seed: int
) -> dict[str, Any]:
    """review.json beside every version the run registered, computed once on every row loaded
    (the held-out rows too: a wrong label there misjudges every model). The review only advises,
    so its failure is a warning in the summary, never a failed run."""
    try:
        rows = merge([data.train] if data.test is None else [data.train, data.test])
        document = review_labels(rows, seed=seed)
        body = json.dumps(document, indent=2).encode()
        keys = [
            registry.put_artifact(version, REVIEW_FILE, body, "application/json")
            for version in versions
        ]
    except Exception as error:
        message = f"{type(error).__name__}: {error}"
        log(f"warning: label review failed: {message}")
        return {"error": message}
    summary = {
        "rows": document["rows"],
        "label_issues": len(document["label_issues"]),
        "label_issues_found": document["label_issues_found"],
        "least_confident": len(document["least_confident"]),
        "out_of_sample_accuracy": document["out_of_sample_accuracy"],
        "seconds": document["seconds"],
        "key": keys[0],
    }
    if "skipped" in document:
        summary["skipped"] = document["skipped"]
    log(
        f"review: {summary['label_issues_found']} suspected label errors in {summary['rows']} "
        f"rows in {summary['seconds']:.1f}s"
    )
    return summary


def run(
    options: TrainOptions, store: ObjectStore, run_id: str, argv: list[str] | None = None
) -> dict[str, Any]:
    started = time.perf_counter()
    names = [validate_dataset_name(name) for name in options.dataset]
    model_name = validate_model_name(options.model_name or (names[0] if names else "mnist"))
    registry = ModelRegistry(store, model_name)
    mnist_dir = options.mnist
    if options.mnist_download is not None:
        mnist_dir = download_mnist(options.mnist_download)
    data = load_training_data(
        store=store,
        datasets=names,
        csv_paths=list(options.csv),
        mnist_dir=mnist_dir,
        mnist_limit=options.mnist_limit,
    )
    split = held_out(
        data, test_size=options.test_size, seed=options.seed, search=options.search != "none"
    )
    train, test = split.train, split.test
    log(f"held-out rows: {split.description}")
    for warning in split.warnings:
        log(f"warning: {warning}")
    base = None
    if options.base_model:
        if options.family not in (TRANSFER, "all"):
            raise TrainingError(
                "invalid_argument", "--base-model goes with --family transfer or --family all"
            )
        base = load_base_model(store, options.base_model)
        check_no_leakage(base, test.sources)
    elif options.family == TRANSFER:
        raise TrainingError("base_model_required", "--family transfer needs --base-model NAME")
    fit_options = FitOptions(
        seed=options.seed,
        epochs=options.epochs,
        search=options.search,
        search_rows=options.search_rows,
        jobs=options.jobs,
        base=base,
        search_grid=options.search_grid,
    )
    if options.search_shard:  # one worker of a fanned-out search: score a slice, then stop
        index, count = fanout.parse_shard(options.search_shard)
        shard_started = time.perf_counter()
        rows, scores = fanout.score_shard(train.features(), train.y, index, count, fit_options)
        key = fanout.write_shard(
            store,
            run_id,
            index,
            count,
            fingerprint=train.fingerprint,
            rows=rows,
            scores=scores,
            seconds=time.perf_counter() - shard_started,
        )
        return {"search_shard": key, "candidates": len(scores), "rows": rows}
    workers = options.search_workers or options.search_shards
    if workers:

        def runner(_x: Any, _y: Any) -> Any:
            return fanout.fanned_out(
                store,
                run_id,
                argv=argv if options.search_workers else None,
                count=workers,
                fingerprint=train.fingerprint,
                grid=options.search_grid,
            )

        fit_options.search_runner = runner
    families = list(FAMILIES) if options.family == "all" else [options.family]
    if options.family == "all" and base is not None:
        families.append(TRANSFER)
    evaluation = {
        "sources": data.sources,
        "fingerprint": data.train.fingerprint,
        "test_fingerprint": evaluation_fingerprint(test),
        "test_rows": len(test),
        "split": split.method,
    }
    candidates = []
    for family in families:
        model, onnx_bytes, parity, probabilities = train_family(family, train, test, fit_options)
        accuracy = accuracy_of(model.classes, probabilities, test.y)
        log(f"{family}: test accuracy {accuracy:.4f} in {model.seconds:.1f}s")
        candidates.append(Candidate(accuracy, model, onnx_bytes, parity, probabilities))
    # With --family all every family is registered; the most accurate competes for champion.
    candidates.sort(key=lambda candidate: -candidate.accuracy)
    results = publish(
        registry,
        candidates,
        run_id=run_id,
        train=train,
        test=test,
        evaluation=evaluation,
        arguments=options.as_config(),
        context=run_context(data, split),
    )

    best = results[0]
    summary = {
        k: v for k, v in best.items() if k not in ("history", "evaluation_details", "model_card")
    }
    summary["warnings"] = list(split.warnings)
    summary["search"] = (
        {k: v for k, v in best["search"].items() if k != "table"} if best["search"] else None
    )
    summary["artifacts"] = f"s3://{store.bucket}/{registry.prefix}{best['version']}/"
    summary["review"] = (
        review_versions(registry, data, [r["version"] for r in results], seed=options.seed)
        if options.review
        else None
    )
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


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    options = parse_args(argv)
    if options.search_shard:
        return _worker(options, argv)
    run_id = options.run_id or run_id_now()
    store = S3ObjectStore(bucket=options.bucket)
    started_at = datetime.now(UTC).isoformat()
    base = {"started_at": started_at, "family": options.family, "datasets": list(options.dataset)}
    failure: dict[str, str] | None = None
    try:
        write_status(store, run_id, {**base, "status": "running"})
        summary = run(options, store, run_id, argv)
    except CodedError as error:  # TrainingError, or input refused (an invalid name)
        failure = error.as_dict()
    except ValueError as error:
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
            "split": summary["split"]["method"],
            "warnings": summary["warnings"],
        },
    )
    print(json.dumps({"status": "succeeded", "run_id": run_id, **summary}, default=str), flush=True)
    return 0


def _worker(options: TrainOptions, argv: list[str]) -> int:
    """A search worker: its shard is its outcome; the run's status is the job's to write."""
    assert options.run_id
    try:
        summary = run(options, S3ObjectStore(bucket=options.bucket), options.run_id, argv)
    except Exception as error:
        traceback.print_exc(file=sys.stderr)
        print(json.dumps({"status": "failed", "error": f"{type(error).__name__}: {error}"}))
        return 1
    print(json.dumps({"status": "succeeded", **summary}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
