"""The label review: wrong labels planted in sklearn's digits come out on top, the degenerate
cases say why they were skipped, and a training run stores review.json beside its version."""

from __future__ import annotations

import contextlib
import io
import json
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

from tessera.dataset import Dataset, Row, encode_rows, sheet_shard_key
from tessera.registry import REVIEW_FILE, ModelRegistry
from tessera.storage import ObjectStore
from tessera.storage.memory import InMemoryObjectStore
from tessera_dev.samples import Glyphs
from tests.conftest import BUCKET
from training import train as train_module
from training.data import TrainingData
from training.options import parse_args
from training.review import review_labels, sample_rows

SHEET_ROWS = 100
FLIPPED = 20
ENTRY_KEYS = {"tile", "label", "suggested", "score", "confidence"}


def vectors(ink: NDArray[np.float32]) -> NDArray[np.uint8]:
    """8x8 digits centred in 28x28 rows of 0..255 bytes, as the other training tests draw them."""
    canvas = np.zeros((len(ink), 28, 28), np.float32)
    canvas[:, 10:18, 10:18] = ink
    return np.rint(canvas.reshape(len(ink), -1) * 255).astype(np.uint8)


def digits_dataset(digits: Glyphs, count: int | None = None) -> Dataset:
    """The first `count` digits (all 1,797 by default) on sheets of SHEET_ROWS tiles each,
    keyed as Split keys tiles."""
    count = len(digits.labels) if count is None else count
    sources = [
        f"tiles/digits/sheet{i // SHEET_ROWS:02d}/r{i % SHEET_ROWS // 10:03d}-c{i % 10:03d}.png"
        for i in range(count)
    ]
    return Dataset(
        x=vectors(digits.ink[:count]),
        y=digits.labels[:count].copy(),
        sources=np.array(sources),
        fingerprint="f" * 16,
    )


@pytest.fixture(scope="module")
def flipped(digits: Glyphs) -> tuple[Dataset, set[str], dict[str, Any]]:
    """FLIPPED of the 183 "3"s labelled "8", the tiles that were, and the review (fitted once).
    Fewer rows make the flipped rows a larger part of the class, which the folds' models then
    learn: on the first 1,000 digits the review ranks 11 to 17 of them first, by seed."""
    data = digits_dataset(digits)
    threes = np.flatnonzero(data.y == "3")[:FLIPPED]
    data.y[threes] = "8"
    return data, {str(data.sources[i]) for i in threes}, review_labels(data, seed=0)


def test_planted_label_errors_are_ranked_first_with_their_true_label(
    flipped: tuple[Dataset, set[str], dict[str, Any]],
) -> None:
    _, wrong, review = flipped
    top = review["label_issues"][:30]
    found = [entry for entry in top if entry["tile"] in wrong and entry["suggested"] == "3"]
    assert len(found) >= 15, top
    assert all(entry["label"] == "8" for entry in found)
    scores = [entry["score"] for entry in review["label_issues"]]
    assert scores == sorted(scores, reverse=True)  # most suspicious first


def test_the_review_is_json_with_every_field_the_console_reads(
    flipped: tuple[Dataset, set[str], dict[str, Any]],
) -> None:
    data, _, review = flipped
    assert json.loads(json.dumps(review)) == review
    assert review["method"].startswith("confident learning (cleanlab find_label_issues")
    assert review["folds"] == 3 and review["folds_by"] == "sheet"
    assert review["rows"] == review["rows_total"] == len(data) and review["sample"] is None
    assert review["classes"] == [str(i) for i in range(10)]
    assert 0.8 < review["out_of_sample_accuracy"] <= 1.0
    assert review["label_issues_found"] == len(review["label_issues"]) > 0
    assert len(review["least_confident"]) == min(500, len(data) - len(review["label_issues"]))
    assert review["seconds"] >= 0 and "skipped" not in review
    entries = review["label_issues"] + review["least_confident"]
    assert all(set(entry) == ENTRY_KEYS for entry in entries)
    assert all(0.0 <= entry["score"] <= 1.0 and 0 < entry["confidence"] <= 1 for entry in entries)
    issues = {entry["tile"] for entry in review["label_issues"]}
    unsure = [entry["tile"] for entry in review["least_confident"]]
    assert not issues & set(unsure) and len(set(unsure)) == len(unsure)
    # The least confident: the top probability rises down the list, and is the score's complement.
    confidences = [entry["confidence"] for entry in review["least_confident"]]
    assert confidences == sorted(confidences)
    assert all(
        np.isclose(entry["score"], 1 - entry["confidence"], atol=1e-5)
        for entry in review["least_confident"]
    )


def test_limit_caps_both_lists(digits: Glyphs) -> None:
    review = review_labels(digits_dataset(digits, 300), seed=0, limit=5)
    assert len(review["label_issues"]) <= 5 and len(review["least_confident"]) == 5


def test_rows_above_max_rows_are_sampled_per_class_with_the_seed(digits: Glyphs) -> None:
    data = digits_dataset(digits, 600)
    review = review_labels(data, seed=0, max_rows=200, limit=3)
    assert review["rows_total"] == 600 and 200 <= review["rows"] <= 200 + 10 * 3
    assert "seed 0" in review["sample"]
    y = np.array(["rare"] * 3 + ["common"] * 997)
    chosen = sample_rows(y, max_rows=100, folds=3, seed=1)
    assert (y[chosen] == "rare").sum() == 3 and len(chosen) == 103
    assert np.array_equal(chosen, sample_rows(y, max_rows=100, folds=3, seed=1))
    assert not np.array_equal(chosen, sample_rows(y, max_rows=100, folds=3, seed=2))


@pytest.mark.parametrize(
    ("labels", "reason"),
    [
        (lambda i: "7", "one class only"),
        (lambda i: "rare" if i < 2 else str(i % 2), "fewer rows than the 3 folds"),
    ],
)
def test_degenerate_data_is_skipped_with_a_reason(digits: Glyphs, labels: Any, reason: str) -> None:
    data = digits_dataset(digits, 40)
    data = Dataset(
        x=data.x,
        y=np.array([labels(i) for i in range(len(data))]),
        sources=data.sources,
        fingerprint=data.fingerprint,
    )
    review = review_labels(data, seed=0)
    assert reason in review["skipped"]
    assert review["label_issues"] == review["least_confident"] == []
    assert review["out_of_sample_accuracy"] is None and review["label_issues_found"] == 0
    assert json.loads(json.dumps(review)) == review


def test_review_is_on_by_default_and_recorded_in_the_config() -> None:
    argv = ["--bucket", BUCKET, "--dataset", "digits"]
    assert parse_args(argv).review is True
    assert parse_args([*argv, "--no-review"]).as_config()["review"] is False


def test_a_failing_review_is_a_warning_not_a_failed_run(
    digits: Glyphs, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(data: Dataset, *, seed: int) -> dict[str, Any]:
        raise RuntimeError("no probabilities today")

    monkeypatch.setattr(train_module, "review_labels", broken)
    registry = ModelRegistry(InMemoryObjectStore(bucket=BUCKET), "digits")
    data = TrainingData(train=digits_dataset(digits, 30), test=None, sources=["dataset:digits"])
    summary = train_module.review_versions(registry, data, ["v1"], seed=0)
    assert summary == {"error": "RuntimeError: no probabilities today"}
    assert not list(registry.store.list(registry.prefix))


def fill(store: ObjectStore, data: Dataset, name: str) -> None:
    """One shard per sheet, as Vectorize writes them."""
    sheets = [source.split("/")[2] for source in data.sources.tolist()]
    for sheet in sorted(set(sheets)):
        rows = [
            Row(
                pixels=data.x[i],
                label=str(data.y[i]),
                source_key=str(data.sources[i]),
                source_etag="e",
            )
            for i, of in enumerate(sheets)
            if of == sheet
        ]
        store.put(sheet_shard_key(name, sheet), encode_rows(rows), content_type="application/x-npz")


def test_a_training_run_stores_the_review_beside_every_version(
    store: ObjectStore, digits: Glyphs
) -> None:
    fill(store, digits_dataset(digits, 300), "digits")
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        code = train_module.main(["--bucket", BUCKET, "--dataset", "digits", "--epochs", "5"])
    result = json.loads(output.getvalue().strip().splitlines()[-1])
    assert code == 0, result
    key = f"models/digits/{result['version']}/{REVIEW_FILE}"
    assert result["review"]["key"] == key
    review = store.get_json(key)
    assert isinstance(review, dict)
    assert review["rows"] == result["review"]["rows"] == 300  # the held-out rows too
    assert len(review["label_issues"]) == result["review"]["label_issues"]
    assert store.get(key).content_type == "application/json"
