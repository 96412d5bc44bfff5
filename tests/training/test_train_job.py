"""The training job end to end on a moto bucket: artifacts, status record, embeddings for
/similar, promotion on the same evaluation set, and bad input that fails cleanly."""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tessera.dataset import Row, write_row
from tessera.registry import ModelRegistry
from tessera.storage import ObjectStore
from tessera_dev.samples import Glyphs
from tests.conftest import BUCKET
from training.candidates import check_parity
from training.train import main

ROWS = 300


def padded(ink: np.ndarray) -> np.ndarray:
    canvas = np.zeros((28, 28), np.float32)
    canvas[10:18, 10:18] = ink
    return np.rint(canvas.ravel() * 255).astype(np.uint8)


def fill(
    store: ObjectStore, digits: Glyphs, name: str, count: int = ROWS, labels: Any = None
) -> None:
    for index in range(count):
        label = str(digits.labels[index]) if labels is None else labels(index)
        write_row(
            store,
            Row(
                pixels=padded(digits.ink[index]),
                label=label,
                source_key=f"tiles/{name}/s/{index}.png",
                source_etag="e",
            ),
        )


def train(*argv: str) -> tuple[int, dict[str, Any]]:
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        code = main(["--bucket", BUCKET, *argv])
    return code, json.loads(output.getvalue().strip().splitlines()[-1])


def status(store: ObjectStore, run_id: str) -> dict[str, Any]:
    document = store.get_json(f"runs/{run_id}/status.json")
    assert isinstance(document, dict)
    return document


@pytest.fixture
def trained(store: ObjectStore, digits: Glyphs) -> Iterator[dict[str, Any]]:
    fill(store, digits, "digits")
    code, result = train("--dataset", "digits", "--run-id", "first", "--epochs", "60")
    assert code == 0, result
    yield result


def test_a_run_writes_every_artifact_and_promotes_the_first_model(
    store: ObjectStore, trained: dict[str, Any]
) -> None:
    registry = ModelRegistry(store, "digits")
    version = trained["version"]
    assert trained["status"] == "succeeded" and trained["promoted"] is True
    assert trained["test_accuracy"] > 0.8 and trained["parity"]["passed"] is True
    files = {item.key.rsplit("/", 1)[1] for item in store.list(f"models/digits/{version}/")}
    assert files == {
        "model.onnx",
        "metrics.json",
        "report.html",
        "model_card.md",
        "config.json",
        "embeddings.npz",
        "confusion.png",
        "curves.png",
        "misclassified.png",
        "review.json",
    }
    assert registry.champion()["version"] == version  # type: ignore[index]
    assert (
        status(store, "first")["status"] == "succeeded"
        and status(store, "first")["version"] == version
    )

    metrics = registry.metrics(version)
    assert metrics is not None
    per_class = {row["label"]: row for row in metrics["evaluation_details"]["per_class"]}
    assert set(per_class) == {str(i) for i in range(10)}
    assert sum(row["support"] for row in per_class.values()) == metrics["test_rows"] == ROWS // 5
    assert (
        len(metrics["history"]["loss"])
        == len(metrics["history"]["val_accuracy"])
        == metrics["epochs_run"]
    )
    config = store.get_json(f"models/digits/{version}/config.json")
    assert config is not None
    assert config["data"]["fingerprint"] == metrics["evaluation"]["fingerprint"]
    report = store.get(f"models/digits/{version}/report.html").body.decode()
    assert report.count("data:image/png;base64,") == 3 and "precision" in report
    # One sheet only ("s"): split by row, and the report and the status say why.
    assert metrics["split"]["method"] == "by_row" and "one sheet" in report
    assert status(store, "first")["warnings"] == metrics["split"]["warnings"] != []


def test_embeddings_npz_holds_the_training_rows_for_similarity(
    store: ObjectStore, trained: dict[str, Any]
) -> None:
    data = store.get(f"models/digits/{trained['version']}/embeddings.npz").body
    with np.load(io.BytesIO(data), allow_pickle=False) as archive:
        embeddings, labels, sources = archive["embeddings"], archive["labels"], archive["sources"]
    train_rows = trained["train_rows"]
    assert embeddings.shape == (train_rows, 300) and embeddings.dtype == np.float32
    assert np.allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)
    assert labels.shape == sources.shape == (train_rows,)
    assert all(source.startswith("tiles/digits/s/") for source in sources.tolist())


def test_a_worse_model_is_registered_but_not_promoted(
    store: ObjectStore, trained: dict[str, Any]
) -> None:
    # GIVEN a champion WHEN a much weaker model (one epoch) is trained on the same data
    code, result = train("--dataset", "digits", "--epochs", "1", "--run-id", "weak")
    # THEN it is a version, measured against the champion on its own test rows, and not promoted
    registry = ModelRegistry(store, "digits")
    assert code == 0 and result["promoted"] is False
    assert result["champion_accuracy_on_this_evaluation"] > result["test_accuracy"]
    assert registry.champion()["version"] == trained["version"]  # type: ignore[index]
    assert sorted(registry.versions()) == sorted([trained["version"], result["version"]])
    assert len(registry.history()) == 1


BAD_INPUTS = {
    "one_class": (lambda i: "7", []),
    "class_too_small": (lambda i: "rare" if i < 3 else str(i % 2), []),
    # Five rows pass the hold-out, but only four reach the search's five CV folds.
    "class_too_small_for_cv": (lambda i: "rare" if i < 5 else str(i % 2), ["--search", "halving"]),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_bucket_data_fails_cleanly_and_leaves_the_champion(
    store: ObjectStore, digits: Glyphs, case: str
) -> None:
    pointer = {"model": "bad", "version": "20200101T000000Z-abcdef12"}
    store.put_json("models/bad/champion.json", pointer)
    labels, extra = BAD_INPUTS[case]
    fill(store, digits, "bad", count=60, labels=labels)
    code = case.removesuffix("_for_cv")
    exit_code, result = train("--dataset", "bad", "--run-id", f"run-{code}", *extra)
    assert exit_code == 1
    assert result["status"] == "failed" and result["code"] == code
    recorded = status(store, f"run-{code}")
    assert recorded["status"] == "failed" and recorded["error"]["code"] == code
    assert store.get_json("models/bad/champion.json") == pointer
    assert not list(store.list("models/bad/2"))


def test_an_empty_dataset_and_a_corrupt_shard_fail_with_their_names(
    store: ObjectStore, digits: Glyphs
) -> None:
    exit_code, result = train("--dataset", "nothing", "--run-id", "empty")
    assert exit_code == 1 and result["code"] == "empty_dataset"
    fill(store, digits, "broken", count=20)
    store.put("datasets/broken/rows/s/zz.npz", b"\x00garbage")
    exit_code, result = train("--dataset", "broken", "--run-id", "corrupt")
    assert exit_code == 1 and result["code"] == "corrupt_shard" and "zz.npz" in result["error"]
    assert status(store, "corrupt")["error"]["code"] == "corrupt_shard"


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ("image_vector,label\n", "empty_dataset"),
        ('image_vector,label\n"1,2,3",x\n', "wrong_vector_length"),
        ('image_vector,label\n"' + ",".join(["nan"] * 784) + '",x\n', "not_a_number"),
        ("label,pixel0\n1,2\n", "unknown_csv_layout"),
    ],
)
def test_bad_csv_fails_the_run(store: ObjectStore, tmp_path: Path, body: str, code: str) -> None:
    (tmp_path / "input.csv").write_text(body)
    exit_code, result = train(
        "--csv", str(tmp_path / "input.csv"), "--model-name", "csv", "--run-id", "csv"
    )
    assert exit_code == 1 and result["code"] == code
    assert status(store, "csv")["status"] == "failed"
    assert store.get_json("models/csv/champion.json") is None


def test_parity_gate_fails_on_any_disagreement_or_drift() -> None:
    native = np.array([[0.6, 0.4], [0.2, 0.8]], np.float32)
    assert check_parity(native, native + 5e-5)["passed"] is True
    assert check_parity(native, native + 2e-4)["passed"] is False
    flipped = check_parity(native, native[:, ::-1])
    assert flipped["passed"] is False and flipped["argmax_disagreements"] == 2


@pytest.mark.slow
def test_family_all_registers_every_family_and_promotes_only_the_best(
    store: ObjectStore, digits: Glyphs
) -> None:
    fill(store, digits, "digits")
    code, result = train(
        "--dataset", "digits", "--family", "all", "--epochs", "2", "--run-id", "all"
    )
    assert code == 0, result
    families = {row["family"]: row for row in result["families"]}
    assert set(families) == {"mlp", "dense", "cnn", "cnn-strong"}
    assert [row["promoted"] for row in result["families"]] == [True, False, False, False]
    best = max(families.values(), key=lambda row: row["test_accuracy"])
    registry = ModelRegistry(store, "digits")
    assert registry.champion()["version"] == best["version"] == result["version"]  # type: ignore[index]
    assert len(registry.versions()) == 4


@pytest.mark.slow
def test_a_searched_mlp_reports_its_candidates(store: ObjectStore, digits: Glyphs) -> None:
    fill(store, digits, "digits")
    code, result = train("--dataset", "digits", "--search", "halving", "--epochs", "20")
    assert code == 0, result
    assert result["search"]["strategy"] == "halving" and result["search"]["fits"] % 5 == 0
    metrics = ModelRegistry(store, "digits").metrics(result["version"])
    assert metrics is not None
    table = metrics["search"]["table"]
    # Max_iter collapses under early stopping: 4 sizes x 3 activations x 4 alphas remain.
    assert len({(str(r["hidden_layer_sizes"]), r["activation"], r["alpha"]) for r in table}) == 48
    assert {k: v for k, v in result["params"].items() if k != "max_iter"} == {
        k: v for k, v in metrics["search"]["best_params"].items() if k != "max_iter"
    } | {"hidden_layer_sizes": list(metrics["search"]["best_params"]["hidden_layer_sizes"])}
    report = store.get(f"models/digits/{result['version']}/report.html").body.decode()
    assert "Search: halving" in report


class Killed(BaseException):
    """The process dying mid-write: not an Exception, so nothing in the job handles it."""


def test_a_job_killed_while_publishing_leaves_no_visible_version_and_the_champion(
    store: ObjectStore, trained: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a champion, and a second run that dies just before its model file is written,
    # every other artefact of its version already in the bucket
    registry = ModelRegistry(store, "digits")
    champion, versions = registry.champion(), registry.versions()
    real_put = ModelRegistry.put_artifact

    def dying(self: ModelRegistry, version: str, filename: str, *args: Any) -> str:
        if filename == "model.onnx":
            raise Killed
        return real_put(self, version, filename, *args)

    monkeypatch.setattr(ModelRegistry, "put_artifact", dying)
    with pytest.raises(Killed):
        train("--dataset", "digits", "--run-id", "killed", "--epochs", "5")
    monkeypatch.undo()
    # THEN its half-written folder is there but is no version: not listed, not servable
    written = {i.key.split("/")[2] for i in store.list("models/digits/")} - set(versions)
    assert any(v.startswith("2") for v in written)  # the metrics and report of the dead run
    assert registry.versions() == versions
    assert registry.champion() == champion
    assert status(store, "killed")["status"] == "running"  # the workflow records the end
    # AND the next run is whole again
    code, _ = train("--dataset", "digits", "--run-id", "after", "--epochs", "5")
    assert code == 0 and len(registry.versions()) == len(versions) + 1
