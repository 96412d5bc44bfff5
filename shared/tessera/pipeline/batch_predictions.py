"""Batch predictions: a sheet dropped under incoming/predict/ is cut, normalized and classified
in one model call; the grid of labels and confidences (or, for a page read as symbols, the
symbols in reading order and each line as a string) lands under predictions/ as JSON and CSV,
with an overlay image of what was cut and predicted beside them.

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
from tessera.imaging.normalize import as_stored_tile, model_input, normalize_tile
from tessera.names import validate_model_name
from tessera.pipeline.outcome import Outcome, quarantined, too_large
from tessera.registry import ModelRegistry
from tessera.serving.cache import ModelCache
from tessera.serving.model import ModelNotFound, OnnxClassifier
from tessera.sheets.cutting import Cutting, cut_sheet
from tessera.sheets.freeform import SymbolCutting
from tessera.sheets.overlay import overlay_key, render_overlay
from tessera.sheets.spec import check_metadata_keys, layout_from, optional_grid_for, square_from
from tessera.storage import ObjectStore

# By bucket, endpoint and model: never a cache bound to an endpoint that has gone.
_caches: dict[tuple[str, str, str], ModelCache] = {}
_KNOWN_METADATA = frozenset({"grid", "square", "layout"})
CSV_FIELDS = ["row", "col", "empty", "label", "confidence"]
SYMBOL_CSV_FIELDS = ["line", "position", "label", "confidence", "top", "left", "bottom", "right"]


def _cache(store: ObjectStore, name: str) -> ModelCache:
    key = (store.bucket, os.environ.get("AWS_ENDPOINT_URL", ""), name)
    if key not in _caches:
        _caches[key] = ModelCache(
            registry=ModelRegistry(store, name), ttl_seconds=PIPELINE.champion_ttl_seconds
        )
    return _caches[key]


def _model_and_grid(
    key: str, metadata: dict[str, str]
) -> tuple[str, tuple[int, int] | None, bool, str]:
    parts = key[len(PIPELINE.prefixes.incoming_predict) :].split("/")
    if len(parts) not in (1, 2) or not all(parts):
        raise InvalidInput(
            "bad_key", "expected incoming/predict/<file> or incoming/predict/<model>/<file>"
        )
    model = validate_model_name(parts[0]) if len(parts) == 2 else PIPELINE.default_dataset
    metadata = check_metadata_keys(metadata, _KNOWN_METADATA)
    layout = layout_from(metadata)
    if layout == "free" and "grid" in metadata:
        raise InvalidInput("bad_metadata", "layout=free reads symbols: give no grid with it")
    grid = None if layout == "free" else optional_grid_for(parts[-1], metadata)
    return model, grid, square_from(metadata), layout


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


# A page whose symbols the model reads this much more surely when turned over is upside down.
UPSIDE_DOWN_GAIN = 0.15


def upside_down(
    model: OnnxClassifier, tiles: list[Gray], found: list[dict[str, Any] | None]
) -> dict[str, str] | None:
    """A warning when the page reads far more surely turned by 180 degrees: predictions are
    kept as read (a guess would be silent), and the warning says what to do."""
    upright = [p["confidence"] for p in found if p is not None]
    if len(upright) < 3:
        return None
    before = float(np.mean(upright))
    if before > 1.0 - UPSIDE_DOWN_GAIN:
        # No turned reading can be surer by the gain: the second model call is not needed.
        return None
    flipped = predict_tiles(
        model, [np.ascontiguousarray(tile[::-1, ::-1]) for tile in tiles], top_k=1
    )
    turned = [p["confidence"] for p in flipped if p is not None]
    after = float(np.mean(turned)) if turned else 0.0
    if after - before < UPSIDE_DOWN_GAIN:
        return None
    return {
        "code": "upside_down",
        "message": (
            f"the page reads more surely turned upside down (mean confidence {after:.2f} "
            f"against {before:.2f} as it is): the predictions are as the page was given; "
            "turn it and drop it again"
        ),
    }


def predict_sheet_object(store: ObjectStore, key: str) -> Outcome:
    refused = too_large(store, key)
    if refused is not None:
        return quarantined(store, key, refused, stage="batch_predict")
    sheet = store.get(key)
    try:
        model_name, grid, square, layout = _model_and_grid(key, sheet.metadata)
        rows, cols = grid if grid is not None else (None, None)
        cutting = cut_sheet(decode_image(sheet.body), rows, cols, square=square, layout=layout)
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
    stored = [as_stored_tile(tiles[i].pixels) for i in inked]
    found = predict_tiles(model, stored)
    predictions: list[dict[str, Any] | None] = [None] * len(tiles)
    for index, prediction in zip(inked, found, strict=True):
        predictions[index] = prediction
    header = {
        "source_key": key,
        "source_etag": sheet.etag,
        "model": model.name,
        "version": model.version,
    }
    if isinstance(cutting, SymbolCutting):
        document, rows_out, fields = _symbols_document(cutting, predictions)
    else:
        document, rows_out, fields = _grid_document(cutting, predictions)
    target = PIPELINE.prefixes.predictions + key
    captions = [
        f"{p['label']} {p['confidence']:.0%}" if p is not None else None for p in predictions
    ]
    store.put(
        overlay_key(target + ".json"),
        render_overlay(cutting, captions),
        content_type="image/png",
    )
    document = {**header, **document, "overlay": overlay_key(target + ".json")}
    turned = upside_down(model, stored, found)
    if turned is not None:
        document["warnings"] = [turned]
    store.put_json(target + ".json", document)
    store.put(target + ".csv", _csv(rows_out, fields).encode(), content_type="text/csv")
    return Outcome(
        key,
        "predicted",
        {
            "prediction_key": target + ".json",
            "layout": cutting.grid_source,
            "cells": len(tiles),
            "empty": predictions.count(None),
        },
    )


def _grid_document(
    cutting: Cutting, predictions: list[dict[str, Any] | None]
) -> tuple[dict[str, Any], list[dict[str, Any]], list[str]]:
    cells = [
        {
            "row": tile.row,
            "col": tile.col,
            "empty": prediction is None,
            "label": prediction["label"] if prediction else None,
            "confidence": prediction["confidence"] if prediction else None,
            "top": prediction["top"] if prediction else [],
        }
        for tile, prediction in zip(cutting.tiles, predictions, strict=True)
    ]
    by_position = {(cell["row"], cell["col"]): cell for cell in cells}
    positions = [[(r, c) for c in range(cutting.cols)] for r in range(cutting.rows)]
    document = {
        "layout": cutting.grid_source,
        "rows": cutting.rows,
        "cols": cutting.cols,
        "grid_source": cutting.grid_source,
        "detection_score": cutting.detection_score,
        "grid": [[by_position[p]["label"] for p in row] for row in positions],
        "confidence": [[by_position[p]["confidence"] for p in row] for row in positions],
        "cells": cells,
    }
    return document, cells, CSV_FIELDS


def _symbols_document(
    cutting: SymbolCutting, predictions: list[dict[str, Any] | None]
) -> tuple[dict[str, Any], list[dict[str, Any]], list[str]]:
    """Symbols in reading order, each with its box in page pixels, and each line as a string."""
    symbols = []
    for tile, box, prediction in zip(cutting.tiles, cutting.boxes, predictions, strict=True):
        top, left, bottom, right = box
        symbols.append(
            {
                "line": tile.row,
                "position": tile.col,
                "label": prediction["label"] if prediction else None,
                "confidence": prediction["confidence"] if prediction else None,
                "top_k": prediction["top"] if prediction else [],
                "box": {"top": top, "left": left, "bottom": bottom, "right": right},
            }
        )
    lines = [""] * cutting.rows
    for symbol in symbols:
        lines[symbol["line"]] += symbol["label"] or "?"
    document = {
        "layout": "symbols",
        "grid_source": "symbols",
        "detection_score": cutting.layout.score,
        "rejected": cutting.layout.rejected,
        "lines": lines,
        "symbols": symbols,
    }
    flat = [
        {key: value for key, value in symbol.items() if key not in ("box", "top_k")} | symbol["box"]
        for symbol in symbols
    ]
    return document, flat, SYMBOL_CSV_FIELDS


def _csv(rows: list[dict[str, Any]], fields: list[str]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()
