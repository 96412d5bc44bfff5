"""`tessera bench loading` counts what a dataset load really asks of the bucket (the figures
for 1,000 to 60,000 rows come from running it, never from a test)."""

from __future__ import annotations

import json

import pytest

from tessera_dev.bench.loading import (
    CountingMemoryStore,
    bench_corrections,
    bench_size,
    main,
    moto_store,
)


def test_a_load_after_one_new_sheet_reads_its_one_shard_and_the_snapshot() -> None:
    store = CountingMemoryStore()
    result = bench_size(store, store.requests, 300)
    # one shard per sheet: a first load is its 3 shards and the latest-snapshot pointer; one
    # sheet more: its shard, the pointer and the snapshot
    assert result["first"]["rows"] == 300 and result["first"]["get"] == 3 + 1
    assert result["unchanged"]["get"] == 1
    assert result["one_sheet_added"]["rows"] == 400
    assert result["one_sheet_added"]["get"] == 1 + 2
    assert result["full_read"]["rows"] == 400 and result["full_read"]["get"] == 4 + 1


def test_with_a_shard_per_row_one_new_sheet_reads_its_rows_and_the_snapshot() -> None:
    store = CountingMemoryStore()
    result = bench_size(store, store.requests, 300, "tile")
    # a first load reads every shard; the same listing again is one snapshot GET
    assert result["first"]["rows"] == 300 and result["first"]["get"] >= 300
    assert result["unchanged"]["get"] == 1
    # one sheet more: its 100 shards, the latest pointer and the snapshot; a full read: all
    assert result["one_sheet_added"]["rows"] == 400
    assert result["one_sheet_added"]["get"] == 100 + 2
    assert result["full_read"]["rows"] == 400 and result["full_read"]["get"] >= 400
    assert result["get_ratio"] > 3


def test_the_correction_layer_is_read_once_then_only_what_is_new() -> None:
    store = CountingMemoryStore()
    result = bench_corrections(store, store.requests, "layer", 250)
    assert result["first"]["get"] == 250 + 1 and result["first"]["put"] == 1  # + snapshot
    assert result["unchanged"]["get"] == 1 and result["unchanged"]["put"] == 0
    assert result["one_added"]["get"] == 2 and result["one_added"]["put"] == 1
    assert result["full_read"]["get"] == 251 + 1  # every one, and the snapshot not there
    assert result["one_added"]["tiles"] == result["full_read"]["tiles"] == 100  # latest wins


def test_requests_on_moto_are_counted_on_the_client_each_list_page_included() -> None:
    with moto_store() as (store, counts):
        result = bench_size(store, counts, 1100, "tile")
    # 1,200 rows: two LIST pages of rows, one of superseded sheets (empty)
    assert result["full_read"]["list"] == 3
    assert result["one_sheet_added"]["get"] == 100 + 2


def test_the_command_ends_with_one_json_line_and_refuses_bad_sizes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["--sizes", "100", "--store", "memory", "--corrections", "20"]) == 0
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert last["results"][0]["size"] == 100
    assert last["corrections"]["one_added"]["get"] == 2
    assert main(["--sizes", "ten"]) == 2
