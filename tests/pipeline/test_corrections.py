"""Corrections: a layer over the rows that training reads; every correction kept, undoable."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import numpy as np
import pytest

from tessera.corrections import (
    Correction,
    UnknownTile,
    apply_corrections,
    corrections_snapshot_key,
    current_corrections,
    record_correction,
    tile_history,
)
from tessera.dataset import Row, load_dataset, put_sheet_rows
from tessera.errors import InvalidInput
from tessera.storage import ObjectStore
from tessera_dev.bench.loading import CountingMemoryStore

T0 = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)


def tile(cell: int, sheet: str = "s1") -> str:
    return f"tiles/digits/{sheet}/r000-c{cell:03d}.png"


S = TypeVar("S", bound=ObjectStore)


def seed(store: S) -> S:
    """A dataset of one sheet: four rows labelled 3, their tile PNGs beside them."""
    rows = [
        Row(pixels=np.full(784, i, np.uint8), label="3", source_key=tile(i), source_etag="e")
        for i in range(4)
    ]
    put_sheet_rows(store, "digits", "s1", rows, version="v")
    for i in range(4):
        store.put(tile(i), b"png", content_type="image/png")
    return store


@pytest.fixture
def store(memory_store: ObjectStore) -> ObjectStore:
    return seed(memory_store)


def test_training_sees_relabelled_and_excluded_tiles_and_the_rows_stay_as_written(
    store: ObjectStore,
) -> None:
    record_correction(store, "digits", tile(0), label="8", by="ana", now=T0)
    record_correction(store, "digits", tile(1), exclude=True, by="ana", now=T0)
    rows = load_dataset(store, "digits")
    corrected, counts = apply_corrections(rows, current_corrections(store, "digits"))
    assert counts == {"relabelled": 1, "excluded": 1}
    assert dict(zip(corrected.sources.tolist(), corrected.y.tolist(), strict=True)) == {
        tile(0): "8",
        tile(2): "3",
        tile(3): "3",
    }
    assert corrected.fingerprint != rows.fingerprint
    assert load_dataset(store, "digits").y.tolist() == ["3"] * 4  # the layer, not a rewrite


def test_two_people_on_one_tile_the_later_wins_both_recorded_and_undo_restores(
    store: ObjectStore,
) -> None:
    record_correction(store, "digits", tile(0), label="8", by="ana", now=T0)
    record_correction(store, "digits", tile(0), label="5", by="ben", now=T0 + timedelta(seconds=1))
    assert current_corrections(store, "digits")[tile(0)].label == "5"
    record_correction(store, "digits", tile(0), undo=True, by="ana", now=T0 + timedelta(seconds=2))
    assert current_corrections(store, "digits") == {}
    history = tile_history(store, "digits", tile(0))
    assert [(c.by, c.action, c.label) for c in history] == [
        ("ana", "label", "8"),
        ("ben", "label", "5"),
        ("ana", "undo", None),
    ]


def test_a_label_that_is_markup_is_stored_as_text_like_any_label(store: ObjectStore) -> None:
    record_correction(store, "digits", tile(2), label="<img>", by="ana")
    assert current_corrections(store, "digits")[tile(2)].label == "<img>"


@pytest.mark.parametrize(
    ("name", "key", "fields", "code"),
    [
        ("digits", tile(9), {"label": "7"}, "unknown_tile"),  # deleted since the page loaded
        ("digits", tile(0, sheet="s9"), {"label": "7"}, "unknown_tile"),
        ("other", "tiles/other/s1/r000-c000.png", {"label": "7"}, "unknown_tile"),
        ("digits", "tiles/other/s1/r000-c000.png", {"label": "7"}, "bad_tile"),
        ("digits", "tiles/digits/s1/../x.png", {"label": "7"}, "bad_tile"),
        ("digits", tile(0), {"label": "a b"}, "bad_label"),
        ("digits", tile(0), {"label": "7", "exclude": True}, "bad_correction"),
        ("digits", tile(0), {}, "bad_correction"),
        ("../x", tile(0), {"label": "7"}, "bad_dataset_name"),
    ],
)
def test_a_correction_that_cannot_apply_is_refused_and_nothing_is_written(
    store: ObjectStore, name: str, key: str, fields: dict[str, object], code: str
) -> None:
    with pytest.raises(InvalidInput) as refused:
        record_correction(store, name, key, by="ana", **fields)  # type: ignore[arg-type]
    assert refused.value.code == code
    assert isinstance(refused.value, UnknownTile) == (code == "unknown_tile")
    assert list(store.list("datasets/digits/corrections/")) == []


def test_a_flood_of_corrections_from_many_threads_loses_none(store: ObjectStore) -> None:
    def correct(n: int) -> None:
        record_correction(store, "digits", tile(n % 4), label=str(n % 10), by=f"user{n}")

    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(correct, range(1000)))
    assert sum(len(tile_history(store, "digits", tile(i))) for i in range(4)) == 1000


def test_a_hand_written_object_in_the_layer_corrects_nothing(store: ObjectStore) -> None:
    store.put("datasets/digits/corrections/s1/r000-c000/garbage.json", b"{not json")
    record_correction(store, "digits", tile(1), label="1", by="ana")
    assert set(current_corrections(store, "digits")) == {tile(1)}


def test_a_training_read_gets_only_the_corrections_new_since_the_last_one() -> None:
    store = seed(CountingMemoryStore())
    for n in range(40):
        at = T0 + timedelta(seconds=n)
        record_correction(store, "digits", tile(n % 4), label=str(n % 10), by="ana", now=at)

    def read() -> tuple[dict[str, Correction], int, int]:
        store.requests.clear()
        layer = current_corrections(store, "digits", keep_snapshot=True)
        return layer, store.requests["GetObject"], store.requests["PutObject"]

    first, first_gets, first_puts = read()
    again, again_gets, again_puts = read()
    record_correction(store, "digits", tile(2), exclude=True, by="ben", now=T0 + timedelta(1))
    added, added_gets, added_puts = read()
    assert (first_gets, again_gets, added_gets) == (40 + 1, 1, 1 + 1)  # + the snapshot's GET
    assert (first_puts, again_puts, added_puts) == (1, 0, 1)  # written only when it changed
    assert again == first
    assert added == current_corrections(store, "digits")  # the same as reading every one
    assert added[tile(2)].action == "exclude" and first[tile(2)].label == "8"


def test_the_listing_stays_the_truth_over_the_snapshot(store: ObjectStore) -> None:
    record_correction(store, "digits", tile(0), label="8", by="ana", now=T0)
    later = record_correction(store, "digits", tile(0), label="5", by="ben", now=T0 + timedelta(1))
    current_corrections(store, "digits", keep_snapshot=True)
    # a correction deleted from the bucket by hand is gone, though the snapshot still has it
    ben = next(i.key for i in store.list("datasets/digits/corrections/") if later.id in i.key)
    store.delete(ben)
    assert current_corrections(store, "digits", keep_snapshot=True)[tile(0)].label == "8"
    # one overwritten by hand (a new ETag) is read again: now it corrects nothing
    ana = next(iter(store.list("datasets/digits/corrections/"))).key
    store.put(ana, b"{not json")
    assert current_corrections(store, "digits", keep_snapshot=True) == {}
    # a snapshot made garbage is ignored: every correction is read
    record_correction(store, "digits", tile(1), label="1", by="ana", now=T0 + timedelta(2))
    store.put(corrections_snapshot_key("digits"), b'{"entries": {"x": {"etag": 1}}}')
    assert set(current_corrections(store, "digits", keep_snapshot=True)) == {tile(1)}
    assert set(current_corrections(store, "digits")) == {tile(1)}
