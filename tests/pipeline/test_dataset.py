"""The dataset format: per-sheet shards (and the per-tile ones before them), deterministic
keys, snapshots."""

from __future__ import annotations

import numpy as np
import pytest

from tessera.dataset import (
    DatasetError,
    Row,
    decode_row,
    decode_rows,
    encode_row,
    encode_rows,
    load_dataset,
    put_sheet_rows,
    shard_key_for_tile,
    sheet_of_shard,
    sheet_rows_version,
    sheet_shard_key,
    write_row,
)
from tessera.storage import ObjectStore, StoredObject
from tessera.storage.memory import InMemoryObjectStore


def a_row(label: str = "7", key: str = "tiles/digits/s1/r000-c000.png", etag: str = "e1") -> Row:
    return Row(
        pixels=np.arange(784, dtype=np.uint32).astype(np.uint8),
        label=label,
        source_key=key,
        source_etag=etag,
    )


def test_a_row_round_trips_through_its_shard_bytes() -> None:
    row = decode_row(encode_row(a_row(label="ß")))
    assert row.label == "ß" and row.source_etag == "e1"
    assert np.array_equal(row.pixels, a_row().pixels)


def test_shard_keys_mirror_tile_keys_so_reprocessing_rewrites_the_same_row() -> None:
    assert (
        shard_key_for_tile("tiles/digits/s1/r000-c001.png")
        == "datasets/digits/rows/s1/r000-c001.npz"
    )


def test_a_damaged_shard_is_named_in_the_error() -> None:
    with pytest.raises(DatasetError, match=r"rows/x\.npz"):
        decode_row(b"garbage", key="rows/x.npz")


def test_a_shard_with_the_wrong_vector_length_is_refused() -> None:
    import io

    buffer = io.BytesIO()
    np.savez(
        buffer,
        pixels=np.zeros(10, np.uint8),
        label=np.array("1"),
        source_key=np.array("k"),
        source_etag=np.array("e"),
    )
    with pytest.raises(DatasetError, match="784"):
        decode_row(buffer.getvalue(), key="k")


def test_writing_the_same_tile_twice_writes_once(memory_store: ObjectStore) -> None:
    assert write_row(memory_store, a_row())[1] is True
    assert write_row(memory_store, a_row())[1] is False
    assert write_row(memory_store, a_row(etag="e2"))[1] is True  # new content replaces the row
    assert len(list(memory_store.list("datasets/digits/rows/"))) == 1


def test_the_same_tile_relabelled_rewrites_its_row(memory_store: ObjectStore) -> None:
    # GIVEN a tile's row written under a wrong label
    shard, _ = write_row(memory_store, a_row(label="8"))
    # WHEN the same tile bytes (same ETag) arrive with the corrected label
    written = write_row(memory_store, a_row(label="3"))[1]
    # THEN the row is rewritten and holds the new label, still one row for the tile
    assert written is True
    assert decode_row(memory_store.get(shard).body).label == "3"
    assert write_row(memory_store, a_row(label="3"))[1] is False
    assert len(list(memory_store.list("datasets/digits/rows/"))) == 1


def test_loading_reads_every_row_and_reuses_a_snapshot_while_nothing_changed(
    memory_store: ObjectStore,
) -> None:
    for col in range(3):
        write_row(memory_store, a_row(label=str(col), key=f"tiles/digits/s1/r000-c{col:03d}.png"))
    first = load_dataset(memory_store, "digits")
    assert len(first) == 3 and sorted(first.y.tolist()) == ["0", "1", "2"]
    assert [
        item.key.rsplit("/", 1)[1] for item in memory_store.list("datasets/digits/snapshots/")
    ] == [
        f"{first.fingerprint}.npz",
        "latest.json",
    ]
    again = load_dataset(memory_store, "digits")
    assert again.fingerprint == first.fingerprint
    write_row(memory_store, a_row(label="9", key="tiles/digits/s1/r001-c000.png"))
    changed = load_dataset(memory_store, "digits")
    assert len(changed) == 4 and changed.fingerprint != first.fingerprint


class CountingStore(InMemoryObjectStore):
    """An in-memory bucket that counts the GETs of row shards, as S3 would bill them."""

    def __init__(self) -> None:
        super().__init__(bucket="counting")
        self.row_gets = 0

    def get(self, key: str) -> StoredObject:
        if "/rows/" in key:
            self.row_gets += 1
        return super().get(key)


def test_adding_a_sheet_reads_only_its_rows_and_a_rewritten_row_is_read_again() -> None:
    # GIVEN a dataset of 40 rows, loaded once (every shard read, a snapshot written)
    store = CountingStore()
    for col in range(40):
        write_row(store, a_row(label=str(col % 10), key=f"tiles/digits/s1/r000-c{col:03d}.png"))
    first = load_dataset(store, "digits")
    assert (len(first), store.row_gets) == (40, 40)

    # WHEN a sheet of 5 rows is added and one old row relabelled, then the dataset loaded
    store.row_gets = 0
    for col in range(5):
        write_row(store, a_row(label="7", key=f"tiles/digits/s2/r000-c{col:03d}.png"))
    write_row(store, a_row(label="9", key="tiles/digits/s1/r000-c000.png"))
    second = load_dataset(store, "digits")

    # THEN only the 5 new shards and the rewritten one are read, and the rows are all there,
    # the relabelled one with its new label, exactly as a full read gives them
    assert store.row_gets == 6
    assert len(second) == 45
    fresh = InMemoryObjectStore(bucket="fresh")
    for item in store.list("datasets/digits/rows/"):
        fresh.put(item.key, store.get(item.key).body)
    full = load_dataset(fresh, "digits")
    assert full.y.tolist() == second.y.tolist() and full.sources.tolist() == second.sources.tolist()
    assert np.array_equal(full.x, second.x)
    relabelled = second.sources.tolist().index("tiles/digits/s1/r000-c000.png")
    assert second.y[relabelled] == "9"


def test_an_empty_dataset_is_an_error_naming_it(memory_store: ObjectStore) -> None:
    with pytest.raises(DatasetError, match="'nothing' is empty"):
        load_dataset(memory_store, "nothing")


def sheet_rows(sheet: str, labels: str) -> list[Row]:
    return [
        Row(
            pixels=np.full(784, index, dtype=np.uint8),
            label=label,
            source_key=f"tiles/digits/{sheet}/r000-c{index:03d}.png",
            source_etag=f"e{index}",
        )
        for index, label in enumerate(labels)
    ]


def test_a_sheets_rows_round_trip_through_one_shard_in_order() -> None:
    rows = sheet_rows("s1", "7ß3")
    stored = decode_rows(encode_rows(rows), key="k")
    assert stored.labels == ["7", "ß", "3"] and len(stored) == 3
    assert stored.sources == [r.source_key for r in rows]
    assert [r.pixels[0] for r in stored.as_rows()] == [0, 1, 2]
    # a tile's shard of the layout before reads as a shard of one row
    single = decode_rows(encode_row(a_row()), key="k")
    assert single.labels == ["7"] and single.pixels.shape == (1, 784)


def test_a_sheet_shard_is_keyed_by_its_sheet_and_records_its_version(
    memory_store: ObjectStore,
) -> None:
    key = put_sheet_rows(memory_store, "digits", "s1", sheet_rows("s1", "12"), version="d1")
    assert key == sheet_shard_key("digits", "s1") == "datasets/digits/rows/s1.npz"
    assert sheet_of_shard(key) == "s1" == sheet_of_shard("datasets/digits/rows/s1/r000-c001.npz")
    assert sheet_rows_version(memory_store, "digits", "s1") == "d1"
    assert sheet_rows_version(memory_store, "digits", "s2") is None


def test_a_sheets_shard_replaces_its_per_tile_shards_and_others_still_load(
    memory_store: ObjectStore,
) -> None:
    # GIVEN sheet s1 vectorized tile by tile (the layout before) and then again as one shard,
    # and sheet s0 still only tile by tile
    for col in range(3):
        write_row(memory_store, a_row(label="1", key=f"tiles/digits/s1/r000-c{col:03d}.png"))
        write_row(memory_store, a_row(label="0", key=f"tiles/digits/s0/r000-c{col:03d}.png"))
    put_sheet_rows(memory_store, "digits", "s1", sheet_rows("s1", "444"), version="d")
    # WHEN the dataset loads
    dataset = load_dataset(memory_store, "digits")
    # THEN s1's rows are its shard's, once, beside s0's per-tile rows
    assert sorted(dataset.y.tolist()) == ["0", "0", "0", "4", "4", "4"]
    assert len(set(dataset.sources.tolist())) == 6


def test_a_snapshot_keeps_a_sheet_shards_rows_until_the_shard_changes() -> None:
    store = CountingStore()
    for sheet in ("s1", "s2"):
        put_sheet_rows(store, "digits", sheet, sheet_rows(sheet, "0123"), version=sheet)
    first = load_dataset(store, "digits")
    assert (len(first), store.row_gets) == (8, 2)
    store.row_gets = 0
    put_sheet_rows(store, "digits", "s2", sheet_rows("s2", "99"), version="relabelled")
    second = load_dataset(store, "digits")
    assert store.row_gets == 1  # only s2's rewritten shard
    assert sorted(second.y.tolist()) == ["0", "1", "2", "3", "9", "9"]


def test_shards_that_hold_no_rows_are_an_error_not_an_empty_dataset(
    memory_store: ObjectStore,
) -> None:
    put_sheet_rows(memory_store, "blank", "s1", [], version="d")
    with pytest.raises(DatasetError, match="no rows"):
        load_dataset(memory_store, "blank")


def test_a_sheet_shard_whose_arrays_disagree_is_refused() -> None:
    import io

    buffer = io.BytesIO()
    np.savez(
        buffer,
        pixels=np.zeros((2, 784), np.uint8),
        label=np.array(["1"]),
        source_key=np.array(["a", "b"]),
        source_etag=np.array(["e", "f"]),
    )
    with pytest.raises(DatasetError, match="n labels"):
        decode_rows(buffer.getvalue(), key="k")
