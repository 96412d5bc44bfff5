"""The storage port: the in-memory store and the S3 adapter (against moto) behave alike where
the pipeline relies on it, so domain tests on the in-memory store say something about S3."""

from __future__ import annotations

import pytest

from tessera.storage import (
    ObjectMissing,
    ObjectStore,
    WriteConflict,
    decode_metadata,
    encode_metadata,
)


def test_an_object_round_trips_with_its_etag_and_metadata(any_store: ObjectStore) -> None:
    # GIVEN an object written with metadata a label cannot carry in plain ASCII
    etag = any_store.put(
        "a/b.png", b"bytes", content_type="image/png", metadata=encode_metadata({"label": "中"})
    )
    # WHEN it is read back and looked at
    stored, head = any_store.get("a/b.png"), any_store.head("a/b.png")
    # THEN both say the same ETag, size and label
    assert head is not None
    assert stored.body == b"bytes" and stored.etag == head.etag == etag
    assert head.size == 5 and head.content_type == "image/png"
    assert decode_metadata(head.metadata) == {"label": "中"}


def test_a_missing_object_is_a_typed_error_or_none(any_store: ObjectStore) -> None:
    with pytest.raises(ObjectMissing):
        any_store.get("nothing/here")
    assert any_store.head("nothing/here") is None
    assert any_store.get_json("nothing/here.json") is None
    any_store.delete("nothing/here")  # deleting what is not there is not an error


def test_listings_are_by_prefix_in_key_order(any_store: ObjectStore) -> None:
    for key in ("p/2", "p/1", "q/1", "p/10"):
        any_store.put(key, key.encode())
    listed = list(any_store.list("p/"))
    assert [item.key for item in listed] == ["p/1", "p/10", "p/2"]
    assert all(item.etag == any_store.get(item.key).etag for item in listed)


def test_a_listing_can_start_after_a_key(any_store: ObjectStore) -> None:
    for n in range(1, 6):
        any_store.put(f"p/{n}", b"x")
    assert [i.key for i in any_store.list("p/", start_after="p/2")] == ["p/3", "p/4", "p/5"]
    assert [i.key for i in any_store.list("p/", start_after="p/25")] == ["p/3", "p/4", "p/5"]
    assert [i.key for i in any_store.list("p/", start_after="p/5")] == []
    assert [i.key for i in any_store.list("p/", start_after="a")] == [f"p/{n}" for n in range(1, 6)]


def test_conditional_writes_conflict_on_stale_information(any_store: ObjectStore) -> None:
    # GIVEN a pointer created only if absent
    first = any_store.put("pointer.json", b"1", if_none_match=True)
    # WHEN a second writer also expects it absent, or expects an old ETag
    with pytest.raises(WriteConflict):
        any_store.put("pointer.json", b"2", if_none_match=True)
    second = any_store.put("pointer.json", b"2", if_match=first)
    with pytest.raises(WriteConflict):
        any_store.put("pointer.json", b"3", if_match=first)
    # THEN only the writes made on current information landed
    assert any_store.get("pointer.json").body == b"2"
    assert any_store.get("pointer.json").etag == second


def test_copy_and_delete(any_store: ObjectStore) -> None:
    any_store.put("from", b"x", metadata={"k": "v"})
    any_store.copy("from", "to")
    assert any_store.get("to").body == b"x"
    any_store.delete("from")
    assert any_store.head("from") is None and any_store.head("to") is not None
