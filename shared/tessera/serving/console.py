"""What the console shows and changes: sheets, the review queue, corrections and models.

Plain functions over the bucket, so the console's function, the client and the tests share
them. Every refusal is an `InvalidInput` (a 4xx), `NotFound` for what is not there.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from itertools import islice
from typing import Any

from tessera.config import PIPELINE
from tessera.corrections import (
    UnknownTile,
    current_corrections,
    record_correction,
    tile_cell,
    tile_history,
)
from tessera.dataset import (
    ROWS,
    SHEETS,
    dataset_prefix,
    decode_rows,
    sheet_shard_key,
    superseded_sheets,
)
from tessera.errors import InvalidInput
from tessera.names import validate_dataset_name, validate_model_name
from tessera.registry import REPORT_FILE, REVIEW_FILE, ModelRegistry, is_version
from tessera.serving.train_request import TrainRequest, parse_training
from tessera.storage import ObjectMissing, ObjectStore

REVIEW_PAGE = 50
MAX_REVIEW_LIMIT = 500
SHEETS_PAGE = 100  # GET /sheets' default page; a page is at most one LIST and its manifests
MAX_SHEETS_PAGE = 1000
_MAX_CURSOR = 2048
# What the console may fetch as a picture or report: tiles, sheet overlays, model artefacts.
_VIEWABLE = {".png": "image/png", ".html": "text/html; charset=utf-8"}


class NotFound(UnknownTile):
    """A dataset, sheet, model or version that is not there: the API's 404."""


def list_sheets(
    store: ObjectStore, dataset: str, *, limit: int = SHEETS_PAGE, after: str | None = None
) -> dict[str, Any]:
    """A page of a dataset's sheets: the split (and superseded) ones by sheet id, then the
    quarantined uploads by key. `next` is the cursor of the following page (`after=`), None on
    the last. A page reads at most `limit` + 1 keys of each listing and `limit` documents,
    however many sheets the dataset has."""
    validate_dataset_name(dataset)
    if not 1 <= limit <= MAX_SHEETS_PAGE:
        raise InvalidInput("bad_limit", f"limit must be 1-{MAX_SHEETS_PAGE}")
    kind, last = _sheets_cursor(after) if after else ("split", "")
    prefixes = {
        "split": f"{dataset_prefix(dataset)}{SHEETS}",
        "quarantined": f"{PIPELINE.prefixes.quarantine}{PIPELINE.prefixes.incoming_train}"
        f"{dataset}/",
    }
    suffixes = {"split": ".json", "quarantined": ".reason.json"}

    def keys(of: str, start_after: str) -> Iterator[tuple[str, str]]:
        listed = store.list(prefixes[of], start_after=prefixes[of] + start_after)
        return ((of, i.key) for i in listed if i.key.endswith(suffixes[of]))

    page = list(islice(keys("split", last), limit + 1)) if kind == "split" else []
    if len(page) <= limit:  # room left on this page: the quarantined uploads follow
        start = last if kind == "quarantined" else ""
        page += islice(keys("quarantined", start), limit + 1 - len(page))
    page, more = page[:limit], len(page) > limit
    if not page and after is None:
        raise NotFound("no_such_dataset", f"dataset {dataset!r} has no sheets")
    with ThreadPoolExecutor(max_workers=16) as pool:
        documents = list(pool.map(store.get_json, [key for _, key in page]))
    retired = superseded_sheets(store, dataset) if any(k == "split" for k, _ in page) else set()
    sheets = []
    for (of, key), document in zip(page, documents, strict=True):
        if not isinstance(document, dict):
            continue  # gone since it was listed
        if of == "split":
            sheet_id = key[len(prefixes[of]) :].removesuffix(".json")
            sheets.append(
                {
                    "sheet_id": sheet_id,
                    "status": "superseded" if sheet_id in retired else "split",
                    "source_key": document.get("source_key"),
                    "layout": document.get("layout") or document.get("grid_source"),
                    "cells": document.get("cells"),
                    "inked": document.get("inked"),
                    "empty_cells": len(document.get("empty") or []),
                    "overlay": document.get("overlay"),
                }
            )
        else:
            sheets.append(
                {
                    "sheet_id": None,
                    "status": "quarantined",
                    "source_key": document.get("source_key"),
                    "reason": {"code": document.get("code"), "message": document.get("message")},
                    "overlay": document.get("overlay"),
                }
            )
    cursor = None
    if more:
        of, key = page[-1]
        cursor = _encode_cursor({"of": of, "after": key[len(prefixes[of]) :]})
    return {"dataset": dataset, "sheets": sheets, "next": cursor}


def _encode_cursor(position: dict[str, str]) -> str:
    return base64.urlsafe_b64encode(json.dumps(position).encode()).decode().rstrip("=")


def _sheets_cursor(cursor: str) -> tuple[str, str]:
    """The listing and key a `next` cursor names; anything else is a 400."""
    refused = InvalidInput("bad_cursor", "after= takes the `next` of a previous page, unchanged")
    if len(cursor) > _MAX_CURSOR or not cursor.isascii():
        raise refused
    try:
        position = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError, RecursionError):
        raise refused from None
    if (
        not isinstance(position, dict)
        or set(position) != {"of", "after"}
        or position["of"] not in ("split", "quarantined")
        or not isinstance(position["after"], str)
    ):
        raise refused
    return position["of"], position["after"]


def sheet_tiles(store: ObjectStore, dataset: str, sheet_id: str) -> dict[str, Any]:
    """One sheet's rows: each tile with its stored label and its correction, if any."""
    validate_dataset_name(dataset)
    tile_cell(dataset, f"{PIPELINE.prefixes.tiles}{dataset}/{sheet_id}/x.png")  # a valid id
    try:
        rows = decode_rows(store.get(sheet_shard_key(dataset, sheet_id)).body)
    except ObjectMissing:
        raise NotFound(
            "no_such_sheet", f"dataset {dataset!r} has no rows of {sheet_id!r}"
        ) from None
    corrections = current_corrections(store, dataset)
    tiles = []
    for source, label in zip(rows.sources, rows.labels, strict=True):
        correction = corrections.get(source)
        tiles.append(
            {
                "tile": source,
                "label": label,
                "correction": correction.as_dict() if correction else None,
            }
        )
    return {"dataset": dataset, "sheet_id": sheet_id, "tiles": tiles}


def review_queue(store: ObjectStore, dataset: str, *, limit: int = REVIEW_PAGE) -> dict[str, Any]:
    """The tiles most worth a look, from the champion's review: suspected label errors first
    (confident learning on out-of-sample probabilities), then the least confident. Tiles
    corrected since leave the queue and count as done."""
    validate_dataset_name(dataset)
    if not 1 <= limit <= MAX_REVIEW_LIMIT:
        raise InvalidInput("bad_limit", f"limit must be 1-{MAX_REVIEW_LIMIT}")
    registry = ModelRegistry(store, dataset)
    champion = registry.champion()
    if champion is None:
        raise NotFound("model_not_found", f"no champion for {dataset!r} yet: train one first")
    review = store.get_json(registry.key(champion["version"], REVIEW_FILE))
    if not isinstance(review, dict):
        raise NotFound(
            "review_unavailable",
            f"{dataset}/{champion['version']} has no {REVIEW_FILE}: train again to rank tiles",
        )
    prefix = f"{PIPELINE.prefixes.tiles}{dataset}/"
    corrections = current_corrections(store, dataset)
    candidates = [
        {**item, "kind": kind, "sheet_id": str(item["tile"])[len(prefix) :].split("/")[0]}
        for kind in ("label_issues", "least_confident")
        for item in review.get(kind) or []
        if isinstance(item, dict) and str(item.get("tile", "")).startswith(prefix)
    ]
    done = [c for c in candidates if c["tile"] in corrections]
    todo = [c for c in candidates if c["tile"] not in corrections]
    return {
        "dataset": dataset,
        "version": champion["version"],
        "method": review.get("method"),
        "total": len(candidates),
        "corrected": len(done),
        "tiles": todo[:limit],
    }


def correct(store: ObjectStore, body: Any, *, by: str) -> dict[str, Any]:
    """POST /corrections: one correction, validated, stored, and the tile's history returned."""
    if not isinstance(body, dict):
        raise InvalidInput("bad_request", "the body must be a JSON object")
    unknown = set(body) - {"dataset", "tile", "label", "exclude", "undo"}
    if unknown:
        raise InvalidInput("bad_request", f"unknown fields: {sorted(unknown)}")
    dataset, tile, label = body.get("dataset"), body.get("tile"), body.get("label")
    flags = {name: body.get(name, False) for name in ("exclude", "undo")}
    if not isinstance(dataset, str) or not isinstance(tile, str):
        raise InvalidInput("bad_request", "dataset and tile are strings")
    if label is not None and not isinstance(label, str):
        raise InvalidInput("bad_label", "label is a string")
    if any(not isinstance(value, bool) for value in flags.values()):
        raise InvalidInput("bad_request", "exclude and undo are true or false")
    correction = record_correction(store, dataset, tile, label=label, by=by, **flags)
    history = tile_history(store, dataset, tile)
    return {"correction": correction.as_dict(), "history": [c.as_dict() for c in history]}


def correction_history(store: ObjectStore, dataset: str, tile: str) -> dict[str, Any]:
    validate_dataset_name(dataset)
    return {"tile": tile, "history": [c.as_dict() for c in tile_history(store, dataset, tile)]}


def describe_model(store: ObjectStore, name: str) -> dict[str, Any]:
    """GET /models/{name}: versions with their figures, the champion and its history."""
    registry = ModelRegistry(store, validate_model_name(name))
    versions = registry.versions()
    if not versions:
        raise NotFound("model_not_found", f"there is no model {name!r}")
    with ThreadPoolExecutor(max_workers=16) as pool:
        metrics = list(pool.map(registry.metrics, versions))
    champion = registry.champion()
    described = []
    for version, figures in zip(versions, metrics, strict=True):
        figures = figures or {}
        described.append(
            {
                "version": version,
                "family": figures.get("family"),
                "test_accuracy": figures.get("test_accuracy"),
                "parity_passed": bool((figures.get("parity") or {}).get("passed")),
                "train_rows": figures.get("train_rows"),
                "test_rows": figures.get("test_rows"),
                "champion": bool(champion and champion.get("version") == version),
                "report": registry.key(version, REPORT_FILE),
                "plots": {
                    plot: registry.key(version, f"{plot}.png")
                    for plot in ("confusion", "curves", "misclassified")
                },
            }
        )
    history = [
        {k: p.get(k) for k in ("version", "accuracy", "promoted_at", "previous_version", "set_by")}
        for p in registry.history()
    ]
    return {"name": name, "champion": champion, "versions": described, "history": history}


def set_champion(store: ObjectStore, name: str, version: str, *, set_by: str) -> dict[str, Any]:
    """Point the champion at `version` (a roll back or forward): the same conditional pointer
    write promotion uses. A version that failed its parity gate is refused."""
    registry = ModelRegistry(store, validate_model_name(name))
    if (
        not isinstance(version, str)
        or not is_version(version)
        or version not in registry.versions()
    ):
        raise NotFound("no_such_version", f"model {name!r} has no version {version!r}")
    metrics = registry.metrics(version) or {}
    if not (metrics.get("parity") or {}).get("passed", False):
        raise InvalidInput(
            "parity_failed", f"{name}/{version} did not pass its ONNX parity gate: not served"
        )
    return registry.promote(
        version,
        accuracy=float(metrics.get("test_accuracy", 0.0)),
        evaluation={"set_by": set_by, **(metrics.get("evaluation") or {})},
    )


def checked_training_request(store: ObjectStore, body: str | None) -> TrainRequest:
    """POST /train's body -> what to train, each dataset checked before anything starts: a
    name that breaks the rules is a 400, a dataset without rows a 404 `dataset_not_found`."""
    request = parse_training(body)
    # one LIST per dataset: a first key under its rows is enough
    missing = [
        name
        for name in request.datasets
        if next(iter(store.list(dataset_prefix(name) + ROWS)), None) is None
    ]
    if missing:
        raise NotFound(
            "dataset_not_found",
            f"no rows in dataset(s) {missing}: drop sheets under incoming/train/ first",
        )
    return request


def start_training(
    store: ObjectStore, stepfunctions: Any, state_machine_arn: str, body: str | None
) -> dict[str, Any]:
    """POST /train deployed: the checked request starts the training workflow. The execution's
    name is the run id, so GET /runs/{name} follows it."""
    request = checked_training_request(store, body)
    datasets = request.datasets
    if len(datasets) != 1:
        raise InvalidInput(
            "bad_request", "the workflow trains one dataset per run: start one run per dataset"
        )
    name = f"run-{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"
    execution_input: dict[str, Any] = {"dataset": datasets[0], "family": request.family}
    if request.search_workers:
        execution_input["search_workers"] = request.search_workers
    started = stepfunctions.start_execution(
        stateMachineArn=state_machine_arn, name=name, input=json.dumps(execution_input)
    )
    return {
        "execution": name,
        "executionArn": started["executionArn"],
        "startDate": started["startDate"].isoformat(),
        "datasets": datasets,
        "family": request.family,
        "status_key": f"{PIPELINE.prefixes.runs}{name}/status.json",
    }


def run_status(store: ObjectStore, run_id: str) -> dict[str, Any]:
    """A training run's status.json, as the job (or its workflow) last wrote it."""
    if not run_id or len(run_id) > 128 or not all(ch.isalnum() or ch in "-_" for ch in run_id):
        raise InvalidInput("bad_run_id", f"{run_id!r} is not a run id")
    status = store.get_json(f"{PIPELINE.prefixes.runs}{run_id}/status.json")
    if not isinstance(status, dict):
        raise NotFound("no_such_run", f"run {run_id} has not recorded a status (yet)")
    return status


def viewable(store: ObjectStore, key: str) -> tuple[bytes, str]:
    """A picture or report the console shows: tiles, sheet overlays (a quarantined sheet's
    too) and model artefacts, nothing else of the bucket."""
    prefixes = PIPELINE.prefixes
    suffix = "." + key.rsplit(".", 1)[-1] if "." in key else ""
    overlay = key.endswith(".overlay.png") and (
        key.startswith(prefixes.quarantine) or f"/{SHEETS}" in key
    )
    if (
        suffix not in _VIEWABLE
        or ".." in key.split("/")
        or not (key.startswith((prefixes.tiles, prefixes.models)) or overlay)
    ):
        raise InvalidInput("bad_key", f"{key!r} is not a tile, an overlay or a model artefact")
    try:
        return store.get(key).body, _VIEWABLE[suffix]
    except ObjectMissing:
        raise NotFound("not_found", f"{key} is not there") from None
