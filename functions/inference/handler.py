"""Inference: the REST API in front of the champion ONNX model (onnxruntime only).

    GET  /health    the function is up
    GET  /models    models, versions, metrics, champion
    POST /predict   label and top-k probabilities for an image, pixels or instances
    POST /similar   the k nearest training examples by cosine similarity of embeddings

The API is described in docs/openapi.yaml; every client mistake is a 4xx with a JSON error.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from typing import Any

import numpy as np
from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import APIGatewayRestResolver
from aws_lambda_powertools.utilities.typing import LambdaContext

from tessera.config import FunctionSettings
from tessera.registry import ModelRegistry
from tessera.serving.api_input import (
    DEFAULT_SIMILAR_K,
    DEFAULT_TOP_K,
    MAX_SIMILAR_INSTANCES,
    PREDICT_OPTIONS,
    SIMILAR_OPTIONS,
    ApiRequest,
    parse_request,
)
from tessera.serving.cache import ModelCache, ModelCatalog
from tessera.serving.http_errors import install_error_handlers
from tessera.serving.model import ModelNotFound, SimilarityUnavailable
from tessera.storage.s3 import S3ObjectStore

logger = Logger(service="inference")
app = APIGatewayRestResolver()
# Model names come from callers: keep a bounded number of registries (and their sessions).
MAX_CACHED_MODELS = 8
# Keyed by where a model is read from (bucket, endpoint) and its name: a process that outlives
# its endpoint (the local runtime restarted in one process) never serves from a stale one.
_caches: OrderedDict[tuple[str, str, str], ModelCache] = OrderedDict()
_caches_lock = threading.Lock()
_catalog: dict[tuple[str, str], ModelCatalog] = {}


def _origin() -> tuple[str, str]:
    return FunctionSettings.from_env().bucket, os.environ.get("AWS_ENDPOINT_URL", "")


install_error_handlers(
    app,
    logger,
    not_found={ModelNotFound: "model_not_found", SimilarityUnavailable: "similarity_unavailable"},
    route_hint="; see docs/openapi.yaml",
)


def cache_for(name: str) -> ModelCache:
    # Lambda runs one request at a time, the local API one per thread: guard the LRU for both.
    key = (*_origin(), name)
    with _caches_lock:
        cache = _caches.get(key)
        if cache is None:
            settings = FunctionSettings.from_env()
            registry = ModelRegistry(S3ObjectStore(bucket=settings.bucket), name)
            cache = ModelCache(registry=registry, ttl_seconds=settings.champion_ttl_seconds)
            _caches[key] = cache
            while len(_caches) > MAX_CACHED_MODELS:
                _caches.popitem(last=False)
        else:
            _caches.move_to_end(key)
        return cache


def catalog() -> ModelCatalog:
    origin = _origin()
    with _caches_lock:
        if origin not in _catalog:
            settings = FunctionSettings.from_env()
            _catalog[origin] = ModelCatalog(
                store=S3ObjectStore(bucket=settings.bucket),
                ttl_seconds=settings.champion_ttl_seconds,
            )
        return _catalog[origin]


def _parse(options: frozenset[str], default_k: int, max_instances: int | None = None) -> ApiRequest:
    event = app.current_event
    headers = event.headers or {}
    content_type = next(
        (value for name, value in headers.items() if name.lower() == "content-type"), ""
    )
    extra = {} if max_instances is None else {"max_instances": max_instances}
    return parse_request(
        body=event.body,
        is_base64=bool(event.is_base64_encoded),
        content_type=content_type or "",
        query=event.query_string_parameters,
        options=options,
        default_k=default_k,
        **extra,
    )


def _model_name(request: ApiRequest) -> str:
    return request.model or FunctionSettings.from_env().model_name


@app.get("/health")
def health() -> dict[str, Any]:
    return {"status": "ok"}


@app.get("/models")
def models() -> dict[str, Any]:
    return catalog().describe()


@app.post("/predict")
@app.post("/console/predict")  # the same, for the signed-in console (no API key in a browser)
def predict() -> dict[str, Any]:
    request = _parse(PREDICT_OPTIONS, DEFAULT_TOP_K)
    model = cache_for(_model_name(request)).get(request.version)
    predictions = model.predict(request.features, top_k=request.k)
    answer: dict[str, Any] = {"model": model.name, "version": model.version}
    if request.single:
        answer.update(predictions[0])
    if request.symbols is not None:
        # A page of several symbols: each with its place, and each line read as a string.
        symbols = [
            {**place, **prediction}
            for place, prediction in zip(request.symbols, predictions, strict=True)
        ]
        lines = [""] * (max(symbol["line"] for symbol in symbols) + 1)
        for symbol in symbols:
            lines[symbol["line"]] += symbol["label"]
        answer.update(layout="symbols", symbols=symbols, lines=lines)
    answer["predictions"] = predictions
    if request.inputs:
        # What the model saw, row-major 28x28 in [0, 1] (1 = ink), one per prediction.
        answer["inputs"] = np.round(request.features, 3).tolist()
    return answer


@app.post("/similar")
@app.post("/console/similar")
def similar() -> dict[str, Any]:
    request = _parse(SIMILAR_OPTIONS, DEFAULT_SIMILAR_K, MAX_SIMILAR_INSTANCES)
    model, index = cache_for(_model_name(request)).similarity(request.version)
    probabilities, embeddings = model.probabilities_and_embedding(request.features)
    predictions = model.describe(probabilities, top_k=1)
    neighbours = index.nearest(embeddings, k=request.k)
    results = [
        {
            "label": prediction["label"],
            "confidence": prediction["confidence"],
            "neighbours": [neighbour.as_dict() for neighbour in found],
        }
        for prediction, found in zip(predictions, neighbours, strict=True)
    ]
    answer: dict[str, Any] = {"model": model.name, "version": model.version, "k": request.k}
    if request.single:
        answer.update(results[0])
    answer["results"] = results
    return answer


@logger.inject_lambda_context(correlation_id_path="requestContext.requestId")
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
