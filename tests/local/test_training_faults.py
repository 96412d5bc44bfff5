"""Training on the local runtime as the container runs it (a process). A job killed mid-run: the run
says failed (the runtime records it as the deployed workflow's RecordFailure state does), the
champion and the list of versions are untouched, and the next run goes through. And the
exhaustive search fanned out to worker processes of the same entry point."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tessera.registry import ModelRegistry
from tessera.storage.s3 import S3ObjectStore
from tessera_dev.local.runtime import LocalRuntime, local_run_id
from tessera_dev.samples import Glyphs
from tests.conftest import drop_digit_sheets

pytestmark = [pytest.mark.slow, pytest.mark.e2e]


@pytest.fixture(scope="module")
def runtime(digits: Glyphs) -> Iterator[tuple[LocalRuntime, S3ObjectStore]]:
    with LocalRuntime(bucket="tessera-kill") as runtime:
        drop_digit_sheets(runtime, digits)
        s3 = runtime.client("s3")
        assert runtime.train(["digits"])["status"] == "succeeded"
        yield runtime, S3ObjectStore(bucket=runtime.bucket, client=s3)


def run_status(store: S3ObjectStore, run_id: str) -> dict[str, Any] | None:
    found = store.get_json(f"runs/{run_id}/status.json")
    return found if isinstance(found, dict) else None


def test_a_training_job_killed_mid_run_says_failed_and_changes_nothing(
    runtime: tuple[LocalRuntime, S3ObjectStore],
) -> None:
    local, store = runtime
    registry = ModelRegistry(store, "digits")
    champion, versions = registry.champion(), registry.versions()
    # GIVEN a run that has started (its status says running)
    run_id = local_run_id()
    process = local.start_training(["digits"], run_id=run_id)
    deadline = time.monotonic() + 120
    while (run_status(store, run_id) or {}).get("status") != "running":
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    # WHEN it is killed (SIGKILL: no handler runs, as for an out-of-memory kill)
    process.kill()
    result = local.finish_training(process, run_id)
    # THEN the run says failed, and why
    assert result["status"] == "failed"
    recorded = run_status(store, run_id)
    assert recorded is not None and recorded["status"] == "failed"
    assert recorded["error"]["code"] == "job_ended" and "signal 9" in recorded["error"]["message"]
    # AND nothing of the model registry moved
    assert registry.champion() == champion
    assert registry.versions() == versions
    # AND the next run goes through
    again = local.train(["digits"])
    assert again["status"] == "succeeded"
    assert len(registry.versions()) == len(versions) + 1


def test_a_job_that_fails_on_its_own_keeps_its_own_reason(
    runtime: tuple[LocalRuntime, S3ObjectStore],
) -> None:
    local, store = runtime
    run_id = local_run_id()
    result = local.train(["nothing-here"], run_id=run_id)
    assert result["status"] == "failed"
    recorded = run_status(store, run_id)
    assert recorded is not None and recorded["status"] == "failed"
    assert recorded["error"]["code"] == "empty_dataset"  # the job's word, not overwritten


def test_the_exhaustive_search_fans_out_to_worker_processes_of_the_same_entry_point(
    runtime: tuple[LocalRuntime, S3ObjectStore],
) -> None:
    local, store = runtime
    run_id = local_run_id()
    args = ["--search", "exhaustive", "--search-grid", "quick", "--search-workers", "2"]
    result = local.train(["digits"], run_id=run_id, extra_args=[*args, "--jobs", "1"])
    assert result["status"] == "succeeded", result.get("error")
    # each worker wrote its slice of the grid under the run; the job trained the best of all
    shards = sorted(i.key for i in store.list(f"runs/{run_id}/search/"))
    assert shards == [
        f"runs/{run_id}/search/shard-000-of-002.json",
        f"runs/{run_id}/search/shard-001-of-002.json",
    ]
    scored = [s for key in shards for s in json.loads(store.get(key).body)["scores"]]
    assert sorted(s["candidate"] for s in scored) == [0, 1, 2, 3]
    search = result["search"]
    assert search["strategy"] == "exhaustive, 2 worker(s)" and search["fits"] == 20
    best = max(scored, key=lambda s: (s["cv_accuracy"], -s["candidate"]))
    assert search["best_cv_accuracy"] == best["cv_accuracy"]
    # a worker's failure fails the run, with the worker named
    failing = local.train(["digits"], extra_args=[*args, "--search-rows", "1", "--jobs", "1"])
    assert failing["status"] == "failed" and failing["code"] == "search_worker_failed"
