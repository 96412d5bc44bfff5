"""The ingest steps as plain functions: a sheet object becomes tile objects, a tile object
becomes a dataset row. Handlers call these; tests call them without any Lambda around them.

An `InvalidInput` never escapes: the object is quarantined with its reason and the step counts
as done, so a bad upload is neither retried forever nor silently dropped. Any other exception
is transient and propagates, so the message is retried and, in the end, dead-lettered.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tessera.config import PIPELINE
from tessera.dataset import Row, sheet_manifest_key, write_row
from tessera.errors import InvalidInput
from tessera.imaging import decode_image, encode_png, normalize_tile, to_vector
from tessera.segmentation import cut_sheet
from tessera.sheets import sheet_spec_from, validate_label
from tessera.storage import ObjectStore, decode_metadata, encode_metadata


@dataclass(frozen=True)
class Outcome:
    key: str
    status: str  # "split", "vectorized", "unchanged", "quarantined", "empty"
    detail: dict[str, Any]


def _too_large(store: ObjectStore, key: str) -> InvalidInput | None:
    head = store.head(key)
    if head is None:
        return None
    size = int(head.get("ContentLength", 0))
    limit = PIPELINE.limits.max_image_bytes
    if size > limit:
        return InvalidInput("object_too_large", f"{size} bytes is over the limit of {limit}")
    return None


def split_object(store: ObjectStore, key: str) -> Outcome:
    """Cut the sheet at `key` into tiles under tiles/<dataset>/<sheet-id>/."""
    too_large = _too_large(store, key)
    if too_large is not None:
        reason = store.quarantine(key, too_large, stage="split")
        return Outcome(key, "quarantined", {"reason_key": reason, **too_large.as_dict()})
    sheet = store.get(key)
    try:
        spec = sheet_spec_from(key, sheet.etag, sheet.metadata)
        image = decode_image(sheet.body)
        cutting = cut_sheet(image, spec.rows, spec.cols, square=spec.square)
        spec = spec.with_grid(cutting.rows, cutting.cols)
    except InvalidInput as error:
        reason = store.quarantine(key, error, stage="split", etag=sheet.etag)
        return Outcome(key, "quarantined", {"reason_key": reason, **error.as_dict()})

    prefix = f"{PIPELINE.prefixes.tiles}{spec.dataset}/{spec.sheet_id}/"
    # Tiles hold the cleaned cell (ink bright on black, ruled lines gone); empty cells are
    # reported in the manifest and never become tiles, so they never become dataset rows.
    for tile in cutting.inked:
        store.put(
            f"{prefix}r{tile.row:03d}-c{tile.col:03d}.png",
            encode_png(tile.pixels),
            content_type="image/png",
            metadata=encode_metadata(
                {
                    "label": spec.label_at(tile.row, tile.col),
                    "source-key": key,
                    "source-etag": sheet.etag,
                    "row": str(tile.row),
                    "col": str(tile.col),
                }
            ),
        )
    manifest = {"source_key": key, "source_etag": sheet.etag, **cutting.manifest()}
    # Beside the dataset's rows, not under tiles/: nothing listens there and a listing of a
    # sheet's tiles stays a listing of tiles.
    manifest_key = sheet_manifest_key(spec.dataset, spec.sheet_id)
    store.put_json(manifest_key, manifest)
    return Outcome(
        key,
        "split",
        {
            "dataset": spec.dataset,
            "sheet_id": spec.sheet_id,
            "tiles": len(cutting.tiles) - len(cutting.empty),
            "empty": len(cutting.empty),
            "grid": f"{cutting.rows}x{cutting.cols}",
            "grid_source": cutting.grid_source,
            "prefix": prefix,
            "manifest": manifest_key,
        },
    )


def vectorize_object(store: ObjectStore, key: str) -> Outcome:
    """Normalize the tile at `key` and write its dataset row (idempotently)."""
    tile = store.get(key)
    try:
        label = validate_label(decode_metadata(tile.metadata).get("label", ""))
        pixels = normalize_tile(decode_image(tile.body))
        if pixels is None:
            raise InvalidInput("empty_tile", "the tile has no ink; it is not added to the dataset")
    except InvalidInput as error:
        reason = store.quarantine(key, error, stage="vectorize", etag=tile.etag)
        status = "empty" if error.code == "empty_tile" else "quarantined"
        return Outcome(key, status, {"reason_key": reason, **error.as_dict()})
    shard, written = write_row(
        store, Row(pixels=to_vector(pixels), label=label, source_key=key, source_etag=tile.etag)
    )
    return Outcome(key, "vectorized" if written else "unchanged", {"shard": shard, "label": label})
