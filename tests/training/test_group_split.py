"""Honest evaluation: rows cut from sheets are held out by whole sheets (one sheet is one hand),
MNIST keeps its own test split, CSV rows and one-sheet datasets keep the row split with the
reason said; and every version carries a model card saying what it was tested on."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from sklearn.model_selection import train_test_split

from tessera.dataset import Dataset, Row, write_row
from tessera.registry import ModelRegistry
from tessera.storage import ObjectStore
from tessera_dev.samples import Glyphs
from tests.training.test_train_job import padded, status, train
from training import card
from training.data import TrainingData
from training.holdout import BY_ROW, BY_SHEET, MNIST_TEST, held_out, sheet_ids, sheet_of

PER_SHEET = 10

Labeller = Callable[[int, int], str]


def mixed(sheet: int, cell: int) -> str:
    """Both classes on every sheet, as a sheet with one digit per row would have them."""
    return str(cell % 2)


def one_class_per_sheet(sheet: int, cell: int) -> str:
    return str(sheet % 2)


def sheet_rows(
    digits: Glyphs,
    sheets: int,
    *,
    labels: Labeller = mixed,
    dataset: str = "digits",
    per_sheet: int = PER_SHEET,
) -> list[Row]:
    """`per_sheet` rows of each sheet, keyed like Split's tiles, drawn from the digits 0 and 1."""
    pool = {label: iter(np.flatnonzero(digits.labels == label).tolist()) for label in ("0", "1")}
    rows = []
    for sheet in range(sheets):
        for cell in range(per_sheet):
            label = labels(sheet, cell)
            rows.append(
                Row(
                    pixels=padded(digits.ink[next(pool[label])]),
                    label=label,
                    source_key=f"tiles/{dataset}/sheet{sheet}-0123456789ab/r{cell:03d}-c000.png",
                    source_etag="e",
                )
            )
    return rows


def as_data(rows: list[Row], sources: list[str] | None = None) -> TrainingData:
    dataset = Dataset(
        x=np.stack([row.pixels for row in rows]),
        y=np.array([row.label for row in rows]),
        sources=np.array([row.source_key for row in rows]),
        fingerprint="f" * 16,
    )
    return TrainingData(train=dataset, test=None, sources=sources or ["dataset:digits"])


def sheets_in(dataset: Dataset) -> set[str]:
    return set(sheet_ids(dataset.sources)) - {""}


def row_split_of(data: TrainingData) -> tuple[list[str], list[str]]:
    """The sources on either side of today's stratified row split, for comparison."""
    train_index, test_index = train_test_split(
        np.arange(len(data.train)), test_size=0.2, random_state=0, stratify=data.train.y
    )
    sources = data.train.sources
    return sorted(sources[train_index].tolist()), sorted(sources[test_index].tolist())


def test_the_sheet_is_the_third_part_of_a_tile_key() -> None:
    assert sheet_of("tiles/digits/scan-0a1b2c3d4e5f/r000-c000.png") == "digits/scan-0a1b2c3d4e5f"
    assert sheet_of("mnist:train#12") == sheet_of("input.csv#row2") == ""
    assert sheet_of("tiles/loose.png") == ""


@pytest.mark.parametrize("labels", [mixed, one_class_per_sheet], ids=["mixed", "one-class"])
def test_rows_from_six_sheets_are_held_out_by_whole_sheets(
    digits: Glyphs, labels: Labeller
) -> None:
    # GIVEN 60 rows from 6 sheets in 2 classes
    data = as_data(sheet_rows(digits, 6, labels=labels))
    # WHEN the held-out rows are chosen
    split = held_out(data, test_size=0.2, seed=0, search=False)
    # THEN no sheet is on both sides, every class is in both, and the split says so
    assert split.method == BY_SHEET and split.warnings == ()
    assert sheets_in(split.train) and sheets_in(split.test)
    assert sheets_in(split.train).isdisjoint(sheets_in(split.test))
    assert set(split.train.y.tolist()) == set(split.test.y.tolist()) == {"0", "1"}
    assert len(split.train) + len(split.test) == 6 * PER_SHEET
    assert split.description.startswith("by sheet")
    described = split.as_dict()
    assert described["sheets_in_both"] == 0
    assert described["train_sheets"] + described["test_sheets"] == 6


def test_rows_without_a_sheet_merged_in_are_split_by_row_beside_whole_sheets(
    digits: Glyphs,
) -> None:
    rows = sheet_rows(digits, 6)
    csv_rows = [
        Row(pixels=row.pixels, label=row.label, source_key=f"extra.csv#row{i + 2}", source_etag="")
        for i, row in enumerate(sheet_rows(digits, 2, dataset="other"))
    ]
    split = held_out(
        as_data(rows + csv_rows, ["dataset:digits", "csv:extra.csv"]),
        test_size=0.2,
        seed=0,
        search=False,
    )
    assert split.method == BY_SHEET
    assert sheets_in(split.train).isdisjoint(sheets_in(split.test))
    assert "20 rows without a sheet" in split.description


def test_rows_from_one_sheet_fall_back_to_the_row_split_with_a_warning(digits: Glyphs) -> None:
    # GIVEN 30 rows, all from one sheet
    data = as_data(sheet_rows(digits, 1, per_sheet=30))
    split = held_out(data, test_size=0.2, seed=0, search=False)
    # THEN today's split, row for row, with a warning naming the sheet
    assert split.method == BY_ROW
    assert (sorted(split.train.sources.tolist()), sorted(split.test.sources.tolist())) == (
        row_split_of(data)
    )
    (warning,) = split.warnings
    assert "one sheet (digits/sheet0-0123456789ab)" in warning and "split by row" in warning
    assert split.as_dict()["sheets_in_both"] == 1


def test_a_class_on_one_sheet_only_falls_back_with_a_warning_naming_it(digits: Glyphs) -> None:
    # GIVEN six sheets, and a class '7' written on the first sheet only
    rows = sheet_rows(digits, 6)
    sevens = np.flatnonzero(digits.labels == "7")[:6].tolist()
    rows += [
        Row(
            pixels=padded(digits.ink[index]),
            label="7",
            source_key=f"tiles/digits/sheet0-0123456789ab/r{100 + i:03d}-c000.png",
            source_etag="e",
        )
        for i, index in enumerate(sevens)
    ]
    data = as_data(rows)
    split = held_out(data, test_size=0.2, seed=0, search=False)
    assert split.method == BY_ROW
    (warning,) = split.warnings
    assert "'7' (only on digits/sheet0-0123456789ab)" in warning
    assert set(split.train.y.tolist()) == {"0", "1", "7"}
    assert (sorted(split.train.sources.tolist()), sorted(split.test.sources.tolist())) == (
        row_split_of(data)
    )


def test_mnist_rows_keep_mnists_own_test_split() -> None:
    rng = np.random.default_rng(0)

    def mnist(split: str, count: int) -> Dataset:
        return Dataset(
            x=rng.integers(0, 255, (count, 784), dtype=np.uint8),
            y=np.array([str(i % 10) for i in range(count)]),
            sources=np.array([f"mnist:{split}#{i}" for i in range(count)]),
            fingerprint=split,
        )

    data = TrainingData(train=mnist("train", 100), test=mnist("test", 30), sources=["mnist:train"])
    split = held_out(data, test_size=0.2, seed=0, search=False)
    assert split.train is data.train and split.test is data.test
    assert split.method == MNIST_TEST and split.warnings == ()
    assert "MNIST's own test split" in split.description


def test_csv_rows_keep_the_row_split_and_say_they_have_no_sheets(digits: Glyphs) -> None:
    rows = [
        Row(pixels=row.pixels, label=row.label, source_key=f"in.csv#row{i + 2}", source_etag="")
        for i, row in enumerate(sheet_rows(digits, 3))
    ]
    data = as_data(rows, ["csv:in.csv"])
    split = held_out(data, test_size=0.2, seed=0, search=False)
    assert split.method == BY_ROW and split.warnings == ()
    assert split.description == "by row (stratified): CSV rows have no sheets"
    assert (sorted(split.train.sources.tolist()), sorted(split.test.sources.tolist())) == (
        row_split_of(data)
    )


def card_for(digits: Glyphs, *, params: dict[str, Any] | None = None) -> dict[str, Any]:
    """The model card of a pretend model that misreads every other row of the first held-out
    sheet (of two: one sheet per class)."""
    data = as_data(sheet_rows(digits, 6, labels=one_class_per_sheet))
    split = held_out(data, test_size=0.2, seed=0, search=False)
    first = sorted(sheets_in(split.test))[0]
    on_first = np.array([sheet == first for sheet in sheet_ids(split.test.sources)])
    wrong = on_first & (np.arange(len(split.test)) % 2 == 0)
    predicted = np.where(wrong, np.where(split.test.y == "0", "1", "0"), split.test.y)
    metrics = {
        "model": "digits",
        "version": "20260101T000000Z-ffffffff0000",
        "run_id": "run",
        "family": "mlp",
        "classes": ["0", "1"],
        "params": params or {"hidden_layer_sizes": [64]},
        "test_accuracy": float((predicted == split.test.y).mean()),
        "evaluation": {"test_fingerprint": "t" * 16},
    }
    return card.model_card(card.run_context(data, split), metrics, split.test, predicted)


def test_the_model_card_scores_classes_and_sheets_and_names_its_lineage(digits: Glyphs) -> None:
    model_card = card_for(digits)
    data, split, evaluation, lineage = (
        model_card[k] for k in ("data", "split", "evaluation", "lineage")
    )
    assert data["rows"] == 60 and data["sheets"] == 6 and data["classes"] == ["0", "1"]
    assert data["sources"] == ["dataset:digits"] and data["datasets"] == ["digits"]
    assert split["method"] == BY_SHEET and split["description"].startswith("by sheet")
    assert split["test_sheets"] == 2 and split["sheets_in_both"] == 0
    per_class = sorted(evaluation["per_class"], key=lambda row: row["accuracy"])
    assert [row["accuracy"] for row in per_class] == [0.5, 1.0]
    assert {row["label"] for row in per_class} == {"0", "1"}
    assert sum(row["rows"] for row in evaluation["per_sheet"]) == evaluation["test_rows"]
    worst = evaluation["worst_sheets"][0]
    assert worst["accuracy"] == 0.5 and worst["correct"] == PER_SHEET // 2
    assert lineage["data_fingerprint"] == "f" * 16 and lineage["test_fingerprint"] == "t" * 16
    assert lineage["family"] == "mlp" and lineage["params"] == {"hidden_layer_sizes": [64]}
    assert lineage["base_model"] is None and lineage["code_version"]
    limits = model_card["limits"]
    assert any("Tested on 2 held-out sheet(s) from 1 dataset(s)" in limit for limit in limits)
    assert any(limit.startswith("Accuracy varies by sheet: from 50.0%") for limit in limits)
    markdown = card.card_markdown(model_card)
    for heading in ("## Data", "## How it was split", "### Per class", "### Per sheet"):
        assert heading in markdown
    assert "### Worst sheets (up to 5)" in markdown and "## Known limits" in markdown
    assert "Data fingerprint: ffffffffffffffff" in markdown


def test_a_transfer_models_card_names_its_base(digits: Glyphs) -> None:
    params = {"base_model": "base", "base_version": "20260101T000000Z-baseba5e"}
    lineage = card_for(digits, params=params)["lineage"]
    assert lineage["base_model"] == {"model": "base", "version": "20260101T000000Z-baseba5e"}


def test_worst_sheets_are_the_five_least_accurate() -> None:
    sheets = [
        {"sheet": f"d/s{i}", "rows": 10, "correct": c, "accuracy": c / 10}
        for i, c in enumerate([9, 3, 10, 5, 3, 8, 7])
    ]
    assert [row["sheet"] for row in card.worst(sheets)] == ["d/s1", "d/s4", "d/s3", "d/s6", "d/s5"]


def test_the_code_version_comes_from_git_else_the_environment_else_unknown(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    found = card.code_version()
    if found["source"] == "git":
        assert len(found["code_version"]) == 40
    monkeypatch.setattr(card, "_git", lambda *args: None)
    monkeypatch.setenv(card.CODE_VERSION_ENV, "v1.2.3")
    assert card.code_version()["code_version"] == "v1.2.3"
    monkeypatch.delenv(card.CODE_VERSION_ENV)
    assert card.code_version() == {
        "code_version": "unknown",
        "source": "unknown",
        "uncommitted_changes": None,
    }


def fill_sheets(store: ObjectStore, rows: list[Row]) -> None:
    for row in rows:
        write_row(store, row)


def test_a_run_on_six_sheets_is_judged_on_unseen_sheets_and_carries_a_model_card(
    store: ObjectStore, digits: Glyphs
) -> None:
    # GIVEN rows from six sheets WHEN a model is trained on them
    fill_sheets(store, sheet_rows(digits, 6))
    code, result = train("--dataset", "digits", "--run-id", "grouped", "--epochs", "20")
    assert code == 0, result
    # THEN the result, the status and the report say it was split by sheet, without warnings
    assert result["split"]["method"] == BY_SHEET and result["warnings"] == []
    recorded = status(store, "grouped")
    assert recorded["split"] == BY_SHEET and recorded["warnings"] == []
    version = result["version"]
    prefix = f"models/digits/{version}/"
    report = store.get(prefix + "report.html").body.decode()
    assert "by sheet (stratified group split)" in report and "Model card" in report
    # AND the model card beside the report names what it was tested on and where it came from
    markdown = store.get(prefix + "model_card.md").body.decode()
    assert "Method: by_sheet — by sheet" in markdown
    metrics = ModelRegistry(store, "digits").metrics(version)
    assert metrics is not None
    model_card = metrics["model_card"]
    assert model_card["lineage"]["data_fingerprint"] == metrics["evaluation"]["fingerprint"]
    assert f"Data fingerprint: {metrics['evaluation']['fingerprint']}" in markdown
    tested = {row["sheet"] for row in model_card["evaluation"]["per_sheet"]}
    embeddings = store.get(prefix + "embeddings.npz").body
    with np.load(io.BytesIO(embeddings), allow_pickle=False) as archive:
        trained_on = {sheet_of(str(source)) for source in archive["sources"].tolist()}
    assert tested and tested.isdisjoint(trained_on)


def test_a_run_on_one_sheet_warns_in_its_result_status_report_and_card(
    store: ObjectStore, digits: Glyphs
) -> None:
    fill_sheets(store, sheet_rows(digits, 1, per_sheet=30))
    code, result = train("--dataset", "digits", "--run-id", "single", "--epochs", "20")
    assert code == 0, result
    assert result["split"]["method"] == BY_ROW
    (warning,) = result["warnings"]
    assert "one sheet" in warning
    assert status(store, "single")["warnings"] == [warning]
    prefix = f"models/digits/{result['version']}/"
    assert "<b>Warning:</b>" in store.get(prefix + "report.html").body.decode()
    assert "**Warning:**" in store.get(prefix + "model_card.md").body.decode()
