"""The embedding index and POST /similar: nearest training examples by cosine similarity."""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from tessera.imaging.decode import encode_png
from tessera.registry import EMBEDDINGS_FILE, ModelRegistry
from tessera.serving.similarity import EmbeddingIndex, IndexUnusable
from tests.serving.conftest import (
    MODEL,
    NEXT_VERSION,
    VERSION,
    Call,
    Served,
    put_version,
    source_key,
)
from tests.serving.model_builder import mlp_to_onnx


def _brute_force(index: EmbeddingIndex, query: np.ndarray, k: int) -> list[int]:
    scores = [
        float(np.dot(row, query) / (np.linalg.norm(row) * np.linalg.norm(query)))
        for row in index.embeddings
    ]
    return sorted(range(len(scores)), key=lambda i: (-scores[i], i))[:k]


@settings(max_examples=60, deadline=None)
@given(
    matrix=arrays(
        np.float32,
        st.tuples(st.integers(1, 40), st.integers(1, 8)),
        elements=st.floats(-1, 1, width=32),
    ),
    k=st.integers(1, 50),
    data=st.data(),
)
def test_nearest_matches_a_brute_force_cosine_ranking(
    matrix: np.ndarray, k: int, data: st.DataObject
) -> None:
    # Ties are broken arbitrarily; keep rows distinct and non-zero so the ranking is unique.
    matrix = matrix + np.arange(matrix.shape[0], dtype=np.float32)[:, None] * 1e-3 + 2.0
    index = EmbeddingIndex.build(
        matrix, [str(i) for i in range(len(matrix))], [f"s{i}" for i in range(len(matrix))]
    )
    query = data.draw(arrays(np.float32, matrix.shape[1], elements=st.floats(0.125, 1, width=32)))
    (found,) = index.nearest(query, k=k)
    scores = [n.score for n in found]
    assert len(found) == min(k, len(matrix))
    assert scores == sorted(scores, reverse=True)
    expected = _brute_force(index, query, k)
    expected_scores = [
        float(np.dot(index.embeddings[i], query / np.linalg.norm(query))) for i in expected
    ]
    assert scores == pytest.approx(expected_scores, abs=1e-5)
    assert all(n.source == f"s{n.index}" and n.label == str(n.index) for n in found)


def test_a_row_is_its_own_nearest_neighbour_with_score_one() -> None:
    rng = np.random.default_rng(0)
    matrix = rng.normal(size=(1000, 16)).astype(np.float32)
    index = EmbeddingIndex.build(matrix, ["x"] * 1000, [f"k{i}" for i in range(1000)])
    results = index.nearest(matrix[[3, 500, 999]], k=5)
    assert [r[0].source for r in results] == ["k3", "k500", "k999"]
    assert [r[0].score for r in results] == pytest.approx([1.0, 1.0, 1.0], abs=1e-5)


def _npz(**arrays_: object) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays_)  # type: ignore[arg-type]
    return buffer.getvalue()


@pytest.mark.parametrize(
    "data",
    [
        b"not a zip",
        _npz(embeddings=np.ones((3, 2), np.float32), labels=np.array(["a", "b", "c"])),
        _npz(embeddings=np.ones((3, 2)), labels=np.array(["a"]), sources=np.array(["s"] * 3)),
        _npz(
            embeddings=np.full((2, 2), np.nan),
            labels=np.array(["a"] * 2),
            sources=np.array(["s"] * 2),
        ),
        # Object arrays need pickle, which an index file must never be allowed to run.
        _npz(
            embeddings=np.ones((1, 2)),
            labels=np.array([{"a": 1}], dtype=object),
            sources=np.array(["s"]),
        ),
    ],
    ids=["not-npz", "no-sources", "length-mismatch", "nan", "pickled-objects"],
)
def test_an_unusable_index_file_is_refused(data: bytes) -> None:
    with pytest.raises(IndexUnusable):
        EmbeddingIndex.from_npz(data)


def _image(served: Served, index: int) -> str:
    return base64.b64encode(encode_png(served.trained.tiles[index])).decode()


def test_similar_finds_the_training_tile_itself_first(served: Served, call: Call) -> None:
    # GIVEN the champion's embeddings of its own training rows, each with its tile key
    # WHEN a training tile is the query
    reply = call("POST", "/similar", json_body={"image": _image(served, 42), "k": 5})

    # THEN its own row is the nearest, with cosine ~1, its label and its source key
    assert reply.status == 200, reply.body
    assert (reply.body["model"], reply.body["version"], reply.body["k"]) == (MODEL, VERSION, 5)
    neighbours = reply.body["neighbours"]
    assert len(neighbours) == 5
    assert neighbours[0]["source"] == source_key(42)
    assert neighbours[0]["label"] == served.trained.labels[42]
    assert neighbours[0]["score"] == pytest.approx(1.0, abs=1e-3)
    scores = [n["score"] for n in neighbours]
    assert scores == sorted(scores, reverse=True)
    assert reply.body["label"] == served.trained.mlp.predict(served.trained.x[42:43])[0]


def test_similar_answers_each_instance(served: Served, call: Call) -> None:
    body = {"instances": [{"image": _image(served, i)} for i in (1, 2, 3)], "k": 2}
    reply = call("POST", "/similar", json_body=body)
    assert reply.status == 200
    assert [r["neighbours"][0]["source"] for r in reply.body["results"]] == [
        source_key(i) for i in (1, 2, 3)
    ]


@dataclass
class _CountingStore:
    """Counts GETs of the index file through the real store."""

    reads: int = 0


def test_the_index_is_read_once_per_version(served: Served, call: Call) -> None:
    original = served.store.client.get_object
    counter = _CountingStore()

    def counting_get(**kwargs: object) -> object:
        if str(kwargs.get("Key", "")).endswith(EMBEDDINGS_FILE):
            counter.reads += 1
        return original(**kwargs)

    served.store.client.get_object = counting_get
    try:
        for i in range(5):
            assert call("POST", "/similar", json_body={"image": _image(served, i)}).status == 200
    finally:
        served.store.client.get_object = original
    assert counter.reads == 1


def test_a_model_without_an_embedding_output_is_a_404(served: Served, call: Call) -> None:
    plain = mlp_to_onnx(served.trained.mlp, served.trained.classes, with_embedding=False)
    put_version(served.registry, NEXT_VERSION, served.trained, model=plain)
    reply = call("POST", "/similar", json_body={"pixels": [0] * 784, "version": NEXT_VERSION})
    assert reply.status == 404
    assert reply.body["error"]["code"] == "similarity_unavailable"
    assert "embedding" in reply.body["error"]["message"]
    # /predict keeps working with that model
    assert (
        call("POST", "/predict", json_body={"pixels": [0] * 784, "version": NEXT_VERSION}).status
        == 200
    )


def test_a_model_without_embeddings_npz_is_a_404(served: Served, call: Call) -> None:
    put_version(served.registry, NEXT_VERSION, served.trained, model=served.model, with_index=False)
    reply = call("POST", "/similar", json_body={"pixels": [0] * 784, "version": NEXT_VERSION})
    assert reply.status == 404
    assert EMBEDDINGS_FILE in reply.body["error"]["message"]


def test_an_index_of_the_wrong_width_is_a_404(served: Served, call: Call) -> None:
    registry: ModelRegistry = served.registry
    put_version(registry, NEXT_VERSION, served.trained, model=served.model, with_index=False)
    registry.put_artifact(
        NEXT_VERSION,
        EMBEDDINGS_FILE,
        _npz(
            embeddings=np.ones((2, 5), np.float32),
            labels=np.array(["a", "b"]),
            sources=np.array(["s", "t"]),
        ),
        "application/octet-stream",
    )
    reply = call("POST", "/similar", json_body={"pixels": [0] * 784, "version": NEXT_VERSION})
    assert reply.status == 404 and "dimension" in reply.body["error"]["message"]
