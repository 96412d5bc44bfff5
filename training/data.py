"""Where the training job's rows come from: dataset shards, both CSV layouts, MNIST idx files.

Every source ends as a `tessera.dataset.Dataset` (uint8 MNIST-style rows, string labels, the
key each row came from, a fingerprint of the bytes read), and every way a source can be
unusable ends as a `TrainingError` whose code names the problem.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import shutil
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from tessera.config import VECTOR_LENGTH
from tessera.corrections import apply_corrections, current_corrections
from tessera.dataset import Dataset, DatasetError, load_dataset, merge
from tessera.imaging.normalize import normalize_tile, to_vector
from tessera.storage import ObjectStore
from training.errors import TrainingError
from training.progress import log

# One CSV field can hold a whole 784-value vector (the reference layout); the stdlib's default
# field limit (128 KiB) is enough, but a hostile file should fail on our checks, not on csv's.
csv.field_size_limit(1 << 24)

# sha256 of the *decompressed* idx payloads: mirrors recompress the .gz files, the content is
# what must not change.
MNIST_FILES = {
    "train-images-idx3-ubyte.gz": (
        "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"
    ),
    "train-labels-idx1-ubyte.gz": (
        "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"
    ),
    "t10k-images-idx3-ubyte.gz": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte.gz": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
MNIST_MIRROR = "https://ossci-datasets.s3.amazonaws.com/mnist/"


@dataclass(frozen=True)
class TrainingData:
    """What a run trains on; `test` is set when the source has its own held-out split (MNIST)."""

    train: Dataset
    test: Dataset | None
    sources: list[str]


def from_bucket(store: ObjectStore, names: list[str]) -> Dataset:
    """Each dataset's rows with people's corrections on top (relabelled or excluded tiles)."""
    datasets = []
    for name in names:
        try:
            rows = load_dataset(store, name)
        except DatasetError as error:
            message = str(error)
            code = "corrupt_shard" if message.startswith("corrupt shard") else "empty_dataset"
            raise TrainingError(code, message) from None
        layer = current_corrections(store, name, keep_snapshot=True)
        corrected, counts = apply_corrections(rows, layer)
        if any(counts.values()):
            log(
                f"dataset {name}: corrections applied, {counts['relabelled']} relabelled, "
                f"{counts['excluded']} excluded"
            )
        if not len(corrected):
            raise TrainingError("empty_dataset", f"every row of dataset {name!r} is excluded")
        datasets.append(corrected)
    return merge(datasets)


def from_csv(path: Path) -> Dataset:
    """Either CSV layout, told apart by the header.

    `image_vector,label`: the reference project's sheets, one quoted string of 784 values per
    row, raw dark-on-light and uncentred, so each is normalized like a tile from a sheet.
    `label,pixel0,...,pixel783`: the common layout, already MNIST-style (ink bright, centred).
    """
    try:
        data = path.read_bytes()
    except OSError as error:
        raise TrainingError("unreadable_source", f"cannot read {path}: {error}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise TrainingError("unparseable_csv", f"{path} is not UTF-8 text") from None
    reader = csv.reader(io.StringIO(text))
    header = [field.strip().lower() for field in next(reader, [])]
    if header[:2] == ["image_vector", "label"]:
        rows, labels = _reference_rows(reader, path)
    elif header and header[0] == "label" and len(header) == VECTOR_LENGTH + 1:
        rows, labels = _pixel_rows(reader, path)
    else:
        shown = ",".join(header[:4]) + (",..." if len(header) > 4 else "")
        raise TrainingError(
            "unknown_csv_layout",
            f"{path}: header {shown!r} is neither 'image_vector,label' nor "
            f"'label,pixel0,...,pixel{VECTOR_LENGTH - 1}'",
        )
    if not rows:
        raise TrainingError("empty_dataset", f"{path} has a header but no rows")
    return Dataset(
        x=np.stack(rows),
        y=np.array(labels),
        sources=np.array([f"{path.name}#row{line}" for line in range(2, len(rows) + 2)]),
        fingerprint=hashlib.sha256(data).hexdigest()[:16],
    )


def _parse_values(values: list[str], path: Path, line: int) -> NDArray[np.float64]:
    if len(values) != VECTOR_LENGTH:
        raise TrainingError(
            "wrong_vector_length",
            f"{path} line {line}: {len(values)} values, expected {VECTOR_LENGTH}",
        )
    try:
        vector = np.array([float(value) for value in values], dtype=np.float64)
    except ValueError:
        bad = next(v for v in values if not _is_number(v))
        raise TrainingError(
            "unparseable_row", f"{path} line {line}: {bad.strip()!r} is not a number"
        ) from None
    if not np.isfinite(vector).all():
        raise TrainingError("not_a_number", f"{path} line {line}: NaN or infinite pixel values")
    if vector.min() < 0 or vector.max() > 255:
        raise TrainingError(
            "pixel_out_of_range", f"{path} line {line}: pixel values must be within 0..255"
        )
    return vector


def _is_number(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


def _label(value: str, path: Path, line: int) -> str:
    label = value.strip()
    if not label:
        raise TrainingError("unparseable_row", f"{path} line {line}: empty label")
    return label


def _reference_rows(
    reader: Iterator[list[str]], path: Path
) -> tuple[list[NDArray[np.uint8]], list[str]]:
    rows, labels = [], []
    for line, record in enumerate(reader, start=2):
        if not record:
            continue
        if len(record) != 2:
            raise TrainingError(
                "unparseable_row",
                f"{path} line {line}: {len(record)} fields, expected a quoted vector and a label",
            )
        vector = _parse_values(record[0].split(","), path, line)
        tile = (vector / 255.0).reshape(28, 28).astype(np.float32)
        normalized = normalize_tile(tile)
        if normalized is None:
            raise TrainingError("blank_image", f"{path} line {line}: the image holds no ink")
        rows.append(to_vector(normalized))
        labels.append(_label(record[1], path, line))
    return rows, labels


def _pixel_rows(
    reader: Iterator[list[str]], path: Path
) -> tuple[list[NDArray[np.uint8]], list[str]]:
    rows, labels = [], []
    for line, record in enumerate(reader, start=2):
        if not record:
            continue
        labels.append(_label(record[0], path, line))
        rows.append(np.rint(_parse_values(record[1:], path, line)).astype(np.uint8))
    return rows, labels


def read_idx(path: Path) -> NDArray[np.uint8]:
    """An MNIST idx file (gzipped or not) as an array."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        data = handle.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte idx file")
    dims = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims)
    if body.size != int(np.prod(shape)):
        raise ValueError(f"{path} holds {body.size} bytes, its header says {shape}")
    return body.reshape(shape)


def from_mnist(directory: Path, *, split: str, verify: bool = True) -> Dataset:
    prefix = "train" if split == "train" else "t10k"
    paths = [
        directory / f"{prefix}-{kind}" for kind in ("images-idx3-ubyte.gz", "labels-idx1-ubyte.gz")
    ]
    digest = hashlib.sha256()
    for path in paths:
        if not path.exists():
            raise TrainingError("missing_source", f"no MNIST file {path}")
        if verify:
            verify_mnist_file(path)
        digest.update(path.name.encode())
    try:
        images = read_idx(paths[0])
        labels = read_idx(paths[1])
    except (ValueError, OSError, EOFError) as error:
        raise TrainingError("corrupt_source", f"MNIST {split}: {error}") from None
    if images.ndim != 3 or images.shape[1:] != (28, 28) or len(images) != len(labels):
        raise TrainingError(
            "corrupt_source", f"MNIST {split}: images {images.shape}, labels {labels.shape}"
        )
    digest.update(images.tobytes())
    digest.update(labels.tobytes())
    return Dataset(
        x=images.reshape(len(images), VECTOR_LENGTH),
        y=labels.astype(str),
        sources=np.array([f"mnist:{split}#{index}" for index in range(len(labels))]),
        fingerprint=digest.hexdigest()[:16],
    )


def verify_mnist_file(path: Path) -> None:
    expected = MNIST_FILES.get(path.name)
    if expected is None:
        return
    try:
        with gzip.open(path, "rb") as handle:
            actual = hashlib.sha256(handle.read()).hexdigest()
    except (OSError, EOFError) as error:
        raise TrainingError("corrupt_source", f"{path}: {error}") from None
    if actual != expected:
        raise TrainingError(
            "checksum_mismatch",
            f"{path}: content sha256 {actual[:12]}..., expected {expected[:12]}...",
        )


def download_mnist(directory: Path, *, mirror: str = MNIST_MIRROR) -> Path:
    """Fetch the four MNIST files into `directory` unless a verified copy is already there."""
    directory.mkdir(parents=True, exist_ok=True)
    for name in MNIST_FILES:
        target = directory / name
        if target.exists():
            try:
                verify_mnist_file(target)
                continue
            except TrainingError:
                target.unlink()
        print(f"downloading {mirror}{name}", file=sys.stderr, flush=True)
        partial = target.with_suffix(".part")
        with (
            urllib.request.urlopen(mirror + name, timeout=60) as response,
            partial.open("wb") as out,
        ):
            shutil.copyfileobj(response, out)
        partial.rename(target)
        verify_mnist_file(target)
    return directory


def load_training_data(
    *,
    store: ObjectStore | None,
    datasets: list[str],
    csv_paths: list[Path],
    mnist_dir: Path | None,
    mnist_limit: int | None = None,
) -> TrainingData:
    parts: list[Dataset] = []
    sources: list[str] = []
    test: Dataset | None = None
    if datasets:
        if store is None:
            raise TrainingError("no_bucket", "datasets live in a bucket: set TESSERA_BUCKET")
        parts.append(from_bucket(store, datasets))
        sources += [f"dataset:{name}" for name in datasets]
    for path in csv_paths:
        parts.append(from_csv(path))
        sources.append(f"csv:{path.name}")
    if mnist_dir is not None:
        train = from_mnist(mnist_dir, split="train")
        if mnist_limit:
            train = subset(train, mnist_limit, seed=0)
        parts.append(train)
        sources.append("mnist:train")
        # MNIST's own test split is the held-out set only when MNIST is all there is, so the
        # evaluation still covers every class of a merged dataset.
        if len(parts) == 1:
            test = from_mnist(mnist_dir, split="test")
    if not parts:
        raise TrainingError("no_data_source", "pass --dataset, --csv or --mnist")
    return TrainingData(train=merge(parts), test=test, sources=sources)


def subset(dataset: Dataset, count: int, *, seed: int) -> Dataset:
    """A stratified-enough random subset (a permutation prefix), fingerprinted as such."""
    if count >= len(dataset):
        return dataset
    order = np.sort(np.random.default_rng(seed).permutation(len(dataset))[:count])
    return Dataset(
        x=dataset.x[order],
        y=dataset.y[order],
        sources=dataset.sources[order],
        fingerprint=hashlib.sha256(f"{dataset.fingerprint}:{count}:{seed}".encode()).hexdigest()[
            :16
        ],
    )
