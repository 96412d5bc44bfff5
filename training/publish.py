"""Publishing a run's candidates: every file of a version written to the registry (model.onnx
last, so a version is listed only once complete), and the best one promoted when it is at
least as accurate as the champion on this run's held-out rows. Each version's report and model
card say how its held-out rows were split, and warn when that split flatters the model."""

from __future__ import annotations

import json
import uuid
from dataclasses import asdict
from typing import Any

import numpy as np
from numpy.typing import NDArray

from tessera.dataset import Dataset
from tessera.registry import (
    CONFIG_FILE,
    EMBEDDINGS_FILE,
    METRICS_FILE,
    MODEL_CARD_FILE,
    MODEL_FILE,
    REPORT_FILE,
    ModelRegistry,
    PromotionConflict,
    new_version,
    should_promote,
)
from tessera.serving.model import OnnxClassifier
from tessera.serving.similarity import encode_index
from training import card, report
from training.candidates import Candidate, accuracy_of, onnx_outputs
from training.errors import TrainingError
from training.families.base import FittedModel
from training.progress import log


def embeddings_npz(embeddings: NDArray[np.float32], train: Dataset) -> bytes:
    """The training rows' embeddings through the exported model, for /similar."""
    return encode_index(embeddings, train.y, train.sources)


def artifacts_for(
    model: FittedModel,
    test: Dataset,
    probabilities: NDArray[np.float32],
    metrics: dict[str, Any],
    context: dict[str, Any],
) -> dict[str, bytes]:
    """Report, model card and plots; `context` is the card's part the whole run shares."""
    evaluation = report.evaluate(model.classes, probabilities, test.y)
    metrics["evaluation_details"] = evaluation.as_dict()
    predicted = np.asarray(model.classes)[probabilities.argmax(axis=1)]
    model_card = card.model_card(context, metrics, test, predicted)
    metrics["model_card"] = model_card
    unit = "epoch"
    images = {
        "confusion.png": report.confusion_png(evaluation),
        "curves.png": report.curves_png(model.history, best_epoch=model.best_epoch, unit=unit),
        "misclassified.png": report.misclassified_png(
            test.features(), test.y, predicted, evaluation.misclassified
        ),
    }
    return {
        **images,
        REPORT_FILE: report.report_html(metrics, images).encode(),
        MODEL_CARD_FILE: card.card_markdown(model_card).encode(),
    }


def unused_version(registry: ModelRegistry, fingerprint: str) -> str:
    """A new version name: two runs on the same data in the same second (a retry, --family all)
    must never write into each other's folder, least of all the champion's."""
    for _ in range(10):
        version = new_version(fingerprint) + uuid.uuid4().hex[:4]
        if registry.store.head(registry.key(version, MODEL_FILE)) is None:
            return version
    raise TrainingError("version_collision", f"no unused version name for {fingerprint}")


def base_metrics(
    candidate: Candidate,
    model_name: str,
    version: str,
    run_id: str,
    train: Dataset,
    test: Dataset,
    evaluation: dict[str, Any],
    split: dict[str, Any],
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
        "split": split,
        "parity": candidate.parity,
        "params": model.params,
        "best_epoch": model.best_epoch,
        "epochs_run": model.epochs_run,
        "history": model.history,
        "train_seconds": model.seconds,
        "search": asdict(model.search) if model.search else None,
    }


def _content_type(filename: str) -> str:
    if filename.endswith(".html"):
        return "text/html"
    if filename.endswith(".md"):
        return "text/markdown; charset=utf-8"
    return "image/png"


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


def publish(
    registry: ModelRegistry,
    candidates: list[Candidate],
    *,
    run_id: str,
    train: Dataset,
    test: Dataset,
    evaluation: dict[str, Any],
    arguments: dict[str, Any],
    context: dict[str, Any],
) -> list[dict[str, Any]]:
    """Register every candidate (best first) and let the first compete for champion; the
    metrics of each, in the same order. `context` is the model card's run part
    (`card.run_context`): data, split and lineage."""
    measured: dict[str, float] = {}

    def champion_accuracy(pointer: dict[str, Any]) -> float:
        version = str(pointer["version"])
        if version not in measured:
            measured[version] = _champion_accuracy(registry, version, test)
        return measured[version]

    results = []
    for rank, candidate in enumerate(candidates):
        version = unused_version(registry, str(evaluation["fingerprint"]))
        metrics = base_metrics(
            candidate, registry.name, version, run_id, train, test, evaluation, context["split"]
        )
        config = {
            "run_id": run_id,
            "family": candidate.model.family,
            "params": candidate.model.params,
            "arguments": arguments,
            "data": evaluation,
            "train_rows": len(train),
        }
        exported = OnnxClassifier.from_bytes(candidate.onnx, name=registry.name, version=version)
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
        artifacts = artifacts_for(candidate.model, test, candidate.probabilities, metrics, context)
        for filename, body in artifacts.items():
            registry.put_artifact(version, filename, body, _content_type(filename))
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
                artifacts = artifacts_for(
                    candidate.model, test, candidate.probabilities, metrics, context
                )
                registry.put_artifact(version, REPORT_FILE, artifacts[REPORT_FILE], "text/html")
                registry.put_artifact(version, METRICS_FILE, _json(metrics), "application/json")
            log(
                f"{candidate.model.family}: {version} "
                f"{'promoted to champion' if decision.promoted else 'not promoted'} "
                f"(champion on this evaluation: {decision.champion_accuracy})"
            )
        results.append(metrics)
    return results
