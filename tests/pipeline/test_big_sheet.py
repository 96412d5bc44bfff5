"""The largest sheet the pipeline takes, 20,000 cells (`max_grid_cells`), is one unit of work:
split into 20,000 tiles and one tile batch, vectorized into one shard of 20,000 rows. One cell
more is refused up front as `bad_grid`, with nothing written but the quarantine record."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tessera.config import PIPELINE
from tessera.dataset import load_dataset
from tessera.pipeline.split import split_object
from tessera.pipeline.vectorize import vectorize_object
from tessera.storage import ObjectStore
from tessera_dev.samples import Glyphs, render_sheet
from tests.conftest import tile_batches_under

pytestmark = pytest.mark.slow
LIMIT = PIPELINE.limits.max_grid_cells


def sheet(digits: Glyphs, rows: int, cols: int) -> bytes:
    sevens = digits.ink[digits.labels == "7"]
    ink = sevens[np.arange(rows * cols) % len(sevens)]
    return render_sheet(ink, cols=cols, cell=28, margin=3)


def test_a_sheet_of_the_most_cells_allowed_becomes_one_shard_of_every_row(
    memory_store: ObjectStore, digits: Glyphs
) -> None:
    assert LIMIT == 20_000
    key = "incoming/train/big/7/sheet-100x200.png"
    memory_store.put(key, sheet(digits, 100, 200), content_type="image/png")
    split = split_object(memory_store, key)
    assert split.status == "split", split.detail
    assert split.detail["tiles"] == LIMIT
    (batch,) = tile_batches_under(memory_store, "tiles/big/")
    assert vectorize_object(memory_store, batch).status == "vectorized"
    rows = load_dataset(memory_store, "big")
    assert len(rows) == LIMIT and set(rows.y.tolist()) == {"7"}
    assert len(set(rows.sources.tolist())) == LIMIT
    assert len(list(memory_store.list("datasets/big/rows/"))) == 1


def test_one_row_more_is_refused_before_anything_is_cut(
    memory_store: ObjectStore, digits: Glyphs
) -> None:
    key = "incoming/train/big/7/sheet-101x200.png"  # 20,200 cells
    memory_store.put(key, sheet(digits, 101, 200), content_type="image/png")
    outcome = split_object(memory_store, key)
    assert outcome.status == "quarantined"
    reason = json.loads(memory_store.get(f"quarantine/{key}.reason.json").body)
    assert reason["code"] == "bad_grid" and str(LIMIT) in reason["message"]
    assert list(memory_store.list("tiles/")) == []
    assert list(memory_store.list("datasets/big/rows/")) == []
