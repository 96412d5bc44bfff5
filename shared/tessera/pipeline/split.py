"""Split: a sheet under incoming/train/ becomes one tile object per inked cell under tiles/,
the sheet's tile batch beside them (what Vectorize reads), and a manifest of the sheet (its
grid, where it came from, which cells were empty)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from tessera.dataset import SHEETS, dataset_prefix, sheet_manifest_key, superseded_key
from tessera.errors import InvalidInput
from tessera.imaging.decode import decode_image, encode_png
from tessera.pipeline.outcome import Outcome, quarantine_key, quarantined, too_large
from tessera.pipeline.tile_batch import (
    Cell,
    TileBatch,
    cell_from_tile,
    encode_tile_batch,
    tile_prefix,
)
from tessera.sheets.cutting import cut_sheet
from tessera.sheets.freeform import SymbolCutting
from tessera.sheets.overlay import overlay_key, render_overlay
from tessera.sheets.spec import (
    LABELS_MANIFEST_SUFFIX,
    MAX_LABELS_MANIFEST_BYTES,
    SheetSpec,
    labels_manifest_key,
    parse_labels_manifest,
    sheet_spec_from,
)
from tessera.sheets.tiles import Tile
from tessera.storage import ObjectMissing, ObjectStore, encode_metadata

# Tile PUTs in flight at once: S3 takes thousands per second per prefix, and one at a time a
# large sheet would spend most of its invocation waiting.
TILE_WRITERS = 8


def split_object(store: ObjectStore, key: str) -> Outcome:
    """Cut the sheet at `key` into tiles under tiles/<dataset>/<sheet-id>/.

    A labels manifest (`<sheet>.labels.json`) may come before or after its sheet: whichever
    arrives second splits the sheet, so the order of two uploads does not matter.
    """
    if key.endswith(LABELS_MANIFEST_SUFFIX):
        sheet_key = key.removesuffix(LABELS_MANIFEST_SUFFIX)
        if store.head(sheet_key) is None:
            return Outcome(key, "waiting", {"sheet": sheet_key})
        key = sheet_key
    refused = too_large(store, key)
    if refused is not None:
        return quarantined(store, key, refused, stage="split")
    sheet = store.get(key)
    try:
        labels_manifest = _labels_manifest(store, key)
        spec = sheet_spec_from(key, sheet.etag, sheet.metadata, labels_manifest)
        image = decode_image(sheet.body)
        cutting = cut_sheet(image, spec.rows, spec.cols, square=spec.square, layout=spec.layout)
    except InvalidInput as error:
        return quarantined(store, key, error, stage="split", etag=sheet.etag)
    try:
        if isinstance(cutting, SymbolCutting):
            spec = spec.with_lines(cutting.line_counts)
        else:
            spec = spec.with_grid(cutting.rows, cutting.cols)
    except InvalidInput as error:
        # The labels do not fit what was found: the overlay shows what was found, numbered.
        picture = quarantine_key(key) + ".overlay.png"
        captions: list[str | None] = [f"{tile.row},{tile.col}" for tile in cutting.tiles]
        store.put(picture, render_overlay(cutting, captions), content_type="image/png")
        return quarantined(
            store, key, error, stage="split", etag=sheet.etag, extra={"overlay": picture}
        )

    prefix = tile_prefix(spec.dataset, spec.sheet_id)
    # Tiles hold the cleaned cell (ink bright on black, ruled lines gone); empty cells are
    # reported in the manifest and never become tiles, so they never become dataset rows.
    cells = _write_tiles(store, prefix, key, sheet.etag, spec, cutting.inked)
    # The sheet's one message to Vectorize, once every tile it names is there.
    batch = TileBatch(spec.dataset, spec.sheet_id, key, sheet.etag, cells)
    store.put(
        batch.key,
        encode_tile_batch(batch),
        content_type="application/x-npz",
        metadata={"digest": batch.digest(), "cells": str(len(cells))},
    )
    _forget_quarantine(store, key, sheet.etag)
    manifest = {"source_key": key, "source_etag": sheet.etag, **cutting.manifest()}
    # Beside the dataset's rows, not under tiles/: nothing listens there and a listing of a
    # sheet's tiles stays a listing of tiles.
    manifest_key = sheet_manifest_key(spec.dataset, spec.sheet_id)
    empty = set(cutting.empty)
    captions = [
        None if (tile.row, tile.col) in empty else spec.label_at(tile.row, tile.col)
        for tile in cutting.tiles
    ]
    # The overlay first: a manifest, once there, always has its picture beside it.
    store.put(
        overlay_key(manifest_key), render_overlay(cutting, captions), content_type="image/png"
    )
    store.put_json(manifest_key, {**manifest, "overlay": overlay_key(manifest_key)})
    superseded = _supersede_earlier_versions(store, spec.dataset, key, spec.sheet_id, sheet.etag)
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
            "layout": cutting.grid_source,
            "prefix": prefix,
            "tile_batch": batch.key,
            "manifest": manifest_key,
            **({"superseded": superseded} if superseded else {}),
        },
    )


def _write_tiles(
    store: ObjectStore,
    prefix: str,
    key: str,
    etag: str,
    spec: SheetSpec,
    tiles: list[Tile],
) -> tuple[Cell, ...]:
    """One PNG per tile, written a few at a time (a 5,000-cell sheet is 5,000 PUTs)."""

    def write(tile: Tile) -> Cell:
        label = spec.label_at(tile.row, tile.col)
        tile_key = f"{prefix}r{tile.row:03d}-c{tile.col:03d}.png"
        tile_etag = store.put(
            tile_key,
            encode_png(tile.pixels),
            content_type="image/png",
            metadata=encode_metadata(
                {
                    "label": label,
                    "source-key": key,
                    "source-etag": etag,
                    "row": str(tile.row),
                    "col": str(tile.col),
                }
            ),
        )
        return cell_from_tile(tile_key, label, tile.pixels, tile_etag)

    with ThreadPoolExecutor(max_workers=TILE_WRITERS) as pool:
        return tuple(pool.map(write, tiles))


def _supersede_earlier_versions(
    store: ObjectStore, dataset: str, key: str, sheet_id: str, etag: str
) -> list[str]:
    """A key holds one sheet: earlier versions of it (other bytes uploaded to the same key) are
    recorded as superseded, so training ignores their rows. No tile or row is deleted: the
    record says which upload replaced which, and removing it brings the old rows back.

    Sheet ids begin with the key's file stem, so one LIST of manifests with that prefix finds
    every candidate; each is checked against the key it came from.
    """
    # This very sheet may have been superseded before (bytes A, then B, then A again): it is
    # the key's sheet now.
    if store.head(superseded_key(dataset, sheet_id)) is not None:
        store.delete(superseded_key(dataset, sheet_id))
    manifests = f"{dataset_prefix(dataset)}{SHEETS}"
    stem = sheet_id.rsplit("-", 1)[0]
    replaced = []
    for item in store.list(f"{manifests}{stem}-"):
        old_id = item.key[len(manifests) :].removesuffix(".json")
        if not item.key.endswith(".json") or old_id == sheet_id:
            continue
        try:
            manifest = store.get_json(item.key)
        except ValueError:  # not JSON (written by hand?): not a sheet this key can claim
            continue
        if not isinstance(manifest, dict) or manifest.get("source_key") != key:
            continue
        store.put_json(
            superseded_key(dataset, old_id),
            {
                "sheet_id": old_id,
                "source_key": key,
                "source_etag": manifest.get("source_etag"),
                "superseded_by": sheet_id,
                "superseded_by_etag": etag,
            },
        )
        replaced.append(old_id)
    return sorted(replaced)


def _labels_manifest(store: ObjectStore, sheet_key: str) -> dict[str, str] | None:
    manifest_key = labels_manifest_key(sheet_key)
    head = store.head(manifest_key)
    if head is None:
        return None
    if head.size > MAX_LABELS_MANIFEST_BYTES:
        raise InvalidInput(
            "bad_manifest", f"{manifest_key} is over {MAX_LABELS_MANIFEST_BYTES} bytes"
        )
    try:
        return parse_labels_manifest(store.get(manifest_key).body)
    except ObjectMissing:
        return None


def _forget_quarantine(store: ObjectStore, key: str, etag: str) -> None:
    """A sheet quarantined earlier with these very bytes (its labels manifest had not arrived
    yet) is no longer bad: its stale reason goes. Other versions' records stay."""
    reason_key = quarantine_key(key) + ".reason.json"
    reason = store.get_json(reason_key)
    if isinstance(reason, dict) and reason.get("source_etag") == etag:
        store.delete(reason_key)
        store.delete(quarantine_key(key))
        if "overlay" in reason:
            store.delete(str(reason["overlay"]))
