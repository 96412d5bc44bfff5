"""`tessera bench search`: the exhaustive hyper-parameter search in one process (GridSearchCV, as
the job runs it without workers: the baseline) against the same search fanned out to 1 and 2
local worker processes of the training entry point (`--search-workers`), side by side on the
same MNIST rows, through the local runtime as `POST /train` runs the job.

    tessera bench search                                   # the reference grid, 300 rows
    tessera bench search --grid quick --search-rows 200    # a quick look

Each configuration is one whole training run (load, split, search, train the winner, export,
register); the table shows the search's own seconds, the run's, and the ratio of the search
time to the baseline's. All configurations must pick the same candidate.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from tessera_dev.samples import data_dir

CONFIGS: tuple[tuple[str, list[str], int], ...] = (
    ("in-process GridSearchCV (baseline)", [], 2),
    ("1 worker", ["--search-workers", "1"], 2),
    ("2 workers", ["--search-workers", "2"], 1),
)


def run_config(
    runtime: Any, mnist: Path, args: argparse.Namespace, extra: list[str], jobs: int
) -> dict[str, Any]:
    started = time.perf_counter()
    result: dict[str, Any] = runtime.train(
        [],
        extra_args=[
            "--mnist", str(mnist), "--mnist-limit", str(args.mnist_limit),
            "--model-name", "searchbench", "--search", "exhaustive",
            "--search-grid", args.grid, "--search-rows", str(args.search_rows),
            "--jobs", str(jobs), "--no-review", *extra,
        ],
    )  # fmt: skip
    if result.get("status") != "succeeded":
        raise RuntimeError(f"training failed: {result.get('error')}")
    search = result["search"]
    return {
        "search_seconds": search["seconds"],
        "run_seconds": round(time.perf_counter() - started, 1),
        "fits": search["fits"],
        "best_cv_accuracy": search["best_cv_accuracy"],
        "best_params": search["best_params"],
        "test_accuracy": result["test_accuracy"],
    }


def main(argv: list[str]) -> int:
    from tessera_dev.local.runtime import LocalRuntime

    parser = argparse.ArgumentParser(prog="tessera bench search", description=__doc__)
    parser.add_argument("--mnist", type=Path, default=data_dir() / "mnist")
    parser.add_argument("--mnist-limit", type=int, default=3000)
    parser.add_argument("--search-rows", type=int, default=300)
    parser.add_argument("--grid", choices=["reference", "quick"], default="reference")
    args = parser.parse_args(argv)
    if not (args.mnist / "train-images-idx3-ubyte.gz").exists():
        print(f"no MNIST files under {args.mnist} (pass --mnist DIR)", file=sys.stderr)
        return 2
    results = []
    with LocalRuntime(bucket="tessera-bench-search") as runtime:
        for label, extra, jobs in CONFIGS:
            print(f"{label} ...", file=sys.stderr, flush=True)
            results.append(
                {
                    "config": label,
                    "jobs": jobs,
                    **run_config(runtime, args.mnist, args, extra, jobs),
                }
            )
    baseline = results[0]["search_seconds"]
    for r in results:
        r["ratio_to_baseline"] = round(r["search_seconds"] / baseline, 2) if baseline else None
    same = all(r["best_params"] == results[0]["best_params"] for r in results)
    print(
        f"Exhaustive search, {args.grid} grid, {args.search_rows} rows of MNIST, "
        f"{os.cpu_count()} CPUs (load {os.getloadavg()[0]:.1f})"
    )
    print("| configuration | jobs each | fits | search s | ratio | run s | best CV | test acc |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['config']} | {r['jobs']} | {r['fits']} | {r['search_seconds']:.1f} | "
            f"{r['ratio_to_baseline']:.2f}x | {r['run_seconds']:.1f} | "
            f"{r['best_cv_accuracy']:.4f} | {r['test_accuracy']:.4f} |"
        )
    print(f"same candidate picked by all: {'yes' if same else 'NO'}")
    print(json.dumps({"grid": args.grid, "rows": args.search_rows, "same_best": same,
                      "results": results}, default=str))  # fmt: skip
    return 0 if same else 1
