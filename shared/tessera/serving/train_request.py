"""`POST /train`'s body: what to train, checked before anything starts (the console function
deployed and the local runtime share it), or `InvalidInput` saying why."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tessera.config import DEFAULT_FAMILY, MODEL_FAMILIES, PIPELINE
from tessera.errors import InvalidInput
from tessera.names import validate_dataset_name
from tessera.serving.api_input import json_object

# A training request names a few datasets: a body past this is not one.
MAX_TRAIN_BODY_BYTES = 16 * 1024
MAX_TRAIN_DATASETS = 20


MAX_SEARCH_WORKERS = 20
# What a request may ask training for: one family, or every family (the most accurate competes).
TRAINABLE = (*MODEL_FAMILIES, "all")


@dataclass(frozen=True)
class TrainRequest:
    datasets: list[str]
    # The exhaustive hyper-parameter search fanned out to this many workers (0: no search);
    # deployed an AWS Batch array job, locally worker processes (training.fanout).
    search_workers: int = 0
    # One of TRAINABLE; the Keras families (and "all") run on the GPU queue where there is one.
    family: str = DEFAULT_FAMILY


def parse_train_request(body: str | None) -> list[str]:
    """`POST /train`'s body -> the dataset names to train on (see `parse_training`)."""
    return parse_training(body).datasets


def parse_training(body: str | None) -> TrainRequest:
    """`POST /train`'s body -> what to train, or `InvalidInput` saying why.

    `{}` or no body trains the default dataset; `{"dataset": NAME}` or `{"datasets": [...]}`
    name others; `"family"` picks what to fit (`mlp`, the default, `dense`, `cnn`, `cnn-strong`
    or `all`); `"search_workers": N` (2-20) picks the MLP's hyper-parameters by the exhaustive
    search over the reference grid, fanned out to N workers. Every name is checked against the
    naming rules before anything starts.
    """
    raw = body or ""
    if len(raw.encode("utf-8", errors="replace")) > MAX_TRAIN_BODY_BYTES:
        raise InvalidInput(
            "body_too_large", f"a training request is at most {MAX_TRAIN_BODY_BYTES} bytes"
        )
    if not raw.strip():
        return TrainRequest([PIPELINE.default_dataset])
    document = json_object(raw, example='{"dataset": "digits"}')
    unknown = sorted(set(document) - {"dataset", "datasets", "family", "search_workers"})
    if unknown:
        raise InvalidInput(
            "bad_request",
            f"unknown field(s) {unknown}; use 'dataset' or 'datasets' (and 'family', "
            "'search_workers')",
        )
    family = document.get("family", DEFAULT_FAMILY)
    if not isinstance(family, str) or family not in TRAINABLE:
        raise InvalidInput("bad_request", f"'family' is one of {', '.join(TRAINABLE)}")
    if "dataset" in document and "datasets" in document:
        raise InvalidInput("bad_request", "give 'dataset' or 'datasets', not both")
    workers = document.get("search_workers", 0)
    if (
        not isinstance(workers, int)
        or isinstance(workers, bool)
        or not (workers == 0 or 2 <= workers <= MAX_SEARCH_WORKERS)
    ):
        raise InvalidInput(
            "bad_request", f"'search_workers' is an integer within 2..{MAX_SEARCH_WORKERS}"
        )
    if workers and family not in ("mlp", "all"):
        raise InvalidInput(
            "bad_request", "'search_workers' searches the mlp family's grid: use mlp or all"
        )
    names: Any = document.get("datasets", [document.get("dataset", PIPELINE.default_dataset)])
    if not isinstance(names, list) or not names or len(names) > MAX_TRAIN_DATASETS:
        raise InvalidInput(
            "bad_request", f"'datasets' must be a list of 1-{MAX_TRAIN_DATASETS} names"
        )
    if not all(isinstance(name, str) for name in names):
        raise InvalidInput("bad_request", "dataset names are strings")
    try:
        return TrainRequest([validate_dataset_name(name) for name in names], workers, family)
    except InvalidInput as error:
        raise InvalidInput("bad_request", error.message) from None
