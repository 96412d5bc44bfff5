"""Sample sheets made at run time, so the demo and the tests need no download: the handwritten
digits bundled with scikit-learn, or MNIST idx files when a path to them is given."""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from tessera.config import Env
from training.data import read_idx

DEFAULT_DATA_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def data_dir() -> Path:
    """Reference data beside the checkout (`TESSERA_DATA_DIR` overrides)."""
    return Path(os.environ.get(Env.DATA_DIR, DEFAULT_DATA_DIR))


@dataclass(frozen=True)
class Glyphs:
    ink: NDArray[np.float32]  # (n, h, w), ink in [0, 1]
    labels: NDArray[np.str_]


def sklearn_digits() -> Glyphs:
    from sklearn.datasets import load_digits

    digits = load_digits()
    return Glyphs(ink=(digits.images / 16.0).astype(np.float32), labels=digits.target.astype(str))


def mnist(directory: Path, *, split: str = "train") -> Glyphs:
    prefix = "train" if split == "train" else "t10k"
    images = read_idx(directory / f"{prefix}-images-idx3-ubyte.gz")
    labels = read_idx(directory / f"{prefix}-labels-idx1-ubyte.gz")
    return Glyphs(ink=images.astype(np.float32) / 255.0, labels=labels.astype(str))


def render_sheet(ink: NDArray[np.float32], *, cols: int, cell: int = 32, margin: int = 3) -> bytes:
    """Glyphs laid out row by row as dark ink on white paper, one per cell, as PNG bytes."""
    count = ink.shape[0]
    rows = -(-count // cols)
    inner = cell - 2 * margin
    paper = np.ones((rows * cell, cols * cell), dtype=np.float32)
    for index in range(count):
        glyph = Image.fromarray(ink[index].astype(np.float32), mode="F").resize(
            (inner, inner), Image.Resampling.BILINEAR
        )
        r, c = divmod(index, cols)
        top, left = r * cell + margin, c * cell + margin
        paper[top : top + inner, left : left + inner] = 1.0 - np.clip(np.asarray(glyph), 0, 1)
    buffer = io.BytesIO()
    Image.fromarray(np.rint(paper * 255).astype(np.uint8), mode="L").save(buffer, format="PNG")
    return buffer.getvalue()
