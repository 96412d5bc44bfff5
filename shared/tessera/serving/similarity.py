"""The embedding index behind `POST /similar`: the nearest training examples by cosine similarity.

Training writes `embeddings.npz` beside each model: `embeddings` (n, D) float32 with
L2-normalized rows (the model's `embedding` output for every training row), `labels` (n,) and
`sources` (n,) tile keys. Serving loads it once per model version; a query is one matrix-vector
product and a partial sort, numpy only.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from tessera.registry import EMBEDDINGS_FILE


class IndexUnusable(Exception):
    """An embeddings file that does not hold what the contract promises."""


def l2_normalized(vectors: NDArray[np.float32]) -> NDArray[np.float32]:
    """Rows scaled to unit length; an all-zero row stays zero (it is similar to nothing)."""
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return (vectors / np.where(norms == 0, 1.0, norms)).astype(np.float32, copy=False)


def encode_index(
    embeddings: NDArray[np.float32],
    labels: Sequence[str] | NDArray[np.str_],
    sources: Sequence[str] | NDArray[np.str_],
) -> bytes:
    """The `embeddings.npz` written beside a model: its training rows' embeddings, L2-normalized,
    with each row's label and source tile key (what `EmbeddingIndex` reads)."""
    buffer = io.BytesIO()
    np.savez_compressed(
        buffer,
        embeddings=l2_normalized(np.asarray(embeddings, dtype=np.float32)),
        labels=np.asarray(labels, dtype=str),
        sources=np.asarray(sources, dtype=str),
    )
    return buffer.getvalue()


@dataclass(frozen=True)
class Neighbour:
    label: str
    score: float
    source: str
    index: int

    def as_dict(self) -> dict[str, Any]:
        return {"label": self.label, "score": self.score, "source": self.source}


@dataclass(frozen=True)
class EmbeddingIndex:
    embeddings: NDArray[np.float32]  # (n, D), unit rows, C-contiguous for a fast matmul
    labels: NDArray[np.str_]
    sources: NDArray[np.str_]

    @classmethod
    def build(
        cls,
        embeddings: NDArray[np.floating[Any]],
        labels: NDArray[np.str_] | list[str],
        sources: NDArray[np.str_] | list[str],
    ) -> EmbeddingIndex:
        matrix = np.asarray(embeddings, dtype=np.float32)
        label_array = np.asarray(labels, dtype=str)
        source_array = np.asarray(sources, dtype=str)
        if matrix.ndim != 2 or matrix.shape[0] == 0 or matrix.shape[1] == 0:
            raise IndexUnusable(
                f"'embeddings' must be a non-empty (n, D) matrix, got {matrix.shape}"
            )
        if label_array.shape != (matrix.shape[0],) or source_array.shape != (matrix.shape[0],):
            raise IndexUnusable(
                f"'labels' {label_array.shape} and 'sources' {source_array.shape} must have one "
                f"entry per embedding ({matrix.shape[0]})"
            )
        if not np.isfinite(matrix).all():
            raise IndexUnusable("'embeddings' holds NaN or infinity")
        # The contract says rows are already unit length; normalizing again costs one pass at
        # load time and keeps scores true cosines even if a writer forgot.
        return cls(
            embeddings=np.ascontiguousarray(l2_normalized(matrix)),
            labels=label_array,
            sources=source_array,
        )

    @classmethod
    def from_npz(cls, data: bytes) -> EmbeddingIndex:
        try:
            # allow_pickle=False: an index file must never be able to run code in the function.
            with np.load(io.BytesIO(data), allow_pickle=False) as archive:
                missing = {"embeddings", "labels", "sources"} - set(archive.files)
                if missing:
                    raise IndexUnusable(f"{EMBEDDINGS_FILE} lacks {sorted(missing)}")
                return cls.build(archive["embeddings"], archive["labels"], archive["sources"])
        except (ValueError, OSError, zipfile.BadZipFile) as error:
            raise IndexUnusable(f"{EMBEDDINGS_FILE} cannot be read: {error}") from None

    @property
    def dimension(self) -> int:
        return int(self.embeddings.shape[1])

    def __len__(self) -> int:
        return int(self.embeddings.shape[0])

    def nearest(self, queries: NDArray[np.float32], *, k: int) -> list[list[Neighbour]]:
        """The k most cosine-similar rows for each query row, best first."""
        queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        if queries.shape[1] != self.dimension:
            raise IndexUnusable(
                f"queries have dimension {queries.shape[1]}, the index has {self.dimension}"
            )
        k = max(1, min(k, len(self)))
        scores = l2_normalized(queries) @ self.embeddings.T  # (m, n)
        if k < len(self):
            # argpartition is O(n); only the k winners are then sorted.
            top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        else:
            top = np.broadcast_to(np.arange(len(self)), (scores.shape[0], len(self)))
        results = []
        for row, candidates in zip(scores, top, strict=True):
            order = candidates[np.argsort(-row[candidates], kind="stable")]
            results.append(
                [
                    Neighbour(
                        label=str(self.labels[i]),
                        score=float(row[i]),
                        source=str(self.sources[i]),
                        index=int(i),
                    )
                    for i in order
                ]
            )
        return results
