"""Split: a sheet under incoming/train/ becomes one tile object per inked cell under tiles/,
and a manifest of the sheet (its grid, where it came from, which cells were empty)."""

from __future__ import annotations

from tessera.config import PIPELINE
from tessera.dataset import sheet_manifest_key
from tessera.errors import InvalidInput
from tessera.imaging.decode import decode_image, encode_png
from tessera.pipeline.outcome import Outcome, quarantined, too_large
from tessera.sheets.cutting import cut_sheet
from tessera.sheets.spec import sheet_spec_from
from tessera.storage import ObjectStore, encode_metadata


def split_object(store: ObjectStore, key: str) -> Outcome:
    """Cut the sheet at `key` into tiles under tiles/<dataset>/<sheet-id>/."""
    refused = too_large(store, key)
    if refused is not None:
        return quarantined(store, key, refused, stage="split")
    sheet = store.get(key)
    try:
        spec = sheet_spec_from(key, sheet.etag, sheet.metadata)
        image = decode_image(sheet.body)
        cutting = cut_sheet(image, spec.rows, spec.cols, square=spec.square)
        spec = spec.with_grid(cutting.rows, cutting.cols)
    except InvalidInput as error:
        return quarantined(store, key, error, stage="split", etag=sheet.etag)

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
