"""The exhaustive search fanned out: workers scoring slices of the grid agree with GridSearchCV
over the whole grid, and the job refuses to pick from part of it."""

from __future__ import annotations

import numpy as np
import pytest

from tessera.storage.memory import InMemoryObjectStore
from tessera_dev.samples import Glyphs
from training import fanout
from training.errors import TrainingError
from training.families.base import FitOptions
from training.families.mlp import search_mlp

OPTIONS = FitOptions(seed=3, search="exhaustive", search_rows=240, search_grid="quick", jobs=1)


@pytest.fixture(scope="module")
def rows(digits: Glyphs) -> tuple[np.ndarray, np.ndarray]:
    canvas = np.zeros((300, 28, 28), np.float32)
    canvas[:, 10:18, 10:18] = digits.ink[:300]
    return canvas.reshape(300, -1), digits.labels[:300].astype(str)


def scored(rows: tuple[np.ndarray, np.ndarray], count: int) -> InMemoryObjectStore:
    store = InMemoryObjectStore(bucket="b")
    for index in range(count):
        used, scores = fanout.score_shard(*rows, index, count, OPTIONS)
        fanout.write_shard(
            store, "run", index, count, fingerprint="f", rows=used, scores=scores, seconds=1.0
        )
    return store


def test_two_workers_find_what_gridsearchcv_finds_on_the_same_rows(
    rows: tuple[np.ndarray, np.ndarray],
) -> None:
    whole = search_mlp(*rows, strategy="exhaustive", options=OPTIONS)
    report = fanout.gather(scored(rows, 2), "run", 2, fingerprint="f", seconds=1.0, grid="quick")
    assert report.best_params == whole.best_params
    assert report.best_cv_accuracy == pytest.approx(whole.best_cv_accuracy, abs=1e-5)
    assert report.fits == whole.fits == 4 * 5 and report.rows == whole.rows == 240
    by_candidate = {
        (tuple(r["hidden_layer_sizes"]), r["alpha"]): r["cv_accuracy"] for r in report.table
    }
    for row in whole.table:
        key = (tuple(row["hidden_layer_sizes"]), row["alpha"])
        assert by_candidate[key] == pytest.approx(row["cv_accuracy"], abs=1e-5)


def test_a_missing_or_foreign_shard_fails_the_run(rows: tuple[np.ndarray, np.ndarray]) -> None:
    store = scored(rows, 2)
    with pytest.raises(TrainingError, match="other rows"):
        fanout.gather(store, "run", 2, fingerprint="another", seconds=1.0, grid="quick")
    store.delete(fanout.shard_key("run", 1, 2))
    with pytest.raises(TrainingError) as missing:
        fanout.gather(store, "run", 2, fingerprint="f", seconds=1.0, grid="quick")
    assert missing.value.code == "search_incomplete" and "worker 1 of 2" in missing.value.message


def test_a_shard_index_comes_from_the_argument_or_from_batch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert fanout.parse_shard("1/4") == (1, 4)
    monkeypatch.setenv(fanout.ARRAY_INDEX, "3")
    assert fanout.parse_shard("-/4") == (3, 4)
    for bad in ("4/4", "x/2", "-1/2", "1"):
        with pytest.raises(TrainingError):
            fanout.parse_shard(bad)


def test_local_workers_get_the_same_arguments_but_their_shard() -> None:
    argv = ["--dataset", "d", "--search", "exhaustive", "--search-workers", "2", "--jobs", "1"]
    assert fanout.worker_command(argv, "run-1", 0, 2)[3:] == [
        "--dataset", "d", "--search", "exhaustive", "--jobs", "1",
        "--run-id", "run-1", "--search-shard", "0/2", "--no-review",
    ]  # fmt: skip


def test_local_workers_share_the_cores_instead_of_each_taking_them_all(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("os.cpu_count", lambda: 8)
    assert fanout._thread_limits(2) == {fanout.WORKER_CORES: "4"}
    assert fanout._thread_limits(16) == {fanout.WORKER_CORES: "1"}
