"""Corrections: people's fixes to stored labels, a layer on top of the rows, never a rewrite.

Each correction is an object of its own,
`datasets/<name>/corrections/<sheet-id>/<cell>/<time>-<id>.json`, holding the tile, what was
done (a new `label`, `exclude`, or `undo` of the tile's corrections), who did it and when.
Writing one never reads or replaces another, so two people correcting the same tile at once
both land (the later wins, both stay in the tile's history) and a flood of corrections loses
none. A tile's current correction is its latest; an `undo` brings back the stored label.
Training reads the layer on top of the rows (`apply_corrections`); the rows stay as Vectorize
wrote them.

Reading the layer costs one LIST page per 1,000 corrections plus a GET of each correction not
read before: every training run leaves `datasets/<name>/snapshots/corrections.json`, what it
read keyed by object key and ETag, and the next read GETs only what is new or changed since.
The listing stays the truth: a correction missing from the snapshot is read, one deleted from
the bucket is dropped, and a snapshot that is gone or unreadable means every correction is read.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from tessera.config import PIPELINE
from tessera.dataset import (
    SNAPSHOTS,
    Dataset,
    dataset_prefix,
    shard_key_for_tile,
    sheet_shard_key,
)
from tessera.errors import InvalidInput
from tessera.names import validate_dataset_name, validate_label
from tessera.storage import ObjectStore

CORRECTIONS = "corrections/"
CORRECTIONS_PATTERN = f"{PIPELINE.prefixes.datasets}*/{CORRECTIONS}"  # the console writes here
MAX_AUTHOR_LENGTH = 128


class UnknownTile(InvalidInput):
    """A correction for a tile (or dataset) that is not there: the API's 404."""


@dataclass(frozen=True)
class Correction:
    tile: str
    action: str  # "label", "exclude" or "undo"
    label: str | None
    by: str
    at: str  # ISO 8601, UTC, microseconds: the order corrections are applied in
    id: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def corrections_prefix(name: str) -> str:
    return f"{dataset_prefix(name)}{CORRECTIONS}"


def tile_cell(name: str, tile: str) -> tuple[str, str]:
    """tiles/<name>/<sheet-id>/<cell>.png -> (sheet-id, cell); InvalidInput for anything else."""
    prefix = f"{PIPELINE.prefixes.tiles}{name}/"
    parts = tile.removeprefix(prefix).split("/")
    if (
        not tile.startswith(prefix)
        or len(parts) != 2
        or not all(parts)
        or not parts[1].endswith(".png")
        or ".." in parts
    ):
        raise InvalidInput(
            "bad_tile",
            f"{tile!r} is not a tile of dataset {name!r} ({prefix}<sheet-id>/<cell>.png)",
        )
    return parts[0], parts[1].removesuffix(".png")


def record_correction(
    store: ObjectStore,
    name: str,
    tile: str,
    *,
    label: str | None = None,
    exclude: bool = False,
    undo: bool = False,
    by: str,
    now: datetime | None = None,
) -> Correction:
    """Store one correction of `tile` after checking it can apply: the dataset has the tile's
    sheet and the tile is still there (a stale page gets `UnknownTile`, never a silent write)."""
    validate_dataset_name(name)
    sheet, cell = tile_cell(name, tile)
    if sum((label is not None, exclude, undo)) != 1:
        raise InvalidInput("bad_correction", "give exactly one of label, exclude or undo")
    if label is not None:
        validate_label(label)
    if not by or len(by) > MAX_AUTHOR_LENGTH or not by.isprintable():
        raise InvalidInput("bad_correction", f"the author must be 1-{MAX_AUTHOR_LENGTH} characters")
    if (
        store.head(sheet_shard_key(name, sheet)) is None
        and store.head(shard_key_for_tile(tile)) is None
    ):
        raise UnknownTile("unknown_tile", f"dataset {name!r} has no rows of sheet {sheet!r}")
    if store.head(tile) is None:
        raise UnknownTile("unknown_tile", f"{tile} is not there any more")
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    correction = Correction(
        tile=tile,
        action="label" if label is not None else "exclude" if exclude else "undo",
        label=label,
        by=by,
        at=moment.isoformat(timespec="microseconds"),
        id=uuid.uuid4().hex[:12],
    )
    stamp = moment.strftime("%Y%m%dT%H%M%S%fZ")
    store.put_json(
        f"{corrections_prefix(name)}{sheet}/{cell}/{stamp}-{correction.id}.json",
        {**correction.as_dict()},
    )
    return correction


def tile_history(store: ObjectStore, name: str, tile: str) -> list[Correction]:
    """Every correction of one tile, oldest first: the audit trail."""
    sheet, cell = tile_cell(name, tile)
    read = _read(store, [i.key for i in store.list(f"{corrections_prefix(name)}{sheet}/{cell}/")])
    return _in_order(read.values())


def corrections_snapshot_key(name: str) -> str:
    return f"{dataset_prefix(name)}{SNAPSHOTS}corrections.json"


def current_corrections(
    store: ObjectStore, name: str, *, keep_snapshot: bool = False
) -> dict[str, Correction]:
    """Each corrected tile's latest correction (tiles whose latest is an undo are left out).

    Corrections already in the layer's snapshot are not read again; `keep_snapshot` (training
    does) writes the snapshot anew when anything was new, changed or gone."""
    listed = list(store.list(corrections_prefix(name)))
    known = _read_snapshot(store, name) if listed else {}
    fresh = [item for item in listed if item.key not in known or known[item.key][0] != item.etag]
    read = _read(store, [item.key for item in fresh])
    entries = {
        item.key: (item.etag, read[item.key] if item.key in read else known[item.key][1])
        for item in listed
    }
    if keep_snapshot and (fresh or set(known) - set(entries)):
        _write_snapshot(store, name, entries)
    latest: dict[str, Correction] = {}
    for correction in _in_order(c for _, c in entries.values()):
        latest[correction.tile] = correction
    return {tile: c for tile, c in latest.items() if c.action != "undo"}


def apply_corrections(
    dataset: Dataset, corrections: dict[str, Correction]
) -> tuple[Dataset, dict[str, int]]:
    """The dataset with corrected labels and without excluded tiles; its fingerprint says
    which corrections went in, so a snapshot or an evaluation never mistakes one for the other."""
    if not corrections:
        return dataset, {"relabelled": 0, "excluded": 0}
    y = dataset.y.copy()
    keep = np.ones(len(dataset), dtype=bool)
    counts = {"relabelled": 0, "excluded": 0}
    for index, source in enumerate(dataset.sources.tolist()):
        correction = corrections.get(source)
        if correction is None:
            continue
        if correction.action == "exclude":
            keep[index] = False
            counts["excluded"] += 1
        elif correction.label is not None and correction.label != y[index]:
            y = y.astype(np.result_type(y.dtype, np.array([correction.label]).dtype))
            y[index] = correction.label
            counts["relabelled"] += 1
    applied = sorted(f"{c.tile}\t{c.action}\t{c.label}\t{c.id}" for c in corrections.values())
    fingerprint = hashlib.sha256("\n".join([dataset.fingerprint, *applied]).encode()).hexdigest()[
        :16
    ]
    corrected = Dataset(
        x=dataset.x[keep], y=y[keep], sources=dataset.sources[keep], fingerprint=fingerprint
    )
    return corrected, counts


def _parse(document: Any) -> Correction | None:
    """A stored correction, or None for anything else (an object written by hand corrects
    nothing)."""
    try:
        correction = Correction(**{field: document[field] for field in Correction.__annotations__})
    except (KeyError, TypeError):
        return None
    fields = (correction.tile, correction.action, correction.by, correction.at, correction.id)
    if not all(isinstance(value, str) for value in fields):
        return None
    if correction.label is not None and not isinstance(correction.label, str):
        return None
    return correction


def _read(store: ObjectStore, keys: Iterable[str]) -> dict[str, Correction | None]:
    def one(key: str) -> Correction | None:
        try:
            return _parse(json.loads(store.get(key).body))
        except ValueError:
            return None  # not JSON: not one of ours

    keys = list(keys)
    with ThreadPoolExecutor(max_workers=16) as pool:
        return dict(zip(keys, pool.map(one, keys), strict=True))


def _in_order(corrections: Iterable[Correction | None]) -> list[Correction]:
    """The order corrections apply in: by time, then id (the later wins)."""
    return sorted((c for c in corrections if c is not None), key=lambda c: (c.at, c.id))


def _read_snapshot(store: ObjectStore, name: str) -> dict[str, tuple[str, Correction | None]]:
    """The snapshot's entries (key -> ETag then, correction or None), or nothing when it is
    gone or not what `_write_snapshot` writes."""
    try:
        document = store.get_json(corrections_snapshot_key(name))
    except ValueError:
        return {}
    if not isinstance(document, dict) or not isinstance(document.get("entries"), dict):
        return {}
    entries: dict[str, tuple[str, Correction | None]] = {}
    for key, entry in document["entries"].items():
        if not isinstance(entry, dict) or not isinstance(entry.get("etag"), str):
            return {}
        correction = entry.get("correction")
        parsed = None if correction is None else _parse(correction)
        if correction is not None and parsed is None:
            return {}
        entries[key] = (entry["etag"], parsed)
    return entries


def _write_snapshot(
    store: ObjectStore, name: str, entries: dict[str, tuple[str, Correction | None]]
) -> None:
    document = {
        "entries": {
            key: {"etag": etag, "correction": None if c is None else c.as_dict()}
            for key, (etag, c) in sorted(entries.items())
        }
    }
    store.put_json(corrections_snapshot_key(name), document)
