"""Batch predictions: a sheet dropped under incoming/predict/ is split, normalized and
classified in one model call; the grid of labels lands under predictions/ as JSON and CSV.

    incoming/predict/<file>            uses the default model
    incoming/predict/<model>/<file>    uses that model's champion
"""

from __future__ import annotations

import csv
import io
from typing import Any

import numpy as np

from tessera.config import PIPELINE
from tessera.errors import InvalidInput
from tessera.imaging import Gray, decode_image, normalize_tile, split_sheet
from tessera.ingest import Outcome
from tessera.registry import ModelRegistry
from tessera.requests import model_input
from tessera.serving import ModelCache, ModelNotFound, OnnxClassifier
from tessera.sheets import check_metadata_keys, grid_for, square_from, validate_dataset_name
from tessera.storage import ObjectStore

_caches: dict[tuple[str, str], ModelCache] = {}
_KNOWN_METADATA = frozenset({"grid", "square"})


def _cache(store: ObjectStore, name: str) -> ModelCache:
    key = (store.bucket, name)
    if key not in _caches:
        _caches[key] = ModelCache(
            registry=ModelRegistry(store, name), ttl_seconds=PIPELINE.champion_ttl_seconds
        )
    return _caches[key]


def _model_and_grid(key: str, metadata: dict[str, str]) -> tuple[str, int, int, bool]:
    parts = key[len(PIPELINE.prefixes.incoming_predict) :].split("/")
    if len(parts) not in (1, 2) or not all(parts):
        raise InvalidInput(
            "bad_key", "expected incoming/predict/<file> or incoming/predict/<model>/<file>"
        )
    model = validate_dataset_name(parts[0]) if len(parts) == 2 else PIPELINE.default_dataset
    metadata = check_metadata_keys(metadata, _KNOWN_METADATA)
    rows, cols = grid_for(parts[-1], metadata)
    square = square_from(metadata)
    return model, rows, cols, square


def predict_sheet_object(store: ObjectStore, key: str) -> Outcome:
    sheet = store.get(key)
    try:
        model_name, rows, cols, square = _model_and_grid(key, sheet.metadata)
        tiles = split_sheet(decode_image(sheet.body), rows, cols, square=square)
        model = _cache(store, model_name).get()
    except (InvalidInput, ModelNotFound) as error:
        invalid = (
            error
            if isinstance(error, InvalidInput)
            else InvalidInput("model_not_found", str(error))
        )
        reason = store.quarantine(key, invalid, stage="batch_predict", etag=sheet.etag)
        return Outcome(key, "quarantined", {"reason_key": reason, **invalid.as_dict()})

    predictions = predict_tiles(model, [tile.pixels for tile in tiles])
    cells = []
    for tile, prediction in zip(tiles, predictions, strict=True):
        cells.append(
            {
                "row": tile.row,
                "col": tile.col,
                "empty": prediction is None,
                "label": prediction["label"] if prediction else None,
                "confidence": prediction["confidence"] if prediction else None,
                "top": prediction["top"] if prediction else [],
            }
        )
    document = {
        "source_key": key,
        "source_etag": sheet.etag,
        "model": model.name,
        "version": model.version,
        "rows": rows,
        "cols": cols,
        "grid": [[cells[r * cols + c]["label"] for c in range(cols)] for r in range(rows)],
        "confidence": [
            [cells[r * cols + c]["confidence"] for c in range(cols)] for r in range(rows)
        ],
        "cells": cells,
    }
    target = PIPELINE.prefixes.predictions + key
    store.put_json(target + ".json", document)
    store.put(target + ".csv", _csv(cells).encode(), content_type="text/csv")
    return Outcome(
        key,
        "predicted",
        {"prediction_key": target + ".json", "cells": len(cells), "empty": predictions.count(None)},
    )


def predict_tiles(
    model: OnnxClassifier, tiles: list[Gray], *, top_k: int = 3
) -> list[dict[str, Any] | None]:
    """Every tile normalized the way Vectorize does it, and all inked ones classified in one
    model call; None for a tile without ink."""
    normalized = [normalize_tile(pixels) for pixels in tiles]
    inked = [i for i, pixels in enumerate(normalized) if pixels is not None]
    results: list[dict[str, Any] | None] = [None] * len(tiles)
    if inked:
        batch = np.stack([model_input(normalized[i]) for i in inked])  # type: ignore[arg-type]
        for index, prediction in zip(inked, model.predict(batch, top_k=top_k), strict=True):
            results[index] = prediction
    return results


def _csv(cells: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(
        buffer,
        fieldnames=["row", "col", "empty", "label", "confidence"],
        extrasaction="ignore",
    )
    writer.writeheader()
    writer.writerows(cells)
    return buffer.getvalue()
