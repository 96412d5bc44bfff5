"""Batch predictions: a sheet dropped under incoming/predict/ is cut, normalized and classified
in one model call; the grid of labels and confidences lands under predictions/ as JSON and CSV.

    incoming/predict/<file>            uses the default model
    incoming/predict/<model>/<file>    uses that model's champion

The sheet is cut by the same `cut_sheet` Split uses for training sheets (grid from metadata
`grid=RxC`, the file name `...-10x10.png`, or found on the page), and every cell goes through
what Split + Vectorize do to a training cell (8-bit tile, `normalize_tile`), so a cell is
predicted from the very vector it would have been trained on.
"""

from __future__ import annotations

import csv
import io
import os
from typing import Any

import numpy as np

from tessera.config import PIPELINE
from tessera.errors import InvalidInput
from tessera.imaging.decode import Gray, decode_image
from tessera.imaging.normalize import model_input, normalize_tile
from tessera.names import validate_model_name
from tessera.pipeline.outcome import Outcome, quarantined, too_large
from tessera.registry import ModelRegistry
from tessera.serving.cache import ModelCache
from tessera.serving.model import ModelNotFound, OnnxClassifier
from tessera.sheets.cutting import cut_sheet
from tessera.sheets.spec import check_metadata_keys, optional_grid_for, square_from
from tessera.storage import ObjectStore

# By bucket, endpoint and model: never a cache bound to an endpoint that has gone.
_caches: dict[tuple[str, str, str], ModelCache] = {}
_KNOWN_METADATA = frozenset({"grid", "square"})
CSV_FIELDS = ["row", "col", "empty", "label", "confidence"]


def _cache(store: ObjectStore, name: str) -> ModelCache:
    key = (store.bucket, os.environ.get("AWS_ENDPOINT_URL", ""), name)
    if key not in _caches:
        _caches[key] = ModelCache(
            registry=ModelRegistry(store, name), ttl_seconds=PIPELINE.champion_ttl_seconds
        )
    return _caches[key]


def _model_and_grid(key: str, metadata: dict[str, str]) -> tuple[str, tuple[int, int] | None, bool]:
    parts = key[len(PIPELINE.prefixes.incoming_predict) :].split("/")
    if len(parts) not in (1, 2) or not all(parts):
        raise InvalidInput(
            "bad_key", "expected incoming/predict/<file> or incoming/predict/<model>/<file>"
        )
    model = validate_model_name(parts[0]) if len(parts) == 2 else PIPELINE.default_dataset
    metadata = check_metadata_keys(metadata, _KNOWN_METADATA)
    return model, optional_grid_for(parts[-1], metadata), square_from(metadata)


def _as_stored_tile(pixels: Gray) -> Gray:
    """What a tile is after Split's 8-bit PNG and Vectorize's decode: the same rounding."""
    stored: Gray = np.clip(np.rint(pixels * 255.0), 0, 255).astype(np.uint8).astype(np.float32)
    return stored / np.float32(255.0)


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


def predict_sheet_object(store: ObjectStore, key: str) -> Outcome:
    refused = too_large(store, key)
    if refused is not None:
        return quarantined(store, key, refused, stage="batch_predict")
    sheet = store.get(key)
    try:
        model_name, grid, square = _model_and_grid(key, sheet.metadata)
        rows, cols = grid if grid is not None else (None, None)
        cutting = cut_sheet(decode_image(sheet.body), rows, cols, square=square)
        model = _cache(store, model_name).get()
    except (InvalidInput, ModelNotFound) as error:
        invalid = (
            error
            if isinstance(error, InvalidInput)
            else InvalidInput("model_not_found", str(error))
        )
        return quarantined(store, key, invalid, stage="batch_predict", etag=sheet.etag)

    empty = set(cutting.empty)
    tiles = cutting.tiles
    inked = [i for i, tile in enumerate(tiles) if (tile.row, tile.col) not in empty]
    found = predict_tiles(model, [_as_stored_tile(tiles[i].pixels) for i in inked])
    predictions: list[dict[str, Any] | None] = [None] * len(tiles)
    for index, prediction in zip(inked, found, strict=True):
        predictions[index] = prediction
    cells = [
        {
            "row": tile.row,
            "col": tile.col,
            "empty": prediction is None,
            "label": prediction["label"] if prediction else None,
            "confidence": prediction["confidence"] if prediction else None,
            "top": prediction["top"] if prediction else [],
        }
        for tile, prediction in zip(tiles, predictions, strict=True)
    ]
    by_position = {(cell["row"], cell["col"]): cell for cell in cells}
    grid_rows, grid_cols = cutting.rows, cutting.cols
    positions = [[(r, c) for c in range(grid_cols)] for r in range(grid_rows)]
    document = {
        "source_key": key,
        "source_etag": sheet.etag,
        "model": model.name,
        "version": model.version,
        "rows": grid_rows,
        "cols": grid_cols,
        "grid_source": cutting.grid_source,
        "grid": [[by_position[p]["label"] for p in row] for row in positions],
        "confidence": [[by_position[p]["confidence"] for p in row] for row in positions],
        "cells": cells,
    }
    target = PIPELINE.prefixes.predictions + key
    store.put_json(target + ".json", document)
    store.put(target + ".csv", _csv(cells).encode(), content_type="text/csv")
    return Outcome(
        key,
        "predicted",
        {
            "prediction_key": target + ".json",
            "cells": len(cells),
            "empty": predictions.count(None),
        },
    )


def _csv(cells: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_FIELDS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(cells)
    return buffer.getvalue()
