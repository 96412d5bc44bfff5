"""Inference: the REST API in front of the champion ONNX model (onnxruntime only)."""

from __future__ import annotations

import base64
import json
from http import HTTPStatus
from typing import Any

import numpy as np
from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.utilities.typing import LambdaContext
from numpy.typing import NDArray

from tessera.config import PIPELINE, FunctionSettings
from tessera.errors import InvalidInput
from tessera.registry import ModelRegistry
from tessera.requests import features_from_body, features_from_image_bytes
from tessera.serving import ModelCache, ModelNotFound
from tessera.sheets import validate_dataset_name
from tessera.storage import ObjectStore

logger = Logger(service="inference")
app = APIGatewayRestResolver()
_caches: dict[str, ModelCache] = {}
_IMAGE_TYPES = ("image/png", "image/jpeg")


def _error(status: HTTPStatus, code: str, message: str) -> Response[str]:
    return Response(
        status_code=status,
        content_type="application/json",
        body=json.dumps({"error": {"code": code, "message": message}}),
    )


@app.exception_handler(InvalidInput)
def _invalid_input(error: InvalidInput) -> Response[str]:
    status = (
        HTTPStatus.REQUEST_ENTITY_TOO_LARGE
        if error.code == "body_too_large"
        else HTTPStatus.BAD_REQUEST
    )
    return _error(status, error.code, error.message)


@app.exception_handler(ModelNotFound)
def _model_not_found(error: ModelNotFound) -> Response[str]:
    return _error(HTTPStatus.NOT_FOUND, "model_not_found", str(error))


def cache_for(name: str) -> ModelCache:
    if name not in _caches:
        settings = FunctionSettings.from_env()
        registry = ModelRegistry(ObjectStore(bucket=settings.bucket), validate_dataset_name(name))
        _caches[name] = ModelCache(registry=registry, ttl_seconds=settings.champion_ttl_seconds)
    return _caches[name]


def _request_body() -> tuple[NDArray[np.float32], dict[str, Any]]:
    """The request as model input, plus its JSON options (model, version, top_k)."""
    event = app.current_event
    raw = event.body or ""
    if len(raw) > PIPELINE.limits.max_api_body_bytes:
        raise InvalidInput(
            "body_too_large", f"the body is over {PIPELINE.limits.max_api_body_bytes} bytes"
        )
    content_type = (event.headers or {}).get("content-type") or (event.headers or {}).get(
        "Content-Type", ""
    )
    if content_type.split(";")[0].strip().lower() in _IMAGE_TYPES:
        data = base64.b64decode(raw) if event.is_base64_encoded else raw.encode("latin-1")
        options = dict(event.query_string_parameters or {})
        return features_from_image_bytes(data)[np.newaxis, :], options
    if event.is_base64_encoded:
        raw = base64.b64decode(raw).decode("utf-8", errors="replace")
    try:
        body = json.loads(raw)
    except json.JSONDecodeError as error:
        raise InvalidInput("invalid_json", f"the body is not valid JSON: {error.msg}") from None
    features = features_from_body(body)
    return features, body


def _options(options: dict[str, Any]) -> tuple[str, str | None, int]:
    name = options.get("model", FunctionSettings.from_env().model_name)
    version = options.get("version")
    top_k = options.get("top_k", 3)
    if not isinstance(name, str):
        raise InvalidInput("bad_request", "'model' must be a string")
    if version is not None and not isinstance(version, str):
        raise InvalidInput("bad_request", "'version' must be a string")
    try:
        top_k = int(top_k)
    except (TypeError, ValueError):
        raise InvalidInput("bad_request", "'top_k' must be an integer") from None
    if not 1 <= top_k <= 100:
        raise InvalidInput("bad_request", "'top_k' must be within 1..100")
    try:
        validate_dataset_name(name)
    except InvalidInput as error:
        raise InvalidInput("bad_request", error.message) from None
    return name, version, top_k


@app.get("/health")
def health() -> dict[str, Any]:
    return {"status": "ok"}


@app.post("/predict")
def predict() -> dict[str, Any]:
    features, options = _request_body()
    name, version, top_k = _options(options)
    model = cache_for(name).get(version)
    predictions = model.predict(features, top_k=top_k)
    return {"model": model.name, "version": model.version, "predictions": predictions}


@logger.inject_lambda_context(correlation_id_path="requestContext.requestId")
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
