"""The exhaustive hyper-parameter search fanned out over workers.

The reference grid's 144 candidates, in a fixed order, are dealt to N workers: worker i scores
candidates i, i+N, i+2N, ... with the same 5-fold cross-validation GridSearchCV uses, on the
same rows (each worker loads the run's data and makes the same split and search subset), and
writes its scores to `runs/<run-id>/search/shard-<i>-of-<N>.json`. The job then reads every
shard, picks the best candidate (GridSearchCV's rule: highest mean CV accuracy, the earlier
candidate on a tie) and trains it.

Workers are the training entry point itself, `python -m training.train ... --search-shard i/N`:
locally the job starts them as processes (`--search-workers N`); deployed, the training workflow
runs them as an AWS Batch array job (the child's index is `AWS_BATCH_JOB_ARRAY_INDEX`) before the
job, which then only gathers (`--search-shards N`).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO, Any

from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import ParameterGrid, StratifiedKFold
from threadpoolctl import threadpool_limits

from tessera.config import PIPELINE
from tessera.storage import ObjectStore
from training.errors import TrainingError
from training.families.base import CV_FOLDS, FitOptions, Floats, Labels, SearchReport
from training.families.mlp import GRIDS, mlp_pipeline, plain, search_subset
from training.progress import log

ARRAY_INDEX = "AWS_BATCH_JOB_ARRAY_INDEX"  # set by Batch in each child of an array job


def candidates(grid: str = "reference") -> list[dict[str, Any]]:
    """A grid's candidates in GridSearchCV's order."""
    return list(ParameterGrid(GRIDS[grid]))


def shard_key(run_id: str, index: int, count: int) -> str:
    return f"{PIPELINE.prefixes.runs}{run_id}/search/shard-{index:03d}-of-{count:03d}.json"


def parse_shard(value: str) -> tuple[int, int]:
    """`i/N` (or `-/N`: the index from AWS_BATCH_JOB_ARRAY_INDEX) -> (i, N)."""
    index, _, count = value.partition("/")
    if index == "-":
        index = os.environ.get(ARRAY_INDEX, "")
    if not (index.isdigit() and count.isdigit()) or not 0 <= int(index) < int(count):
        raise TrainingError(
            "invalid_argument", f"--search-shard wants i/N with 0 <= i < N, got {value!r}"
        )
    return int(index), int(count)


def score_shard(
    x: Floats, y: Labels, index: int, count: int, options: FitOptions
) -> tuple[int, list[dict[str, Any]]]:
    """Cross-validate this worker's slice of the candidates: (rows scored on, scores). The
    slice goes through GridSearchCV itself (a grid of one value per parameter per candidate),
    so its (candidate, fold) fits spread over `options.jobs` as the whole search's do and
    score exactly as they would there."""
    from sklearn.model_selection import GridSearchCV

    x, y = search_subset(x, y, options)
    cv = StratifiedKFold(n_splits=CV_FOLDS, shuffle=True, random_state=options.seed)
    grid = candidates(options.search_grid)
    positions = list(range(index, len(grid), count))
    if not positions:
        return len(y), []
    # This worker's cores: its share of the machine locally, the whole task deployed. joblib
    # gives each of its processes cores // jobs BLAS threads; one process gets all of them.
    cores = int(os.environ.get(WORKER_CORES) or os.cpu_count() or 1)
    jobs = max(1, min(options.jobs, cores))
    search = GridSearchCV(
        mlp_pipeline(seed=options.seed, early_stopping=False),
        [{name: [value] for name, value in grid[p].items()} for p in positions],
        cv=cv,
        n_jobs=jobs,
        refit=False,
    )
    with warnings.catch_warnings(), threadpool_limits(limits=max(1, cores // jobs)):
        warnings.simplefilter("ignore", ConvergenceWarning)
        search.fit(x, y)
    results = search.cv_results_
    rows = [
        {
            "candidate": position,
            **{name.removeprefix("mlp__"): plain(value) for name, value in grid[position].items()},
            "cv_accuracy": round(float(results["mean_test_score"][i]), 5),
            "cv_std": round(float(results["std_test_score"][i]), 5),
            "fit_seconds": round(float(results["mean_fit_time"][i]), 3),
        }
        for i, position in enumerate(positions)
    ]
    log(f"search shard {index}/{count}: {len(rows)} candidates scored")
    return len(y), rows


def write_shard(
    store: ObjectStore,
    run_id: str,
    index: int,
    count: int,
    *,
    fingerprint: str,
    rows: int,
    scores: list[dict[str, Any]],
    seconds: float,
) -> str:
    key = shard_key(run_id, index, count)
    store.put_json(
        key,
        {
            "index": index,
            "count": count,
            "fingerprint": fingerprint,
            "rows": rows,
            "seconds": round(seconds, 2),
            "scores": scores,
        },
    )
    return key


def worker_command(argv: Sequence[str], run_id: str, index: int, count: int) -> list[str]:
    """The same entry point with the job's own arguments, as worker `index` of `count`."""
    base: list[str] = []
    skip = False
    for argument in argv:
        if skip:
            skip = False
        elif argument == "--search-workers":
            skip = True  # and its value
        elif not argument.startswith("--search-workers="):
            base.append(argument)
    return [sys.executable, "-m", "training.train", *base, "--run-id", run_id,
            "--search-shard", f"{index}/{count}", "--no-review"]  # fmt: skip


@dataclass
class Worker:
    process: subprocess.Popen[bytes]
    log: IO[bytes]  # its stderr, in a file: a pipe left unread could fill and block it


WORKER_CORES = "TESSERA_SEARCH_WORKER_CORES"  # the cores one local worker may use


def _thread_limits(count: int) -> dict[str, str]:
    """Workers sharing this machine share its cores: each is told its share, and keeps its
    joblib processes and BLAS threads within it (`score_shard`)."""
    return {WORKER_CORES: str(max(1, (os.cpu_count() or 1) // count))}


def start_local_workers(argv: Sequence[str], run_id: str, count: int) -> list[Worker]:
    workers = []
    for index in range(count):
        log_file = tempfile.TemporaryFile()  # noqa: SIM115 - closed by wait_for_workers
        process = subprocess.Popen(
            worker_command(argv, run_id, index, count),
            stdout=subprocess.DEVNULL,
            stderr=log_file,
            env={**os.environ, **_thread_limits(count)},
        )
        workers.append(Worker(process, log_file))
    return workers


def wait_for_workers(workers: list[Worker]) -> None:
    failed = []
    for index, worker in enumerate(workers):
        worker.process.wait()
        worker.log.seek(0)
        tail = worker.log.read().decode(errors="replace")[-500:]
        worker.log.close()
        if worker.process.returncode != 0:
            failed.append(f"worker {index} exited {worker.process.returncode}: {tail}")
    if failed:
        raise TrainingError("search_worker_failed", "; ".join(failed))


def gather(
    store: ObjectStore,
    run_id: str,
    count: int,
    *,
    fingerprint: str,
    seconds: float,
    grid: str = "reference",
) -> SearchReport:
    """Every shard's scores -> the search report; a missing shard, or one scored on other
    rows, fails the run rather than picking from part of the grid."""
    scores: list[dict[str, Any]] = []
    rows = 0
    for index in range(count):
        document = store.get_json(shard_key(run_id, index, count))
        if not isinstance(document, dict):
            raise TrainingError(
                "search_incomplete", f"no scores from search worker {index} of {count}"
            )
        if document.get("fingerprint") != fingerprint:
            raise TrainingError(
                "search_incomplete", f"search worker {index} scored other rows than this run's"
            )
        scores += document["scores"]
        rows = int(document["rows"])
    if sorted(s["candidate"] for s in scores) != list(range(len(candidates(grid)))):
        raise TrainingError("search_incomplete", "the shards do not cover the grid exactly once")
    scores.sort(key=lambda s: s["candidate"])
    best = max(scores, key=lambda s: (s["cv_accuracy"], -s["candidate"]))
    ranked = sorted(scores, key=lambda s: (-s["cv_accuracy"], s["candidate"]))
    table = [{**s, "rank": rank} for rank, s in enumerate(ranked, start=1)]
    params = {k.removeprefix("mlp__") for k in GRIDS[grid]}
    best_params = {
        k: tuple(v) if isinstance(v, list) else v for k, v in best.items() if k in params
    }
    log(f"search: best {best_params} cv accuracy {best['cv_accuracy']:.4f} from {count} worker(s)")
    return SearchReport(
        strategy=f"exhaustive, {count} worker(s)",
        rows=rows,
        fits=len(scores) * CV_FOLDS,
        seconds=round(seconds, 2),
        best_params=best_params,
        best_cv_accuracy=float(best["cv_accuracy"]),
        table=table,
    )


def fanned_out(
    store: ObjectStore,
    run_id: str,
    *,
    argv: Sequence[str] | None,
    count: int,
    fingerprint: str,
    grid: str = "reference",
) -> SearchReport:
    """Locally (`argv` given): start the workers and wait; deployed (`argv` None): the array
    job has run them already. Then gather."""
    started = time.perf_counter()
    if argv is not None:
        log(f"search: {count} local worker process(es)")
        wait_for_workers(start_local_workers(argv, run_id, count))
    seconds = time.perf_counter() - started
    return gather(store, run_id, count, fingerprint=fingerprint, seconds=seconds, grid=grid)
