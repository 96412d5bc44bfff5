"""`tessera bench soak`: at-least-once delivery under faults, exactly one dataset row per tile.

    tessera bench soak                           # 100 sheets of 100 cells (10,000 tiles)
    tessera bench soak --sheets 10 --cells 50    # a quick one

Sheets (scikit-learn digits drawn on paper, a row label per row) are dropped into the local
runtime while faults are injected into every function's path (tessera_dev.local.faults): by
default 15% of invocations crash after doing their work, 5% before, and 10% of the messages
that went through are delivered again. When the queues are idle the dead-letter queues are
redriven with `tessera redrive`'s own code (faults still on), until they stay empty. Then every
tile must have exactly one dataset row: none lost, none duplicated.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import time
import uuid
from typing import Any

import numpy as np

from tessera.config import PIPELINE
from tessera.dataset import decode_rows
from tessera.storage import ObjectStore
from tessera_dev.client import Target, redrive
from tessera_dev.local.faults import Faults
from tessera_dev.local.runtime import REGION, LocalRuntime
from tessera_dev.samples import render_sheet, sklearn_digits

DATASET = "soak"


def sheet_bytes(index: int, cells: int, cols: int) -> tuple[bytes, list[str]]:
    """A sheet of `cells` digits, one class per row (labels given per row)."""
    digits = sklearn_digits()
    rows = math.ceil(cells / cols)
    labels = [str((index + row) % 10) for row in range(rows)]
    ink: list[np.ndarray] = []
    for row, label in enumerate(labels):
        pool = np.flatnonzero(digits.labels == label)
        count = min(cols, cells - row * cols)
        ink.extend(digits.ink[pool[(index * cols + c) % len(pool)]] for c in range(count))
    return render_sheet(np.stack(ink), cols=cols), labels


def drop_sheets(store: ObjectStore, sheets: int, cells: int, cols: int) -> int:
    rows = math.ceil(cells / cols)
    for index in range(sheets):
        body, labels = sheet_bytes(index, cells, cols)
        store.put(
            f"{PIPELINE.prefixes.incoming_train}{DATASET}/sheet-{index:04d}.png",
            body,
            content_type="image/png",
            metadata={"grid": f"{rows}x{cols}", "row-labels": " ".join(labels)},
        )
    return sheets * cells


def dlq_depths(runtime: LocalRuntime) -> dict[str, int]:
    depths = runtime.queue_depths()
    return {q.spec.function: depths[q.spec.dlq_name] for q in runtime.queues}


def audit(store: ObjectStore) -> dict[str, int]:
    """Tiles, rows, tiles without a row, rows without a tile, rows whose label differs."""
    tiles = {
        item.key
        for item in store.list(f"{PIPELINE.prefixes.tiles}{DATASET}/")
        if item.key.endswith(".png")
    }
    shards = [item.key for item in store.list(f"{PIPELINE.prefixes.datasets}{DATASET}/rows/")]
    sources = [
        source for key in shards for source in decode_rows(store.get(key).body, key=key).sources
    ]
    return {
        "tiles": len(tiles),
        "rows": len(sources),
        "lost": len(tiles - set(sources)),
        "orphaned": len(set(sources) - tiles),
        "duplicated": len(sources) - len(set(sources)),
    }


def run_soak(
    *,
    sheets: int,
    cells: int,
    cols: int,
    faults: Faults,
    timeout: float,
    max_redrives: int = 5,
    heal: bool = False,
) -> dict[str, Any]:
    """With `heal`, faults stop before the first redrive (a bug fixed, then its dead letters
    redriven); otherwise they go on through the redrives too."""
    # Every injected crash is logged by the pump as a failed batch: thousands of tracebacks.
    logging.getLogger("tessera_dev.local.pump").setLevel(logging.CRITICAL)
    # A bucket of its own: moto's state is per process, and another run's sheets at the same
    # keys would be superseded and counted.
    bucket = f"tessera-soak-{uuid.uuid4().hex[:8]}"
    with LocalRuntime(bucket=bucket, faults=faults) as runtime:
        described = runtime.describe()
        target = Target(
            bucket=runtime.bucket,
            api_url=runtime.api_url,
            region=REGION,
            aws_endpoint=runtime.aws_endpoint,
            queues=described["queues"],
        )
        store = target.store()
        started = time.perf_counter()
        expected = drop_sheets(store, sheets, cells, cols)
        idle = runtime.wait_until_idle(timeout=timeout)
        first_pass = time.perf_counter() - started
        dead_letters = dlq_depths(runtime)
        redriven: list[dict[str, int]] = []
        while sum(dlq_depths(runtime).values()) and len(redriven) < max_redrives:
            faults.enabled = faults.enabled and not heal
            redriven.append(redrive(target))
            idle = runtime.wait_until_idle(timeout=timeout) and idle
        seconds = time.perf_counter() - started
        result = audit(store)
        pumps = {
            pump.queue.spec.function: {
                "batches": pump.stats.batches,
                "succeeded": pump.stats.succeeded,
                "failed": pump.stats.failed,
            }
            for pump in runtime.pumps
        }
        dlq_after = dlq_depths(runtime)
    return {
        "sheets": sheets,
        "cells_per_sheet": cells,
        "expected_tiles": expected,
        **result,
        "seconds_first_pass": round(first_pass, 1),
        "seconds": round(seconds, 1),
        "tiles_per_second": round(result["rows"] / seconds, 1) if seconds else 0.0,
        "idle": idle,
        "dlq_before_redrive": dead_letters,
        "redrives": redriven,
        "dlq_after_redrive": dlq_after,
        "pumps": pumps,
        "injected": dict(sorted(faults.counts.items())),
        "fault_rates": {
            "crash_before": faults.crash_before,
            "crash_after": faults.crash_after,
            "duplicate": faults.duplicate,
        },
        "exactly_once": result["rows"] == expected == result["tiles"]
        and result["lost"] == result["duplicated"] == result["orphaned"] == 0
        and not any(dlq_after.values()),
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="tessera bench soak", description=__doc__)
    parser.add_argument("--sheets", type=int, default=100)
    parser.add_argument("--cells", type=int, default=100, help="cells per sheet")
    parser.add_argument("--cols", type=int, default=10)
    parser.add_argument("--crash-after", type=float, default=0.15)
    parser.add_argument("--crash-before", type=float, default=0.05)
    parser.add_argument("--duplicate", type=float, default=0.10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=3600, help="seconds to wait for idle")
    parser.add_argument(
        "--heal", action="store_true", help="stop the faults before redriving the DLQs"
    )
    args = parser.parse_args(argv)
    if args.sheets < 1 or args.cells < 1 or args.cols < 1:
        print("--sheets, --cells and --cols must be positive", file=sys.stderr)
        return 2
    faults = Faults(
        crash_before=args.crash_before,
        crash_after=args.crash_after,
        duplicate=args.duplicate,
        seed=args.seed,
    )
    result = run_soak(
        sheets=args.sheets,
        cells=args.cells,
        cols=args.cols,
        faults=faults,
        timeout=args.timeout,
        heal=args.heal,
    )
    print(
        f"Soak: {result['sheets']} sheets x {result['cells_per_sheet']} cells on the local "
        f"runtime ({os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}), "
        f"faults {result['fault_rates']}"
    )
    print("| measure | value |\n|---|---|")
    for name in ("expected_tiles", "tiles", "rows", "lost", "duplicated", "orphaned"):
        print(f"| {name.replace('_', ' ')} | {result[name]:,} |")
    seconds = f"{result['seconds_first_pass']} / {result['seconds']}"
    print(f"| seconds (first pass / with redrives) | {seconds} |")
    print(f"| tiles per second | {result['tiles_per_second']} |")
    for function, stats in result["pumps"].items():
        print(
            f"| {function}: batches, messages done, messages failed (retried) | "
            f"{stats['batches']:,}, {stats['succeeded']:,}, {stats['failed']:,} |"
        )
    print(f"| injected | {result['injected']} |")
    print(f"| DLQ before redrive | {result['dlq_before_redrive']} |")
    print(f"| redrives (moved) | {result['redrives']} |")
    print(f"| DLQ after redrive | {result['dlq_after_redrive']} |")
    print(f"exactly one row per tile: {'yes' if result['exactly_once'] else 'NO'}")
    print(json.dumps(result))
    return 0 if result["exactly_once"] else 1
