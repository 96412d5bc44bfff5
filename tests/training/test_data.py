"""Training data sources: both CSV layouts, MNIST idx files, bucket shards, and every bad input
ending in a TrainingError whose code names the problem."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from tessera.dataset import Row, write_row
from tessera.storage import ObjectStore
from training.data import from_bucket, from_csv, from_mnist, verify_mnist_file
from training.errors import TrainingError


def reference_csv(path: Path, rows: list[tuple[list[int], str]]) -> Path:
    lines = ["image_vector,label"]
    lines += ['"' + ",".join(str(v) for v in vector) + f'",{label}' for vector, label in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def dark_stroke_on_paper() -> list[int]:
    """A dark vertical bar in the top-left corner of a bright page: raw, uncentred."""
    image = np.full((28, 28), 250, dtype=int)
    image[2:14, 3:6] = 10
    return image.ravel().tolist()


def test_reference_csv_rows_are_normalized_like_tiles(tmp_path: Path) -> None:
    # GIVEN the reference project's layout with letters among the labels
    path = reference_csv(
        tmp_path / "sheet.csv", [(dark_stroke_on_paper(), "x"), (dark_stroke_on_paper(), "7")]
    )
    # WHEN it is read
    dataset = from_csv(path)
    # THEN ink is bright on black and centred (MNIST's form), labels stay strings
    assert dataset.y.tolist() == ["x", "7"]
    image = dataset.x[0].reshape(28, 28).astype(float)
    assert image[0, 0] == 0 and image.max() == 255
    rows, cols = np.nonzero(image)
    centre_row = (image.sum(axis=1) * np.arange(28)).sum() / image.sum()
    assert abs(centre_row - 13.5) < 1.5 and rows.min() >= 4 and cols.min() > 3
    assert dataset.sources.tolist() == ["sheet.csv#row2", "sheet.csv#row3"]
    assert len(dataset.fingerprint) == 16


def test_pixel_csv_is_read_as_is(tmp_path: Path) -> None:
    header = "label," + ",".join(f"pixel{i}" for i in range(784))
    row = "3," + ",".join(str(i % 256) for i in range(784))
    (tmp_path / "train.csv").write_text(f"{header}\n{row}\n")
    dataset = from_csv(tmp_path / "train.csv")
    assert dataset.y.tolist() == ["3"]
    assert dataset.x[0, :5].tolist() == [0, 1, 2, 3, 4]


@pytest.mark.parametrize(
    ("line", "code", "named"),
    [
        ('"' + ",".join(["0"] * 783) + '",1', "wrong_vector_length", "783 values"),
        ('"' + ",".join(["0"] * 783 + ["dark"]) + '",1', "unparseable_row", "'dark'"),
        ('"' + ",".join(["0"] * 783 + ["nan"]) + '",1', "not_a_number", "NaN"),
        ('"' + ",".join(["0"] * 783 + ["300"]) + '",1', "pixel_out_of_range", "0..255"),
        ('"' + ",".join(["0"] * 784) + '",1,extra', "unparseable_row", "3 fields"),
    ],
)
def test_bad_reference_rows_name_the_line_and_the_problem(
    tmp_path: Path, line: str, code: str, named: str
) -> None:
    good = '"' + ",".join(str(v) for v in dark_stroke_on_paper()) + '",1'
    (tmp_path / "bad.csv").write_text(f"image_vector,label\n{good}\n{line}\n")
    with pytest.raises(TrainingError) as raised:
        from_csv(tmp_path / "bad.csv")
    assert raised.value.code == code
    assert "line 3" in raised.value.message and named in raised.value.message


def test_unknown_header_and_empty_csv_are_refused(tmp_path: Path) -> None:
    (tmp_path / "odd.csv").write_text("a,b,c\n1,2,3\n")
    with pytest.raises(TrainingError, match="unknown_csv_layout"):
        from_csv(tmp_path / "odd.csv")
    (tmp_path / "empty.csv").write_text("image_vector,label\n")
    with pytest.raises(TrainingError, match="empty_dataset"):
        from_csv(tmp_path / "empty.csv")


def write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape
    )
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.astype(np.uint8).tobytes())


def test_mnist_idx_files_are_read_with_their_own_labels(tmp_path: Path) -> None:
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", np.arange(3 * 784).reshape(3, 28, 28) % 256)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.array([7, 2, 1]))
    dataset = from_mnist(tmp_path, split="test", verify=False)
    assert dataset.x.shape == (3, 784) and dataset.y.tolist() == ["7", "2", "1"]
    assert dataset.sources[1] == "mnist:test#1"


def test_a_tampered_mnist_file_fails_its_checksum(tmp_path: Path) -> None:
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.array([1, 2, 3]))
    with pytest.raises(TrainingError) as raised:
        verify_mnist_file(tmp_path / "train-labels-idx1-ubyte.gz")
    assert raised.value.code == "checksum_mismatch"


def test_bucket_problems_are_named(store: ObjectStore) -> None:
    with pytest.raises(TrainingError) as raised:
        from_bucket(store, ["nothing"])
    assert raised.value.code == "empty_dataset" and "'nothing'" in raised.value.message

    write_row(
        store,
        Row(
            pixels=np.zeros(784, np.uint8), label="1", source_key="tiles/d/s/a.png", source_etag="e"
        ),
    )
    store.put("datasets/d/rows/s/b.npz", b"not an npz archive")
    with pytest.raises(TrainingError) as raised:
        from_bucket(store, ["d"])
    assert (
        raised.value.code == "corrupt_shard" and "datasets/d/rows/s/b.npz" in raised.value.message
    )
