"""Fixtures for the inference tests: a small digits model with an `embedding` output, put in a
moto bucket as the champion with its embeddings.npz, and a way to call the real handler with
the proxy event API Gateway (or the local API) sends."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import numpy as np
import pytest

from functions.inference import handler as inference
from tessera.registry import EMBEDDINGS_FILE, ModelRegistry
from tessera.storage.s3 import S3ObjectStore
from tessera_dev.local.api import proxy_event
from tessera_dev.local.pump import lambda_context
from tests.conftest import moto_bucket
from tests.serving.model_builder import (
    TrainedDigits,
    embeddings_npz,
    hidden_layer,
    mlp_to_onnx,
    train_digits,
)

MODEL = "digits"
VERSION = "20250101T000000Z-aaaaaa01"
NEXT_VERSION = "20250102T000000Z-bbbbbb02"


def source_key(index: int) -> str:
    return f"tiles/digits/sheet0001/r{index // 10:03d}-c{index % 10:03d}.png"


@dataclass(frozen=True)
class Served:
    store: S3ObjectStore
    registry: ModelRegistry
    trained: TrainedDigits
    model: bytes


@pytest.fixture(scope="session")
def trained() -> TrainedDigits:
    return train_digits()


@pytest.fixture(scope="session")
def model_bytes(trained: TrainedDigits) -> bytes:
    return mlp_to_onnx(trained.mlp, trained.classes)


def put_version(
    registry: ModelRegistry,
    version: str,
    trained: TrainedDigits,
    *,
    model: bytes,
    with_index: bool = True,
    metrics: dict[str, Any] | None = None,
) -> None:
    registry.put_artifact(version, "model.onnx", model, "application/octet-stream")
    registry.put_artifact(
        version,
        "metrics.json",
        json.dumps(metrics or {"accuracy": 0.9}).encode(),
        "application/json",
    )
    if with_index:
        sources = [source_key(i) for i in range(len(trained.labels))]
        npz = embeddings_npz(hidden_layer(trained.mlp, trained.x), trained.labels, sources)
        registry.put_artifact(version, EMBEDDINGS_FILE, npz, "application/octet-stream")


@pytest.fixture
def fresh_handler() -> Iterator[None]:
    """The handler's caches live for the process (as in Lambda); each test starts cold."""
    inference._caches.clear()
    inference._catalog.clear()
    yield
    inference._caches.clear()
    inference._catalog.clear()


def _serve(store: S3ObjectStore, trained: TrainedDigits, model: bytes) -> Served:
    registry = ModelRegistry(store, MODEL)
    put_version(registry, VERSION, trained, model=model)
    registry.promote(VERSION, accuracy=0.9, evaluation={})
    return Served(store=store, registry=registry, trained=trained, model=model)


@pytest.fixture
def served(
    store: S3ObjectStore, trained: TrainedDigits, model_bytes: bytes, fresh_handler: None
) -> Served:
    return _serve(store, trained, model_bytes)


@pytest.fixture(scope="module")
def served_once(trained: TrainedDigits, model_bytes: bytes) -> Iterator[Served]:
    """One bucket with the champion for a whole module of tests that only read it."""
    with moto_bucket() as store:
        inference._caches.clear()
        inference._catalog.clear()
        yield _serve(store, trained, model_bytes)
        inference._caches.clear()
        inference._catalog.clear()


@dataclass(frozen=True)
class Reply:
    status: int
    body: dict[str, Any]
    headers: dict[str, str]


Call = Callable[..., Reply]


def call_handler(
    method: str,
    path: str,
    *,
    json_body: Any = None,
    body: bytes | None = None,
    content_type: str = "application/json",
) -> Reply:
    """One request through the deployed handler, in the event shape of the REST proxy."""
    data = (
        body if body is not None else (b"" if json_body is None else json.dumps(json_body).encode())
    )
    event = proxy_event(
        method=method,
        target=path,
        headers={"content-type": content_type} if data else {},
        body=data,
        source_ip="127.0.0.1",
    )
    response = inference.lambda_handler(event, lambda_context("inference"))
    headers = {name.lower(): value for name, value in (response.get("headers") or {}).items()}
    for name, values in (response.get("multiValueHeaders") or {}).items():
        headers[name.lower()] = ",".join(values)
    return Reply(
        status=int(response["statusCode"]), body=json.loads(response["body"]), headers=headers
    )


@pytest.fixture
def call() -> Call:
    return call_handler


def probabilities_of(trained: TrainedDigits, x: np.ndarray) -> np.ndarray:
    return np.asarray(trained.mlp.predict_proba(x), dtype=np.float32)


def as_wsgi(handler: Callable[..., dict[str, Any]], function: str) -> Callable[..., list[bytes]]:
    """A WSGI app for schemathesis: each request becomes the proxy event API Gateway would
    send, handed to `handler` (a deployed function's lambda_handler) in-process."""

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        headers = {
            name[5:].replace("_", "-").lower(): value
            for name, value in environ.items()
            if name.startswith("HTTP_")
        }
        if environ.get("CONTENT_TYPE"):
            headers["content-type"] = environ["CONTENT_TYPE"]
        query = environ.get("QUERY_STRING", "")
        event = proxy_event(
            method=environ["REQUEST_METHOD"],
            target=environ.get("PATH_INFO", "/") + (f"?{query}" if query else ""),
            headers=headers,
            body=body,
            source_ip="127.0.0.1",
        )
        response = handler(event, lambda_context(function))
        payload = response.get("body") or ""
        data = base64.b64decode(payload) if response.get("isBase64Encoded") else payload.encode()
        out = dict(response.get("headers") or {})
        for name, values in (response.get("multiValueHeaders") or {}).items():
            out[name] = ",".join(values)
        status = HTTPStatus(int(response["statusCode"]))
        start_response(f"{status.value} {status.phrase}", list(out.items()))
        return [data]

    return app
