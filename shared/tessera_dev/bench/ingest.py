"""`tessera bench ingest`: what ingest costs per tile and how fast it runs, drop to dataset rows.

    tessera bench ingest                                  # 10 and 100 sheets of 100, a 5000-cell
    tessera bench ingest --sheets 20 --big 0              # a quick one
    tessera bench ingest --baseline-ref e714efa           # the same runs at another commit, beside

Sheets (scikit-learn digits drawn on paper, one class per row) are dropped into the local runtime
at once and it runs until every queue is idle. The local runtime sees every request: a counter
in front of moto's server counts the S3 and SQS requests the functions and their event-source
pumps make (the bench's own queue-depth polls are left out), the pumps count invocations and
their handlers' seconds, and the dataset is read once at the end, with the pipeline's own
loader, to count rows and tiles without a row. The price of 1,000 tiles uses AWS's published
us-east-1 prices (below), with local handler time as the stand-in for Lambda's billed duration.
Counting starts once S3's one-off test events are handled, and leaves out the pollers' empty
receives (on AWS, Lambda's pollers make those by the hour whatever the load).

With `--baseline-ref` the same runs go through this very file again with the pipeline of
another commit (a git worktree of it) on the path, in a subprocess, and the table sets them
side by side with the ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

# Published prices, us-east-1, USD (S3 Standard requests, SQS standard queue, Lambda x86).
PRICES = {
    "s3_put_per_1000": 0.005,  # PUT, COPY, POST, LIST
    "s3_get_per_1000": 0.0004,  # GET, HEAD and the rest (DELETE is free)
    "sqs_per_million": 0.40,
    "lambda_per_million": 0.20,
    "lambda_per_gb_second": 0.0000166667,
}
S3_TIER1 = {"PutObject", "CopyObject", "ListObjectsV2", "ListObjects", "DeleteObjects"}
FREE = {"DeleteObject"}
DATASET = "ingest"


COUNTS_PATH = "/_tessera/request-counts"


class CountingApp:
    """WSGI middleware in front of moto: counts each request as (service, operation). In moto's
    process (the local runtime's `moto_middleware`) it answers GET COUNTS_PATH with the counts
    so far, read by `RemoteCounts`."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.counts: Counter[tuple[str, str]] = Counter()
        self.lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        if environ.get("PATH_INFO") == COUNTS_PATH:
            body = json.dumps([[*key, n] for key, n in self.snapshot().items()]).encode()
            start_response("200 OK", [("Content-Type", "application/json")])
            return [body]
        operation = classify(environ)
        with self.lock:
            self.counts[operation] += 1
        return self.app(environ, start_response)

    def snapshot(self) -> Counter[tuple[str, str]]:
        with self.lock:
            return Counter(self.counts)


class RemoteCounts:
    """The counts of a CountingApp in moto's process."""

    def __init__(self, endpoint: str) -> None:
        self.url = endpoint + COUNTS_PATH

    def snapshot(self) -> Counter[tuple[str, str]]:
        with urllib.request.urlopen(self.url, timeout=30) as response:
            return Counter({(service, op): n for service, op, n in json.load(response)})


def _counter(runtime: Any) -> Any:
    """What counts the runtime's AWS requests: in moto's process when moto has one (its
    `moto_middleware`); in front of the in-process server of commits before that."""
    moto = runtime._moto
    if hasattr(moto, "_server"):  # ThreadedMotoServer in this process
        counter = CountingApp(moto._server.app)
        moto._server.app = counter
        return counter
    return RemoteCounts(runtime.aws_endpoint)


def classify(environ: dict[str, Any]) -> tuple[str, str]:
    target = environ.get("HTTP_X_AMZ_TARGET", "")
    if target:
        service, _, operation = target.partition(".")
        return service.removeprefix("Amazon").lower(), operation
    credential = environ.get("HTTP_AUTHORIZATION", "")
    scope = credential.split("Credential=", 1)[-1].split(",", 1)[0].split("/")
    service = scope[3] if len(scope) > 3 else "unknown"
    if service != "s3":
        query = parse_qs(environ.get("QUERY_STRING", ""))
        return service, query.get("Action", ["unknown"])[0]
    method = environ.get("REQUEST_METHOD", "")
    query = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
    if method == "PUT":
        return service, "CopyObject" if "HTTP_X_AMZ_COPY_SOURCE" in environ else "PutObject"
    if method == "GET":
        return service, "ListObjectsV2" if "list-type" in query else "GetObject"
    if method == "POST" and "delete" in query:
        return service, "DeleteObjects"
    return service, {"HEAD": "HeadObject", "DELETE": "DeleteObject"}.get(method, method)


def price_per_1000_tiles(
    requests: dict[str, int], invocations: int, gb_seconds: float, tiles: int
) -> float:
    s3_put = sum(n for op, n in requests.items() if op.split(":")[1] in S3_TIER1)
    s3_get = sum(
        n
        for op, n in requests.items()
        if op.startswith("s3:") and op.split(":")[1] not in S3_TIER1 | FREE
    )
    sqs = sum(n for op, n in requests.items() if op.startswith("sqs:"))
    total = (
        s3_put / 1000 * PRICES["s3_put_per_1000"]
        + s3_get / 1000 * PRICES["s3_get_per_1000"]
        + sqs / 1e6 * PRICES["sqs_per_million"]
        + invocations / 1e6 * PRICES["lambda_per_million"]
        + gb_seconds * PRICES["lambda_per_gb_second"]
    )
    return round(total / tiles * 1000, 6) if tiles else 0.0


def run(sheets: int, cells: int, cols: int, timeout: float) -> dict[str, Any]:
    """One run on a fresh local runtime; works with the pipeline of any commit that has the
    local runtime (only its long-standing names are used)."""
    import logging

    from tessera.config import PIPELINE
    from tessera.dataset import load_dataset
    from tessera_dev.bench.soak import sheet_bytes
    from tessera_dev.local.runtime import LocalRuntime

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    bodies = [sheet_bytes(index, cells, cols) for index in range(sheets)]
    rows = -(-cells // cols)
    options: dict[str, Any] = {"bucket": f"tessera-ingest-{uuid.uuid4().hex[:8]}"}
    if "moto_middleware" in LocalRuntime.__dataclass_fields__:
        options["moto_middleware"] = "tessera_dev.bench.ingest:CountingApp"
    with LocalRuntime(**options) as runtime:
        counter = _counter(runtime)
        busy: dict[str, float] = {}
        lock = threading.Lock()
        empty: Counter[str] = Counter()
        for pump in runtime.pumps:
            pump.handler = _timed(pump.handler, pump.queue.spec.function, busy, lock)
            counted = _counting_empty(pump.poll_once, pump.queue.spec.function, empty, lock)
            pump.poll_once = counted  # type: ignore[method-assign]
        # S3's test events (sent once, when notifications are configured) are not ingest's
        runtime.wait_until_idle(timeout=60, settle=1)
        start_counts = counter.snapshot()
        start_batches = {p.queue.spec.function: p.stats.batches for p in runtime.pumps}
        start_messages = sum(p.stats.succeeded for p in runtime.pumps)
        start_empty = sum(empty.values())
        busy.clear()
        s3 = runtime.client("s3")
        started = time.perf_counter()
        for index, (body, labels) in enumerate(bodies):
            s3.put_object(
                Bucket=runtime.bucket,
                Key=f"{PIPELINE.prefixes.incoming_train}{DATASET}/sheet-{index:04d}.png",
                Body=body,
                ContentType="image/png",
                Metadata={"grid": f"{rows}x{cols}", "row-labels": " ".join(labels)},
            )
        before_idle = counter.snapshot()
        # The depth polls of wait_until_idle are the bench's, not the pipeline's.
        idle = runtime.wait_until_idle(timeout=timeout, settle=2)
        # to the last handler's end (the idle wait's settling time is not ingest's)
        seconds = busy.pop("last finished", time.perf_counter()) - started
        counts = counter.snapshot()
        counts[("sqs", "GetQueueAttributes")] = before_idle[("sqs", "GetQueueAttributes")]
        counts -= start_counts
        # Pollers' empty receives cost by the hour whatever the load (on AWS too): left out.
        counts[("sqs", "ReceiveMessage")] -= sum(empty.values()) - start_empty
        # S3 sends its event notifications to SQS inside moto, past the counter; on AWS each
        # is a billed SendMessage: one per message a pump saw through.
        messages = sum(p.stats.succeeded for p in runtime.pumps) - start_messages
        counts[("sqs", "SendMessage")] += messages
        # The local pumps' leases on messages in flight: deployed, the visibility timeout
        # outlasts the function's, and Lambda makes no such call.
        leases = counts.pop(("sqs", "ChangeMessageVisibilityBatch"), 0)
        from tessera.storage.s3 import S3ObjectStore

        store = S3ObjectStore(bucket=runtime.bucket)  # its pool is sized for the loader
        dataset = load_dataset(store, DATASET)
        tiles = sum(
            1
            for item in store.list(f"{PIPELINE.prefixes.tiles}{DATASET}/")
            if item.key.endswith(".png")
        )
        invocations = {
            p.queue.spec.function: p.stats.batches - start_batches[p.queue.spec.function]
            for p in runtime.pumps
        }
        memory = {p.queue.spec.function: p.queue.spec.function_memory_mb for p in runtime.pumps}
    uploads = counts.pop(("s3", "PutObject"), 0) - sheets
    counts[("s3", "PutObject")] = uploads
    requests = {f"{service}:{op}": n for (service, op), n in sorted(counts.items()) if n}
    gb_seconds = sum(busy[f] * memory[f] / 1024 for f in busy)
    sources = {str(s) for s in dataset.sources}
    expected = sheets * cells
    return {
        "sheets": sheets,
        "cells_per_sheet": cells,
        "tiles_expected": expected,
        "rows": len(dataset),
        "distinct_rows": len(sources),
        "tile_objects": tiles,
        "idle": idle,
        "seconds": round(seconds, 2),
        "tiles_per_second": round(len(dataset) / seconds, 1),
        "requests": requests,
        "requests_per_tile": round(sum(requests.values()) / expected, 3),
        "s3_per_tile": _per(requests, "s3:", expected),
        "sqs_per_tile": _per(requests, "sqs:", expected),
        "invocations": invocations,
        "invocations_per_tile": round(sum(invocations.values()) / expected, 4),
        "handler_seconds": {f: round(s, 2) for f, s in busy.items()},
        "local_lease_extensions": leases,
        "usd_per_1000_tiles": price_per_1000_tiles(
            requests, sum(invocations.values()), gb_seconds, expected
        ),
    }


def _per(requests: dict[str, int], service: str, tiles: int) -> float:
    return round(sum(n for k, n in requests.items() if k.startswith(service)) / tiles, 3)


def _counting_empty(poll: Any, function: str, empty: Counter[str], lock: threading.Lock) -> Any:
    def counted(*, wait_seconds: int = 0) -> int:
        received: int = poll(wait_seconds=wait_seconds)
        if not received:
            with lock:
                empty[function] += 1
        return received

    return counted


def _timed(handler: Any, function: str, busy: dict[str, float], lock: threading.Lock) -> Any:
    def timed(event: dict[str, Any], context: Any) -> Any:
        started = time.perf_counter()
        try:
            return handler(event, context)
        finally:
            with lock:
                finished = time.perf_counter()
                busy[function] = busy.get(function, 0.0) + finished - started
                busy["last finished"] = max(busy.get("last finished", 0.0), finished)

    return timed


_RUN_AS_MAIN = (
    "import runpy, sys; sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"
)


def at_ref(ref: str, workloads: list[tuple[int, int, int]], timeout: float) -> list[dict[str, Any]]:
    """The same runs with the pipeline at git `ref`: a worktree of it first on the path."""
    root = Path(__file__).resolve().parents[3]
    with tempfile.TemporaryDirectory(prefix="tessera-baseline-") as scratch:
        tree = Path(scratch) / "tree"
        subprocess.run(
            ["git", "-C", str(root), "worktree", "add", "--detach", str(tree), ref],
            check=True,
            capture_output=True,
        )
        try:
            spec = json.dumps([list(w) for w in workloads])
            timeout_arg = ["--timeout", str(timeout)]
            completed = subprocess.run(
                # -c, not the script's path: that would put this folder (and its training.py)
                # first on sys.path, ahead of the tree's `training` package
                [sys.executable, "-c", _RUN_AS_MAIN, __file__, "--worker", spec, *timeout_arg],
                env={**os.environ, "PYTHONPATH": f"{tree / 'shared'}{os.pathsep}{tree}"},
                cwd=tree,
                capture_output=True,
                text=True,
                check=False,
            )
        finally:
            subprocess.run(
                ["git", "-C", str(root), "worktree", "remove", "--force", str(tree)],
                check=False,
                capture_output=True,
            )
    lines = [line for line in completed.stdout.splitlines() if line.startswith("[")]
    if completed.returncode != 0 or not lines:
        raise RuntimeError(f"the baseline run at {ref} failed:\n{completed.stderr[-3000:]}")
    return list(json.loads(lines[-1]))


def _table(results: list[dict[str, Any]], baseline: list[dict[str, Any]] | None, ref: str) -> None:
    measures = [
        ("tiles/s", "tiles_per_second"),
        ("requests per tile", "requests_per_tile"),
        ("S3 requests per tile", "s3_per_tile"),
        ("SQS requests per tile", "sqs_per_tile"),
        ("invocations per tile", "invocations_per_tile"),
        ("USD per 1,000 tiles", "usd_per_1000_tiles"),
    ]
    header = "| workload | measure | now |" + (f" {ref} | ratio |" if baseline else "")
    print(header)
    print("|---" * (header.count("|") - 1) + "|")
    for index, result in enumerate(results):
        name = f"{result['sheets']} x {result['cells_per_sheet']}"
        check = f"rows {result['rows']:,} of {result['tiles_expected']:,}"
        for label, key in measures:
            line = f"| {name} | {label} | {result[key]} |"
            if baseline:
                then = baseline[index][key]
                ratio = (result[key] / then) if then else float("nan")
                line += f" {then} | {ratio:.2f}x |"
            print(line)
        then = f" {baseline[index]['rows']:,} | |" if baseline else ""
        print(f"| {name} | rows | {check} |{then}")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="tessera bench ingest", description=__doc__)
    parser.add_argument("--sheets", default="10,100", help="sheet counts to run, comma-separated")
    parser.add_argument("--cells", type=int, default=100, help="cells per sheet")
    parser.add_argument("--cols", type=int, default=10)
    parser.add_argument("--big", type=int, default=5000, help="cells of one big sheet (0: none)")
    parser.add_argument("--baseline-ref", help="git commit to run side by side (a worktree)")
    parser.add_argument("--timeout", type=float, default=3600)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        workloads = [tuple(w) for w in json.loads(args.worker)]
        print(json.dumps([run(s, c, k, args.timeout) for s, c, k in workloads]))
        return 0
    workloads = [(int(n), args.cells, args.cols) for n in args.sheets.split(",") if n.strip()]
    if args.big:
        workloads.append((1, args.big, 50))
    if any(min(w) < 1 for w in workloads):
        print("sheet counts, --cells and --cols must be positive", file=sys.stderr)
        return 2
    results = [run(s, c, k, args.timeout) for s, c, k in workloads]
    baseline = at_ref(args.baseline_ref, workloads, args.timeout) if args.baseline_ref else None
    print(
        f"Ingest on the local runtime ({os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}); "
        f"prices: {PRICES}"
    )
    _table(results, baseline, args.baseline_ref or "")
    ok = all(r["rows"] == r["distinct_rows"] == r["tiles_expected"] and r["idle"] for r in results)
    print(json.dumps({"now": results, "baseline": baseline, "baseline_ref": args.baseline_ref}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
