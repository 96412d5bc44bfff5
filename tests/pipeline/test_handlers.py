"""Split and vectorize handlers against a moto bucket, called with the SQS event Lambda sends."""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np
import pytest
from PIL import Image

from functions.split.handler import lambda_handler as split_handler
from functions.vectorize.handler import lambda_handler as vectorize_handler
from tessera.dataset import load_dataset
from tessera.imaging.decode import encode_png
from tessera.pipeline.outcome import Outcome
from tessera.pipeline.split import split_object
from tessera.pipeline.tile_batch import TileBatch, cell_from_tile, encode_tile_batch
from tessera.pipeline.vectorize import vectorize_object
from tessera.storage import ObjectStore, encode_metadata
from tessera_dev.local.pump import lambda_context
from tessera_dev.samples import Glyphs, render_sheet
from tests.conftest import (
    BUCKET,
    batch_of,
    digits_sheet,
    keys_under,
    load_event,
    rows_under,
    sqs_event_for,
    tile_batches_under,
    tiles_under,
)

CONTEXT = lambda_context("test")


def put(store: ObjectStore, key: str, body: bytes, metadata: dict[str, str] | None = None) -> str:
    store.put(key, body, content_type="image/png", metadata=metadata)
    head = store.head(key)
    assert head is not None
    return head.etag


def split(store: ObjectStore, *keys: str) -> dict:  # type: ignore[type-arg]
    events = [sqs_event_for(BUCKET, key, message_id=f"m{i}") for i, key in enumerate(keys)]
    return split_handler(batch_of(*events), CONTEXT)


def vectorize_all(store: ObjectStore) -> dict:  # type: ignore[type-arg]
    keys = tile_batches_under(store)
    events = [sqs_event_for(BUCKET, key, message_id=f"v{i}") for i, key in enumerate(keys)]
    return vectorize_handler(batch_of(*events), CONTEXT)


def reason_for(store: ObjectStore, key: str) -> dict:  # type: ignore[type-arg]
    document = store.get_json(f"quarantine/{key}.reason.json")
    assert document is not None, f"no quarantine reason for {key}"
    return document  # type: ignore[no-any-return]


def test_a_sheet_becomes_labelled_tiles_then_dataset_rows(store: ObjectStore, digits) -> None:  # type: ignore[no-untyped-def]
    # GIVEN a 2x10 sheet of sevens dropped under the label-folder convention
    key = "incoming/train/digits/7/my sheet-2x10.png"  # a space: S3 sends it as '+'
    put(store, key, digits_sheet(digits, "7", 20))
    # WHEN split and vectorize run on their SQS events
    assert split(store, key) == {"batchItemFailures": []}
    tiles = tiles_under(store, "tiles/digits/")
    assert vectorize_all(store) == {"batchItemFailures": []}
    # THEN there are 20 tiles and 20 rows in one shard, each labelled 7 and pointing back at
    # its tile
    assert len(tiles) == 20
    assert len(keys_under(store, "datasets/digits/rows/")) == 1
    rows = rows_under(store, "datasets/digits/rows/")
    assert len(rows) == 20
    assert {row.label for row in rows} == {"7"}
    assert sorted(row.source_key for row in rows) == tiles
    tile = store.get(tiles[0])
    assert tile.metadata["source-key"] == "incoming%2Ftrain%2Fdigits%2F7%2Fmy%20sheet-2x10.png"


def test_reprocessing_the_same_messages_adds_no_rows(store: ObjectStore, digits) -> None:  # type: ignore[no-untyped-def]
    key = "incoming/train/digits/3/sheet-1x10.png"
    put(store, key, digits_sheet(digits, "3", 10))
    split(store, key)
    vectorize_all(store)
    before = {item.key: item.etag for item in store.list("datasets/digits/rows/")}
    split(store, key)  # a redelivered message
    vectorize_all(store)
    after = {item.key: item.etag for item in store.list("datasets/digits/rows/")}
    assert after == before and len(after) == 1
    assert len(rows_under(store, "datasets/digits/rows/")) == 10


def test_s3_test_event_is_skipped(store: ObjectStore) -> None:
    assert split_handler(load_event("s3_test_event_via_sqs.json"), CONTEXT) == {
        "batchItemFailures": []
    }
    assert keys_under(store, "") == []


def _png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (width, height), 255).save(buffer, format="PNG")
    return buffer.getvalue()


def _bomb() -> bytes:
    buffer = io.BytesIO()
    Image.new("1", (20000, 20000)).save(buffer, format="PNG")
    return buffer.getvalue()


BAD_SHEETS = [
    ("zero.png", b"", {"grid": "2x2", "label": "1"}, "empty_object"),
    ("text.png", b"hello, not an image", {"grid": "2x2", "label": "1"}, "not_an_image"),
    ("cut.png", None, {"grid": "2x2", "label": "1"}, "corrupt_image"),
    ("bomb.png", None, {"grid": "2x2", "label": "1"}, "image_too_large"),
    ("tiny.png", None, {"grid": "50x50", "label": "1"}, "grid_larger_than_image"),
    ("count.png", None, {"grid": "2x2", "labels": "1,2,3"}, "label_count_mismatch"),
    ("meta.png", None, {"grid": "2x2", "label": "1", "square": "perhaps"}, "bad_metadata"),
]


@pytest.mark.parametrize(("name", "body", "metadata", "code"), BAD_SHEETS)
def test_bad_sheets_are_quarantined_with_a_reason_and_the_batch_goes_on(
    store: ObjectStore,
    digits: Glyphs,
    name: str,
    body: bytes | None,
    metadata: dict[str, str],
    code: str,
) -> None:
    # GIVEN one bad sheet and one good sheet in the same batch
    if body is None:
        body = {
            "cut.png": lambda: digits_sheet(digits, "1", 10)[:300],
            "bomb.png": _bomb,
        }.get(name, lambda: _png(60, 60))()
    bad_key = f"incoming/train/digits/{name}"
    good_key = "incoming/train/digits/2/sheet-1x10.png"
    put(store, bad_key, body, metadata)
    put(store, good_key, digits_sheet(digits, "2", 10))
    # WHEN split runs
    result = split(store, bad_key, good_key)
    # THEN neither is retried, the bad one is quarantined with its reason, the good one split
    assert result == {"batchItemFailures": []}
    reason = reason_for(store, bad_key)
    assert reason["code"] == code and reason["stage"] == "split" and reason["message"]
    assert store.head(f"quarantine/{bad_key}") is not None  # a copy of what was uploaded
    assert store.head(bad_key) is not None  # and the upload itself is not lost
    assert len(tiles_under(store, "tiles/digits/")) == 10


def test_a_missing_object_fails_only_its_own_message(store: ObjectStore, digits) -> None:  # type: ignore[no-untyped-def]
    good_key = "incoming/train/digits/4/sheet-1x10.png"
    put(store, good_key, digits_sheet(digits, "4", 10))
    result = split(store, "incoming/train/digits/4/gone-1x10.png", good_key)
    assert result == {"batchItemFailures": [{"itemIdentifier": "m0"}]}
    assert len(tiles_under(store, "tiles/digits/")) == 10


def _batch_of_cells(store: ObjectStore, cells: list[tuple[str, str, np.ndarray]]) -> str:
    """A sheet's tile batch (and its tile PNGs) as Split writes them, from (cell, label, ink)."""
    made = []
    for name, label, ink in cells:
        key = f"tiles/digits/s1/{name}.png"
        etag = put(store, key, encode_png(ink), encode_metadata({"label": label}))
        made.append(cell_from_tile(key, label, ink, etag))
    batch = TileBatch("digits", "s1", "incoming/train/digits/s1.png", "e", tuple(made))
    store.put(batch.key, encode_tile_batch(batch))
    return batch.key


def test_cells_without_ink_or_with_a_bad_label_are_quarantined_and_the_rest_are_rows(
    store: ObjectStore,
) -> None:
    # GIVEN a sheet's batch: a blank cell, a stroke labelled "two words", and a good stroke
    stroke = np.ones((30, 30), np.float32)
    stroke[5:25, 14:16] = 0
    _batch_of_cells(
        store,
        [
            ("r000-c000", "1", np.ones((30, 30), np.float32)),
            ("r000-c001", "two words", stroke),
            ("r000-c002", "1", stroke),
        ],
    )
    # WHEN Vectorize runs on it
    assert vectorize_all(store) == {"batchItemFailures": []}
    # THEN the good cell is the sheet's one row, and each other cell has its reason
    rows = rows_under(store, "datasets/digits/rows/")
    assert [(r.source_key, r.label) for r in rows] == [("tiles/digits/s1/r000-c002.png", "1")]
    assert reason_for(store, "tiles/digits/s1/r000-c000.png")["code"] == "empty_tile"
    assert reason_for(store, "tiles/digits/s1/r000-c001.png")["code"] == "bad_label"
    assert store.head("quarantine/tiles/digits/s1/r000-c001.png") is not None


@pytest.mark.parametrize(
    "body",
    [b"garbage", b"PK\x03\x04 not a zip", None],
    ids=["bytes", "zip-magic", "wrong-arrays"],
)
def test_a_tile_batch_written_by_hand_is_quarantined_not_retried(
    store: ObjectStore, body: bytes | None
) -> None:
    # GIVEN a sheet's tile batch overwritten with something Split did not write
    key = "tiles/digits/s1/tiles.npz"
    if body is None:  # a real archive, with arrays that do not agree
        buffer = io.BytesIO()
        np.savez(buffer, pixels=np.zeros(5, np.uint8), shapes=np.ones((2, 2), np.int32))
        body = buffer.getvalue()
    store.put(key, body)
    # WHEN Vectorize gets its event
    # THEN it is done with it (no retry), quarantined with a reason, and there are no rows
    assert vectorize_all(store) == {"batchItemFailures": []}
    assert reason_for(store, key)["code"] == "bad_tile_batch"
    assert keys_under(store, "datasets/") == []


def test_the_sheet_deleted_while_it_is_vectorized_loses_no_rows(
    store: ObjectStore, digits: Glyphs
) -> None:
    # GIVEN a sheet split into tiles, then deleted by its owner before Vectorize ran
    key = "incoming/train/digits/5/sheet-1x10.png"
    put(store, key, digits_sheet(digits, "5", 10))
    split(store, key)
    store.delete(key)
    # WHEN Vectorize runs, THEN the batch has all it needs: every acknowledged cell is a row
    assert vectorize_all(store) == {"batchItemFailures": []}
    assert len(rows_under(store, "datasets/digits/rows/")) == 10


def test_a_malformed_message_body_is_reported_as_failed_for_retry_and_dlq(
    store: ObjectStore,
) -> None:
    event = sqs_event_for(BUCKET, "incoming/train/digits/x.png")
    event["Records"][0]["body"] = "{not json"
    good = sqs_event_for(BUCKET, "incoming/train/digits/y.png", message_id="ok")
    good["Records"][0]["body"] = json.dumps({"Event": "s3:TestEvent"})
    assert split_handler(batch_of(event, good), CONTEXT) == {
        "batchItemFailures": [{"itemIdentifier": "m1"}]
    }


def test_a_sheet_uploaded_again_with_corrected_labels_relabels_its_rows(
    memory_store: ObjectStore, digits: Glyphs
) -> None:
    # GIVEN a two-row sheet whose row labels were given in the wrong order, split and vectorized
    sheet = render_sheet(
        np.concatenate(
            [digits.ink[digits.labels == "3"][:5], digits.ink[digits.labels == "8"][:5]]
        ),
        cols=5,
    )
    key = "incoming/train/digits/rows.png"
    for labels in ("8,3", "3,8"):
        # WHEN the same bytes are uploaded again with the corrected row labels
        memory_store.put(key, sheet, metadata={"grid": "2x5", "row-labels": labels})
        assert split_object(memory_store, key).status == "split"
        for batch in tile_batches_under(memory_store, "tiles/digits/"):
            assert vectorize_object(memory_store, batch).status == "vectorized"
    # THEN the dataset holds one row per cell, each with the corrected label
    rows = rows_under(memory_store, "datasets/digits/rows/")
    assert len(rows) == 10
    assert sorted(row.label for row in rows) == ["3"] * 5 + ["8"] * 5
    assert all(row.label == ("3" if "/r000-" in row.source_key else "8") for row in rows)


@pytest.mark.parametrize("manifest_first", [True, False], ids=["manifest-first", "sheet-first"])
def test_a_sheet_and_its_labels_manifest_split_in_either_order(
    memory_store: ObjectStore, digits: Glyphs, manifest_first: bool
) -> None:
    # GIVEN a sheet whose labels metadata cannot carry, and its manifest beside it
    key = "incoming/train/greek/letters.png"
    sheet = digits_sheet(digits, "1", 10, cols=5)
    manifest = json.dumps({"grid": "2x5", "row-labels": ["α", "β"]}).encode()  # noqa: RUF001
    uploads = [(key + ".labels.json", manifest), (key, sheet)]
    if not manifest_first:
        uploads.reverse()
    # WHEN each upload's event is handled as it arrives
    statuses = []
    for uploaded, body in uploads:
        memory_store.put(uploaded, body)
        statuses.append(split_object(memory_store, uploaded).status)
    # THEN the first waits (or is held as missing labels) and the second splits the sheet
    assert statuses == (["waiting", "split"] if manifest_first else ["quarantined", "split"])
    for batch in tile_batches_under(memory_store, "tiles/greek/"):
        assert vectorize_object(memory_store, batch).status == "vectorized"
    rows = rows_under(memory_store, "datasets/greek/rows/")
    assert sorted(row.label for row in rows) == ["α"] * 5 + ["β"] * 5  # noqa: RUF001
    # AND no stale quarantine record says the sheet is bad
    assert keys_under(memory_store, "quarantine/") == []


def test_new_bytes_at_a_sheets_key_supersede_its_earlier_rows(
    memory_store: ObjectStore, digits: Glyphs
) -> None:
    # GIVEN a 10-cell sheet of 3s split and vectorized, and another sheet with the same file
    # name in another folder
    key, other = "incoming/train/digits/page.png", "incoming/train/digits/more/page.png"

    def drop(at: str, label: str) -> Outcome:
        metadata = {"grid": "2x5", "row-labels": f"{label},{label}"}
        memory_store.put(at, digits_sheet(digits, label, 10, cols=5), metadata=metadata)
        outcome = split_object(memory_store, at)
        for batch in tile_batches_under(memory_store, "tiles/digits/"):
            vectorize_object(memory_store, batch)
        return outcome

    drop(key, "3")
    drop(other, "1")
    assert len(load_dataset(memory_store, "digits")) == 20
    # WHEN different bytes (a sheet of 8s) are uploaded to the first key
    outcome = drop(key, "8")
    # THEN that key's earlier sheet is recorded as superseded by the new one, and training sees
    # one sheet per key: the new 8s and the other folder's 1s, not the old 3s
    old_ids = outcome.detail["superseded"]
    assert len(old_ids) == 1
    record = memory_store.get_json(f"datasets/digits/superseded/{old_ids[0]}.json")
    assert isinstance(record, dict)
    assert record["source_key"] == key
    assert record["superseded_by"] == outcome.detail["sheet_id"]
    dataset = load_dataset(memory_store, "digits")
    assert sorted(dataset.y.tolist()) == ["1"] * 10 + ["8"] * 10
    assert len({source.split("/")[2] for source in dataset.sources}) == 2
    # AND nothing is deleted: the old rows are still stored, and dropping the record brings
    # them back
    stored = rows_under(memory_store, f"datasets/digits/rows/{old_ids[0]}.npz")
    assert len(stored) == 10
    memory_store.delete(f"datasets/digits/superseded/{old_ids[0]}.json")
    assert len(load_dataset(memory_store, "digits")) == 30
    # AND the same bytes uploaded to a key again supersede nothing
    assert "superseded" not in drop(other, "1").detail
    # AND the first bytes coming back to their key make their sheet the key's again
    memory_store.put(f"datasets/digits/superseded/{old_ids[0]}.json", b"{}")
    assert drop(key, "3").detail["superseded"] == [outcome.detail["sheet_id"]]
    assert sorted(load_dataset(memory_store, "digits").y.tolist()) == ["1"] * 10 + ["3"] * 10


def test_invocations_side_by_side_each_report_only_their_own_failures() -> None:
    """The local runtime runs a function's invocations as threads of one process: each must
    keep its own batch (Lambda never shares a process between invocations at once)."""
    import threading

    from tessera.pipeline.outcome import Outcome
    from tessera.pipeline.sqs_handler import s3_queue_handler
    from tessera_dev.local.pump import lambda_context

    both_inside = threading.Barrier(2, timeout=10)

    def step(store: Any, key: str) -> Outcome:
        if key.endswith("first.png"):
            both_inside.wait()  # the other invocation is running now too
        if key.endswith("bad.png"):
            raise RuntimeError("this one fails")
        if key.endswith("second.png"):
            both_inside.wait()
        return Outcome(key, "done", {})

    handler = s3_queue_handler(step, service="side-by-side")
    events = {
        "a": batch_of(
            sqs_event_for(BUCKET, "incoming/train/d/first.png", message_id="a1"),
            sqs_event_for(BUCKET, "incoming/train/d/bad.png", message_id="a2"),
        ),
        "b": batch_of(
            sqs_event_for(BUCKET, "incoming/train/d/second.png", message_id="b1"),
            sqs_event_for(BUCKET, "incoming/train/d/fine.png", message_id="b2"),
        ),
    }
    answers: dict[str, Any] = {}

    def invoke(name: str) -> None:
        answers[name] = handler(events[name], lambda_context("split"))

    threads = [threading.Thread(target=invoke, args=(name,)) for name in events]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert answers == {
        "a": {"batchItemFailures": [{"itemIdentifier": "a2"}]},
        "b": {"batchItemFailures": []},
    }
