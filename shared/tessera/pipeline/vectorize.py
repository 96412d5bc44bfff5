"""Vectorize: a sheet's tile batch under tiles/ becomes the sheet's MNIST-normalized dataset rows,
one shard under datasets/<name>/rows/."""

from __future__ import annotations

from tessera.dataset import Row, put_sheet_rows, sheet_rows_version
from tessera.errors import InvalidInput
from tessera.imaging.normalize import normalize_tile, to_vector
from tessera.names import validate_label
from tessera.pipeline.outcome import Outcome, quarantine, quarantined
from tessera.pipeline.tile_batch import decode_tile_batch
from tessera.storage import ObjectStore


def vectorize_object(store: ObjectStore, key: str) -> Outcome:
    """Normalize every cell of the tile batch at `key` and write the sheet's shard
    (idempotently: the same batch again costs its GET and one HEAD). A cell without ink, or
    with a label that is not one, is quarantined as its tile and left out; the rest are rows."""
    stored = store.get(key)
    try:
        batch = decode_tile_batch(stored.body, key)
    except InvalidInput as error:
        return quarantined(store, key, error, stage="vectorize", etag=stored.etag)
    version = batch.digest()
    if sheet_rows_version(store, batch.dataset, batch.sheet_id) == version:
        return Outcome(key, "unchanged", {"sheet_id": batch.sheet_id})
    rows: list[Row] = []
    left_out: dict[str, str] = {}
    for cell in batch.cells:
        try:
            label = validate_label(cell.label)
            pixels = normalize_tile(cell.gray())
            if pixels is None:
                raise InvalidInput(
                    "empty_tile", "the tile has no ink; it is not added to the dataset"
                )
        except InvalidInput as error:
            # Before the shard: once it is there, every cell left out has its reason.
            quarantine(store, cell.key, error, stage="vectorize", etag=cell.etag)
            left_out[cell.key] = error.code
            continue
        rows.append(
            Row(pixels=to_vector(pixels), label=label, source_key=cell.key, source_etag=cell.etag)
        )
    shard = put_sheet_rows(store, batch.dataset, batch.sheet_id, rows, version=version)
    return Outcome(
        key,
        "vectorized",
        {
            "shard": shard,
            "rows": len(rows),
            "labels": sorted({row.label for row in rows}),
            **({"left_out": left_out} if left_out else {}),
        },
    )
