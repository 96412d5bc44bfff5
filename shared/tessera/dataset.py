"""The dataset format: one shard per sheet under datasets/<name>/rows/, and snapshots.

S3 has no append, and concurrent vectorize invocations must not overwrite each other, so each
sheet's rows are written to a key derived from the sheet's id: reprocessing a message rewrites
the same shard instead of adding rows. (Before per-sheet shards each tile had a shard of its
own, rows/<sheet>/<cell>.npz; those are still read, and a sheet's shard replaces them.)
Training reads every shard once, then writes a snapshot keyed by the fingerprint of what it
read, so the next run over unchanged data is one GET, and the next after new sheets reads the
latest snapshot and only the shards new since.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from tessera.config import PIPELINE, VECTOR_LENGTH
from tessera.storage import ObjectMissing, ObjectStore, encode_metadata

ROWS = "rows/"
SNAPSHOTS = "snapshots/"
SHEETS = "sheets/"
# A sheet replaced by other bytes at the same key: its rows stay stored but are not trained on.
SUPERSEDED = "superseded/"
# Where Split may write: one manifest per sheet under any dataset (an IAM resource pattern),
# and the record of a sheet superseded by a new version of its key.
SHEET_MANIFESTS_PATTERN = f"{PIPELINE.prefixes.datasets}*/{SHEETS}"
SUPERSEDED_PATTERN = f"{PIPELINE.prefixes.datasets}*/{SUPERSEDED}"
ROWS_PATTERN = f"{PIPELINE.prefixes.datasets}*/{ROWS}"  # all Vectorize reads and writes there


class DatasetError(Exception):
    """A dataset that cannot be trained on, with a message that names the problem."""


@dataclass(frozen=True)
class Row:
    pixels: NDArray[np.uint8]
    label: str
    source_key: str
    source_etag: str


@dataclass(frozen=True)
class Dataset:
    x: NDArray[np.uint8]  # (n, 784), MNIST's 0..255 ink-bright bytes
    y: NDArray[np.str_]  # (n,)
    sources: NDArray[np.str_]  # (n,) tile key each row came from
    fingerprint: str

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def features(self) -> NDArray[np.float32]:
        """What every model takes: float32 in [0, 1]."""
        return self.x.astype(np.float32) / 255.0


def dataset_prefix(name: str) -> str:
    return f"{PIPELINE.prefixes.datasets}{name}/"


def sheet_manifest_key(name: str, sheet_id: str) -> str:
    """Split's record of a sheet: its grid, where it came from, and which cells were empty."""
    return f"{dataset_prefix(name)}{SHEETS}{sheet_id}.json"


def superseded_key(name: str, sheet_id: str) -> str:
    return f"{dataset_prefix(name)}{SUPERSEDED}{sheet_id}.json"


def superseded_sheets(store: ObjectStore, name: str) -> set[str]:
    """The ids of a dataset's sheets that a later upload to the same key replaced (one LIST)."""
    prefix = dataset_prefix(name) + SUPERSEDED
    return {
        item.key[len(prefix) :].removesuffix(".json")
        for item in store.list(prefix)
        if item.key.endswith(".json")
    }


def sheet_of_shard(shard_key: str) -> str:
    """datasets/<dataset>/rows/<sheet>.npz (or a tile's rows/<sheet>/<cell>.npz) -> <sheet>."""
    rest = shard_key.split(f"/{ROWS}", 1)[-1]
    return rest.split("/", 1)[0] if "/" in rest else rest.removesuffix(".npz")


def sheet_shard_key(name: str, sheet_id: str) -> str:
    """Where Vectorize writes every row of one sheet."""
    return f"{dataset_prefix(name)}{ROWS}{sheet_id}.npz"


@dataclass(frozen=True)
class Rows:
    """The rows of one shard, in the shard's order."""

    pixels: NDArray[np.uint8]  # (n, 784)
    labels: list[str]
    sources: list[str]  # the tile each row came from
    etags: list[str]

    def __len__(self) -> int:
        return len(self.labels)

    def as_rows(self) -> list[Row]:
        return [
            Row(pixels=p, label=label, source_key=source, source_etag=etag)
            for p, label, source, etag in zip(
                self.pixels, self.labels, self.sources, self.etags, strict=True
            )
        ]


def shard_key_for_tile(tile_key: str) -> str:
    """tiles/<dataset>/<sheet>/<cell>.png -> datasets/<dataset>/rows/<sheet>/<cell>.npz"""
    tiles = PIPELINE.prefixes.tiles
    if not tile_key.startswith(tiles):
        raise ValueError(f"{tile_key!r} is not under {tiles}")
    dataset, rest = tile_key[len(tiles) :].split("/", 1)
    return f"{dataset_prefix(dataset)}{ROWS}{rest.rsplit('.', 1)[0]}.npz"


def encode_row(row: Row) -> bytes:
    if row.pixels.shape != (VECTOR_LENGTH,) or row.pixels.dtype != np.uint8:
        raise ValueError(f"a row is {VECTOR_LENGTH} uint8 values, got {row.pixels.shape}")
    buffer = io.BytesIO()
    np.savez(
        buffer,
        pixels=row.pixels,
        label=np.array(row.label),
        source_key=np.array(row.source_key),
        source_etag=np.array(row.source_etag),
    )
    return buffer.getvalue()


def decode_row(data: bytes, *, key: str = "") -> Row:
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as shard:
            pixels = shard["pixels"]
            row = Row(
                pixels=pixels,
                label=str(shard["label"]),
                source_key=str(shard["source_key"]),
                source_etag=str(shard["source_etag"]),
            )
    except Exception as error:  # numpy raises many types for a damaged archive
        raise DatasetError(f"corrupt shard {key}: {error}") from None
    if pixels.shape != (VECTOR_LENGTH,) or pixels.dtype != np.uint8:
        raise DatasetError(
            f"corrupt shard {key}: expected {VECTOR_LENGTH} uint8 pixels, "
            f"got {pixels.shape} {pixels.dtype}"
        )
    return row


def encode_rows(rows: Sequence[Row]) -> bytes:
    """One shard of many rows (a sheet's), in the order given."""
    pixels = np.stack([r.pixels for r in rows]) if rows else np.zeros((0, VECTOR_LENGTH), np.uint8)
    if pixels.shape[1:] != (VECTOR_LENGTH,) or pixels.dtype != np.uint8:
        raise ValueError(f"a row is {VECTOR_LENGTH} uint8 values, got {pixels.shape[1:]}")
    buffer = io.BytesIO()
    np.savez(
        buffer,
        pixels=pixels,
        label=np.array([r.label for r in rows], dtype=str),
        source_key=np.array([r.source_key for r in rows], dtype=str),
        source_etag=np.array([r.source_etag for r in rows], dtype=str),
    )
    return buffer.getvalue()


def decode_rows(data: bytes, *, key: str = "") -> Rows:
    """A sheet's shard, or a single tile's (the layout before per-sheet shards)."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as shard:
            pixels = shard["pixels"]
            labels, sources, etags = (
                [str(v) for v in np.atleast_1d(shard[name])]
                for name in ("label", "source_key", "source_etag")
            )
    except Exception as error:  # numpy raises many types for a damaged archive
        raise DatasetError(f"corrupt shard {key}: {error}") from None
    if pixels.ndim == 1:  # one tile's shard
        pixels = pixels.reshape(1, -1)
    if (
        pixels.shape[1:] != (VECTOR_LENGTH,)
        or pixels.dtype != np.uint8
        or not len(pixels) == len(labels) == len(sources) == len(etags)
    ):
        raise DatasetError(
            f"corrupt shard {key}: expected n x {VECTOR_LENGTH} uint8 pixels and n labels, "
            f"got {pixels.shape} {pixels.dtype} and {len(labels)} labels"
        )
    return Rows(pixels=pixels, labels=labels, sources=sources, etags=etags)


def sheet_rows_version(store: ObjectStore, name: str, sheet_id: str) -> str | None:
    """Which version of a sheet (its tile batch's digest) its shard holds: one HEAD."""
    head = store.head(sheet_shard_key(name, sheet_id))
    return None if head is None else head.metadata.get("tile-batch")


def put_sheet_rows(
    store: ObjectStore, name: str, sheet_id: str, rows: Sequence[Row], *, version: str
) -> str:
    """Write a sheet's rows as one shard, recording which `version` of the sheet they are."""
    key = sheet_shard_key(name, sheet_id)
    store.put(
        key,
        encode_rows(rows),
        content_type="application/x-npz",
        metadata={"tile-batch": version, "rows": str(len(rows))},
    )
    return key


def write_row(store: ObjectStore, row: Row) -> tuple[str, bool]:
    """Write a tile's row as a shard of its own unless the same row is already there; (key,
    written). The layout before per-sheet shards: `load_dataset` still reads it.

    A row is its tile's content *and* its label: a sheet uploaded again with the same bytes but
    corrected labels rewrites its tiles with the same ETags, and its rows must follow the new
    labels. Both are kept in the shard's metadata, so telling is one HEAD.
    """
    key = shard_key_for_tile(row.source_key)
    wanted = encode_metadata({"source-etag": row.source_etag, "label": row.label})
    existing = store.head(key)
    if existing is not None and all(existing.metadata.get(k) == v for k, v in wanted.items()):
        return key, False
    store.put(key, encode_row(row), content_type="application/x-npz", metadata=wanted)
    return key, True


def fingerprint_of(listing: Iterable[tuple[str, str]]) -> str:
    digest = hashlib.sha256()
    for key, etag in sorted(listing):
        digest.update(f"{key}\t{etag.strip(chr(34))}\n".encode())
    return digest.hexdigest()[:16]


def load_dataset(store: ObjectStore, name: str, *, workers: int = 32) -> Dataset:
    """Every row of one dataset but those of superseded sheets, through a snapshot: the one of
    this very listing when nothing changed (one GET), else the latest one, whose rows are kept
    where their shard is unchanged, so only new and rewritten shards are read: adding a sheet
    costs its rows, not the dataset's."""
    prefix = dataset_prefix(name) + ROWS
    listing = _current_shards({item.key: item.etag.strip('"') for item in store.list(prefix)})
    if not listing:
        raise DatasetError(f"dataset {name!r} is empty: no rows under s3://{store.bucket}/{prefix}")
    retired = superseded_sheets(store, name)
    if retired:
        listing = {key: etag for key, etag in listing.items() if sheet_of_shard(key) not in retired}
        if not listing:
            raise DatasetError(
                f"dataset {name!r} has only rows of superseded sheets (replaced by uploads that "
                "have no rows yet, or none)"
            )
    fingerprint = fingerprint_of(listing.items())
    snapshot_key = _snapshot_key(name, fingerprint)
    if store.head(snapshot_key) is not None:
        return _decode_snapshot(store.get(snapshot_key).body, fingerprint).dataset

    keys = sorted(listing)
    base = _latest_snapshot(store, name)
    kept: dict[str, list[int]] = {}
    if base is not None:
        for index, (key, etag) in enumerate(zip(base.keys, base.etags, strict=True)):
            if listing.get(key) == etag:
                kept.setdefault(key, []).append(index)
    wanted = [key for key in keys if key not in kept]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        read = dict(
            zip(
                wanted,
                pool.map(lambda key: decode_rows(store.get(key).body, key=key), wanted),
                strict=True,
            )
        )
    parts_x: list[NDArray[np.uint8]] = []
    y: list[str] = []
    sources: list[str] = []
    row_keys: list[str] = []
    for key in keys:
        if key in kept:
            assert base is not None
            indices = kept[key]
            parts_x.append(base.dataset.x[indices])
            y.extend(str(label) for label in base.dataset.y[indices])
            sources.extend(str(source) for source in base.dataset.sources[indices])
            row_keys.extend([key] * len(indices))
        else:
            rows = read[key]
            parts_x.append(rows.pixels)
            y.extend(rows.labels)
            sources.extend(rows.sources)
            row_keys.extend([key] * len(rows))
    x = np.concatenate(parts_x) if parts_x else np.zeros((0, VECTOR_LENGTH), np.uint8)
    if not len(x):
        raise DatasetError(f"dataset {name!r} has shards but no rows (every cell was empty)")
    dataset = Dataset(x=x, y=np.array(y), sources=np.array(sources), fingerprint=fingerprint)
    etags = [listing[key] for key in row_keys]
    store.put(
        snapshot_key,
        _encode_snapshot(dataset, row_keys, etags),
        content_type="application/x-npz",
    )
    store.put_json(_latest_key(name), {"fingerprint": fingerprint, "rows": len(row_keys)})
    return dataset


def _current_shards(listing: dict[str, str]) -> dict[str, str]:
    """The listing without the per-tile shards of sheets that have a shard of their own (a
    sheet split again since per-sheet shards: its rows would be there twice)."""
    sheets = {key.removesuffix(".npz") + "/" for key in listing if _is_sheet_shard(key)}
    if not sheets:
        return listing
    return {
        key: etag
        for key, etag in listing.items()
        if _is_sheet_shard(key) or key.rsplit("/", 1)[0] + "/" not in sheets
    }


def _is_sheet_shard(key: str) -> bool:
    return "/" not in key.split(f"/{ROWS}", 1)[-1]


def _snapshot_key(name: str, fingerprint: str) -> str:
    return f"{dataset_prefix(name)}{SNAPSHOTS}{fingerprint}.npz"


def _latest_key(name: str) -> str:
    """Which snapshot was written last: the base the next load starts from."""
    return f"{dataset_prefix(name)}{SNAPSHOTS}latest.json"


@dataclass(frozen=True)
class _Snapshot:
    dataset: Dataset
    keys: list[str]  # the shard each row came from, and its ETag then (empty: an old snapshot)
    etags: list[str]


def _latest_snapshot(store: ObjectStore, name: str) -> _Snapshot | None:
    pointer = store.get_json(_latest_key(name))
    if not isinstance(pointer, dict) or not isinstance(pointer.get("fingerprint"), str):
        return None
    key = _snapshot_key(name, pointer["fingerprint"])
    try:
        snapshot = _decode_snapshot(store.get(key).body, pointer["fingerprint"])
    except (ObjectMissing, ValueError, KeyError, OSError):
        return None  # gone or unreadable: every shard is read, as on a first load
    return snapshot if snapshot.keys else None


def merge(datasets: Sequence[Dataset]) -> Dataset:
    if len(datasets) == 1:
        return datasets[0]
    return Dataset(
        x=np.concatenate([d.x for d in datasets]),
        y=np.concatenate([d.y for d in datasets]),
        sources=np.concatenate([d.sources for d in datasets]),
        fingerprint=hashlib.sha256("+".join(d.fingerprint for d in datasets).encode()).hexdigest()[
            :16
        ],
    )


def _encode_snapshot(dataset: Dataset, keys: Sequence[str], etags: Sequence[str]) -> bytes:
    buffer = io.BytesIO()
    np.savez_compressed(
        buffer,
        x=dataset.x,
        y=dataset.y,
        sources=dataset.sources,
        keys=np.array(keys),
        etags=np.array(etags),
    )
    return buffer.getvalue()


def _decode_snapshot(data: bytes, fingerprint: str) -> _Snapshot:
    with np.load(io.BytesIO(data), allow_pickle=False) as snapshot:
        dataset = Dataset(
            x=snapshot["x"], y=snapshot["y"], sources=snapshot["sources"], fingerprint=fingerprint
        )
        names = set(snapshot.files)
        keys = [str(k) for k in snapshot["keys"]] if "keys" in names else []
        etags = [str(e) for e in snapshot["etags"]] if "etags" in names else []
    return _Snapshot(dataset=dataset, keys=keys, etags=etags)
