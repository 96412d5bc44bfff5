"""`tessera bench loading`: what a training run's dataset load costs, in S3 requests and
seconds, as the dataset grows, against reading every shard (what a load without snapshots does).

    tessera bench loading                       # 1,000 / 10,000 / 60,000 rows on moto's S3
    tessera bench loading --sizes 1000 --store memory
    tessera bench loading --layout tile         # one shard per row, the layout before

For each size: a dataset of that many rows (sheets of 100 cells, one shard per sheet as
Vectorize writes them, or with `--layout tile` one shard per row as it wrote them before per-sheet
shards) is loaded through `tessera.dataset.load_dataset`:

- first load: no snapshot yet, so every shard is read (the baseline), and a snapshot is written;
- unchanged: the same listing again, one snapshot GET;
- one sheet added: 100 new rows, then a load that starts from the latest snapshot;
- full read: the same rows with the snapshots removed, every shard read (the baseline).

Then the console's correction layer on the last size (`--corrections N`, 0 to skip): N
corrections read the way training reads them (`current_corrections(keep_snapshot=True)`):
first read, unchanged, one correction added, and every correction read (the baseline).

Requests are counted where they are made: on the botocore client (every real S3 API call,
each LIST page included) with `--store moto`, or on the in-memory store's methods.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from tessera.corrections import (
    Correction,
    corrections_prefix,
    corrections_snapshot_key,
    current_corrections,
)
from tessera.dataset import (
    SNAPSHOTS,
    Row,
    dataset_prefix,
    encode_row,
    load_dataset,
    put_sheet_rows,
    shard_key_for_tile,
)
from tessera.storage import ObjectStore, encode_metadata
from tessera.storage.memory import InMemoryObjectStore

SHEET_CELLS = 100
BUCKET = "tessera-bench-loading"
# S3 Standard request prices (us-east-1, per 1,000): GET/HEAD and PUT/LIST.
PRICE_PER_1000 = {"get": 0.0004, "put": 0.005}


class CountingMemoryStore(InMemoryObjectStore):
    """The in-memory store, counting calls the way S3 would bill them (a LIST per 1,000 keys)."""

    def __init__(self) -> None:
        super().__init__(bucket=BUCKET)
        self.requests: Counter[str] = Counter()

    def get(self, key: str) -> Any:
        self.requests["GetObject"] += 1
        return super().get(key)

    def head(self, key: str) -> Any:
        self.requests["HeadObject"] += 1
        return super().head(key)

    def put(self, key: str, body: bytes, **kwargs: Any) -> str:
        self.requests["PutObject"] += 1
        return super().put(key, body, **kwargs)

    def list(self, prefix: str, *, start_after: str = "") -> Iterator[Any]:
        items = list(super().list(prefix, start_after=start_after))
        self.requests["ListObjectsV2"] += max(1, -(-len(items) // 1000))
        return iter(items)


@contextmanager
def moto_store() -> Iterator[tuple[ObjectStore, Counter[str]]]:
    """An S3ObjectStore on moto's in-process S3, its client's requests counted."""
    import botocore.session
    from botocore.config import Config
    from moto import mock_aws

    from tessera.storage.s3 import S3ObjectStore

    with mock_aws():
        client = botocore.session.get_session().create_client(
            "s3",
            region_name="us-east-1",
            endpoint_url="https://s3.us-east-1.amazonaws.com",  # moto answers; not the env's
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            config=Config(max_pool_connections=32),
        )
        client.create_bucket(Bucket=BUCKET)
        counts: Counter[str] = Counter()

        def count(model: Any, **_: Any) -> None:
            counts[model.name] += 1

        client.meta.events.register("before-call.s3", count)
        yield S3ObjectStore(bucket=BUCKET, client=client), counts


LAYOUTS = ("sheet", "tile")


def add_sheet(
    store: ObjectStore, dataset: str, sheet: int, rng: np.random.Generator, layout: str = "sheet"
) -> None:
    """One sheet's rows as Vectorize writes them: one shard for the sheet, or (the layout before
    per-sheet shards) one per cell with its ETag and label in the metadata."""
    rows = [
        Row(
            pixels=rng.integers(0, 256, 784, dtype=np.uint8),
            label=str(cell // 10),
            source_key=f"tiles/{dataset}/sheet-{sheet:05d}/r{cell // 10:03d}-c{cell % 10:03d}.png",
            source_etag=f"{sheet:05d}{cell:03d}",
        )
        for cell in range(SHEET_CELLS)
    ]
    if layout == "sheet":
        put_sheet_rows(store, dataset, f"sheet-{sheet:05d}", rows, version=f"v{sheet}")
        return
    for row in rows:
        metadata = encode_metadata({"source-etag": row.source_etag, "label": row.label})
        store.put(
            shard_key_for_tile(row.source_key),
            encode_row(row),
            content_type="application/x-npz",
            metadata=metadata,
        )


def timed_load(store: ObjectStore, counts: Counter[str], dataset: str) -> dict[str, Any]:
    before = Counter(counts)
    started = time.perf_counter()
    rows = len(load_dataset(store, dataset))
    seconds = time.perf_counter() - started
    made = counts - before
    gets = made["GetObject"] + made["HeadObject"]
    puts = made["PutObject"] + made["ListObjectsV2"]
    return {
        "rows": rows,
        "seconds": round(seconds, 3),
        "get": made["GetObject"],
        "head": made["HeadObject"],
        "list": made["ListObjectsV2"],
        "put": made["PutObject"],
        "usd": round(gets * PRICE_PER_1000["get"] / 1000 + puts * PRICE_PER_1000["put"] / 1000, 6),
    }


def bench_size(
    store: ObjectStore, counts: Counter[str], size: int, layout: str = "sheet"
) -> dict[str, Any]:
    dataset = f"rows{size}-{layout}"
    rng = np.random.default_rng(size)
    sheets = -(-size // SHEET_CELLS)
    started = time.perf_counter()
    for sheet in range(sheets):
        add_sheet(store, dataset, sheet, rng, layout)
    written = time.perf_counter() - started
    first = timed_load(store, counts, dataset)
    unchanged = timed_load(store, counts, dataset)
    add_sheet(store, dataset, sheets, rng, layout)
    added = timed_load(store, counts, dataset)
    # The baseline at the same size: the same load with no snapshot to start from.
    for item in list(store.list(f"{dataset_prefix(dataset)}{SNAPSHOTS}")):
        store.delete(item.key)
    full = timed_load(store, counts, dataset)
    return {
        "size": size,
        "layout": layout,
        "write_seconds": round(written, 1),
        "first": first,
        "unchanged": unchanged,
        "one_sheet_added": added,
        "full_read": full,
        "get_ratio": round(full["get"] / max(1, added["get"]), 1),
        "speedup": round(full["seconds"] / max(1e-9, added["seconds"]), 1),
    }


def add_correction(store: ObjectStore, dataset: str, n: int) -> None:
    """One correction object as the console writes it (`record_correction`, without its checks)."""
    sheet, cell = f"sheet-{n % 100:05d}", f"r{n // 10 % 10:03d}-c{n % 10:03d}"
    correction = Correction(
        tile=f"tiles/{dataset}/{sheet}/{cell}.png",
        action="label",
        label=str(n % 10),
        by="bench",
        at=f"2026-12-03T09:00:00.{n:06d}+00:00",
        id=f"{n:012d}",
    )
    key = f"{corrections_prefix(dataset)}{sheet}/{cell}/{n:012d}.json"
    store.put_json(key, correction.as_dict())


def timed_corrections(store: ObjectStore, counts: Counter[str], dataset: str) -> dict[str, Any]:
    before = Counter(counts)
    started = time.perf_counter()
    tiles = len(current_corrections(store, dataset, keep_snapshot=True))
    seconds = time.perf_counter() - started
    made = counts - before
    return {
        "tiles": tiles,
        "seconds": round(seconds, 3),
        "get": made["GetObject"],
        "list": made["ListObjectsV2"],
        "put": made["PutObject"],
    }


def bench_corrections(
    store: ObjectStore, counts: Counter[str], dataset: str, count: int
) -> dict[str, Any]:
    for n in range(count):
        add_correction(store, dataset, n)
    first = timed_corrections(store, counts, dataset)
    unchanged = timed_corrections(store, counts, dataset)
    add_correction(store, dataset, count)
    added = timed_corrections(store, counts, dataset)
    store.delete(corrections_snapshot_key(dataset))  # the baseline: every correction read
    full = timed_corrections(store, counts, dataset)
    return {
        "corrections": count,
        "first": first,
        "unchanged": unchanged,
        "one_added": added,
        "full_read": full,
        "get_ratio": round(full["get"] / max(1, added["get"]), 1),
    }


def _corrections_table(result: dict[str, Any]) -> str:
    lines = ["| corrections | read | GET | LIST | PUT | seconds |", "|" + "---|" * 6]
    for name in ("first", "unchanged", "one_added", "full_read"):
        m = result[name]
        lines.append(
            f"| {result['corrections']:,} | {name.replace('_', ' ')} | {m['get']:,} | "
            f"{m['list']} | {m['put']} | {m['seconds']:.2f} |"
        )
    return "\n".join(lines)


def _table(results: list[dict[str, Any]]) -> str:
    header = "| rows | load | rows read | GET | HEAD | LIST | PUT | seconds | cost (USD) |"
    lines = [header, "|" + "---|" * 9]
    for r in results:
        for name in ("first", "unchanged", "one_sheet_added", "full_read"):
            m = r[name]
            lines.append(
                f"| {r['size']:,} | {name.replace('_', ' ')} | {m['rows']:,} | {m['get']:,} | "
                f"{m['head']} | {m['list']} | {m['put']} | {m['seconds']:.2f} | {m['usd']:.6f} |"
            )
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="tessera bench loading", description=__doc__)
    parser.add_argument("--sizes", default="1000,10000,60000", help="comma-separated row counts")
    parser.add_argument("--store", choices=["moto", "memory"], default="moto")
    parser.add_argument("--layout", choices=LAYOUTS, default="sheet", help="shard per sheet/row")
    parser.add_argument(
        "--corrections", type=int, default=1000, help="corrections in the layer (0: skip)"
    )
    args = parser.parse_args(argv)
    try:
        sizes = [int(size) for size in args.sizes.split(",")]
    except ValueError:
        print(f"--sizes must be comma-separated integers, got {args.sizes!r}", file=sys.stderr)
        return 2
    results = []
    layer: dict[str, Any] | None = None
    last = f"rows{sizes[-1]}-{args.layout}"
    if args.store == "memory":
        memory = CountingMemoryStore()
        results = [bench_size(memory, memory.requests, size, args.layout) for size in sizes]
        if args.corrections > 0:
            layer = bench_corrections(memory, memory.requests, last, args.corrections)
    else:
        with moto_store() as (store, counts):
            results = [bench_size(store, counts, size, args.layout) for size in sizes]
            if args.corrections > 0:
                layer = bench_corrections(store, counts, last, args.corrections)
    print(
        f"Dataset loading on {args.store}, a shard per {args.layout} "
        f"({os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f})"
    )
    print(_table(results))
    for r in results:
        print(
            f"{r['size']:,} rows + one sheet: {r['get_ratio']}x fewer GETs and "
            f"{r['speedup']}x faster than reading every shard (full read)"
        )
    if layer is not None:
        print(f"\nThe correction layer of {last}, read as training reads it")
        print(_corrections_table(layer))
        print(
            f"{layer['corrections']:,} corrections + one: {layer['get_ratio']}x fewer GETs "
            "than reading every correction"
        )
    figures = {"store": args.store, "layout": args.layout, "results": results}
    print(json.dumps({**figures, "corrections": layer}))
    return 0
