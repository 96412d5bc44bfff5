"""The Lambda bundles `cdk synth` staged run as Lambda would run them: each asset directory is
imported by a CPython 3.12 interpreter with nothing else on its path but the boto3/botocore that
Lambda's python3.12 runtime provides, and handles a real event against a moto server.

Run after `make synth` (CI does): `pytest -m deployed tests/deployed`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pytest

from tessera.registry import ModelRegistry
from tessera.storage.s3 import S3ObjectStore
from tessera_dev.samples import sklearn_digits
from tests.conftest import digits_sheet, sqs_event_for
from tests.deployed.conftest import moto_server
from tests.serving.conftest import MODEL, VERSION, put_version
from tests.serving.model_builder import mlp_to_onnx, train_digits

pytestmark = [pytest.mark.deployed, pytest.mark.slow]

REPO_ROOT = Path(__file__).resolve().parents[2]
ASSEMBLY = REPO_ROOT / "cdk.out"
# What Lambda's python3.12 runtime carries (AWS documents that the version varies by region
# and runtime release; 1.38.36 is what the runtime was reported to provide in 2025). The
# bundles leave boto3 and botocore out and use the runtime's, so the code must work with it.
LAMBDA_RUNTIME_SDK = ("boto3==1.38.36", "botocore==1.38.36")
RUNTIME_SDK_DIR = REPO_ROOT / "build" / "lambda-runtime-sdk-1.38.36"
BUCKET = "tessera-deployed"


def python312() -> str | None:
    """Lambda's python3.12 imitated for real: pyenv's CPython 3.12, else one on PATH."""
    try:
        found = subprocess.run(
            ["pyenv", "which", "python"],
            env={**os.environ, "PYENV_VERSION": "3.12.1"},
            capture_output=True,
            text=True,
            check=False,
        )
    except FileNotFoundError:
        return shutil.which("python3.12")
    return found.stdout.strip() if found.returncode == 0 else shutil.which("python3.12")


def bundles() -> dict[str, Path]:
    """function name -> the asset directory cdk synth staged for it."""
    found = {}
    for asset in ASSEMBLY.glob("asset.*"):
        if (asset / "tessera").is_dir():
            (handler,) = asset.glob("functions/*/handler.py")
            found[handler.parent.name] = asset
    return found


@pytest.fixture(scope="module")
def interpreter() -> str:
    found = python312()
    if found is None:
        pytest.fail("CPython 3.12 is needed (pyenv install 3.12.1)")
    return found


@pytest.fixture(scope="module")
def runtime_sdk() -> Path:
    """Lambda's boto3/botocore, installed once for Python 3.12 (pure-Python wheels)."""
    if not (RUNTIME_SDK_DIR / "botocore").is_dir():
        staging = RUNTIME_SDK_DIR.with_suffix(".partial")
        shutil.rmtree(staging, ignore_errors=True)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--only-binary=:all:",
                "--python-version",
                "3.12",
                "--implementation",
                "cp",
                "--target",
                str(staging),
                *LAMBDA_RUNTIME_SDK,
            ],
            check=True,
        )
        staging.rename(RUNTIME_SDK_DIR)
    return RUNTIME_SDK_DIR


@pytest.fixture(scope="module")
def assets() -> dict[str, Path]:
    found = bundles()
    if set(found) != {"split", "vectorize", "inference", "batch_predict", "console"}:
        pytest.fail(f"run `make synth` first: cdk.out holds bundles for {sorted(found)}")
    return found


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    with moto_server() as endpoint, pytest.MonkeyPatch.context() as patch:
        for name, value in ENV.items():
            patch.setenv(name, value)
        patch.setenv("AWS_ENDPOINT_URL", endpoint)
        boto3.client("s3").create_bucket(Bucket=BUCKET)
        trained = train_digits()
        store = S3ObjectStore(bucket=BUCKET, client=boto3.client("s3"))
        registry = ModelRegistry(store, MODEL)
        put_version(registry, VERSION, trained, model=mlp_to_onnx(trained.mlp, trained.classes))
        registry.promote(VERSION, accuracy=0.9, evaluation={})
        yield endpoint


ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "TESSERA_BUCKET": BUCKET,
    "POWERTOOLS_LOG_LEVEL": "WARNING",
}

# Runs inside the bundle's interpreter: no site-packages, the bundle and Lambda's SDK only.
INVOKE = """
import json, sys
sys.path[:0] = [sys.argv[1], sys.argv[2]]
import importlib, botocore
class Context:
    function_name = sys.argv[3]; memory_limit_in_mb = 1024; function_version = "$LATEST"
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:" + sys.argv[3]
    aws_request_id = "deployed-test"; log_group_name = "/aws/lambda/t"; log_stream_name = "t"
    def get_remaining_time_in_millis(self): return 60000
handler = importlib.import_module(f"functions.{sys.argv[3]}.handler").lambda_handler
result = handler(json.loads(sys.stdin.read()), Context())
modules = sorted({name.split(".")[0] for name in sys.modules})
print(json.dumps({"result": result, "botocore": botocore.__version__, "modules": modules}))
"""


def invoke(
    interpreter: str, asset: Path, sdk: Path, function: str, event: dict[str, Any], endpoint: str
) -> dict[str, Any]:
    completed = subprocess.run(
        [interpreter, "-S", "-E", "-c", INVOKE, str(asset), str(sdk), function],
        input=json.dumps(event),
        env={**ENV, "AWS_ENDPOINT_URL": endpoint, "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "1024"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    answer: dict[str, Any] = json.loads(completed.stdout.strip().splitlines()[-1])
    return answer


def test_split_vectorize_and_batch_predict_bundles_handle_s3_events_via_sqs(
    interpreter: str, runtime_sdk: Path, assets: dict[str, Path], moto_endpoint: str
) -> None:
    # GIVEN a training sheet and a sheet to predict in the bucket
    s3 = boto3.client("s3")
    digits = sklearn_digits()
    sheet_key = "incoming/train/digits/7/sheet-2x5.png"
    s3.put_object(Bucket=BUCKET, Key=sheet_key, Body=digits_sheet(digits, "7", 10, cols=5))
    predict_key = "incoming/predict/digits/page-1x5.png"
    s3.put_object(Bucket=BUCKET, Key=predict_key, Body=digits_sheet(digits, "3", 5, cols=5))
    # WHEN each bundle handles the SQS event S3 sends for it, under Python 3.12
    split = invoke(
        interpreter,
        assets["split"],
        runtime_sdk,
        "split",
        sqs_event_for(BUCKET, sheet_key),
        moto_endpoint,
    )
    tiles = [item["Key"] for item in s3.list_objects_v2(Bucket=BUCKET, Prefix="tiles/")["Contents"]]
    vectorize = invoke(
        interpreter,
        assets["vectorize"],
        runtime_sdk,
        "vectorize",
        sqs_event_for(BUCKET, next(key for key in tiles if key.endswith("/tiles.npz"))),
        moto_endpoint,
    )
    predict = invoke(
        interpreter,
        assets["batch_predict"],
        runtime_sdk,
        "batch_predict",
        sqs_event_for(BUCKET, predict_key),
        moto_endpoint,
    )
    # THEN every record succeeded and its outputs are in the bucket
    for answer in (split, vectorize, predict):
        assert answer["result"] == {"batchItemFailures": []}
        assert answer["botocore"] == "1.38.36"
        assert not {"tessera_dev", "moto", "sklearn", "tensorflow"} & set(answer["modules"])
    assert len([key for key in tiles if key.endswith(".png")]) == 10
    rows = s3.list_objects_v2(Bucket=BUCKET, Prefix="datasets/digits/rows/")
    assert rows["KeyCount"] == 1  # the sheet's shard
    shard = s3.head_object(Bucket=BUCKET, Key=rows["Contents"][0]["Key"])
    assert shard["Metadata"]["rows"] == "10"
    prediction = json.loads(
        s3.get_object(Bucket=BUCKET, Key=f"predictions/{predict_key}.json")["Body"].read()
    )
    assert prediction["rows"] == 1 and prediction["cols"] == 5


def test_the_inference_bundle_answers_health_and_predict(
    interpreter: str, runtime_sdk: Path, assets: dict[str, Path], moto_endpoint: str
) -> None:
    def request(method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        event = json.loads((REPO_ROOT / "tests" / "events" / "api_predict.json").read_text())
        event.update(
            httpMethod=method,
            path=path,
            body=json.dumps(body) if body is not None else None,
            isBase64Encoded=False,
        )
        event["requestContext"].update(httpMethod=method, path=path)
        answer = invoke(
            interpreter, assets["inference"], runtime_sdk, "inference", event, moto_endpoint
        )
        assert not {"tessera_dev", "moto", "sklearn", "tensorflow", "scipy"} & set(
            answer["modules"]
        )
        result: dict[str, Any] = answer["result"]
        return result

    health = request("GET", "/health")
    assert health["statusCode"] == 200 and json.loads(health["body"]) == {"status": "ok"}
    digits = sklearn_digits()
    # An 8x8 sklearn digit upscaled to 24x24 and centred in 28x28, ink bright, like MNIST.
    tile = np.pad(digits.ink[0].repeat(3, 0).repeat(3, 1), 2)
    predicted = request(
        "POST", "/predict", {"pixels": np.rint(tile * 255).astype(int).ravel().tolist()}
    )
    assert predicted["statusCode"] == 200, predicted["body"]
    body = json.loads(predicted["body"])
    assert body["version"] == VERSION and body["label"] in [str(d) for d in range(10)]


def test_the_console_bundle_serves_its_page_and_the_models(
    interpreter: str, runtime_sdk: Path, assets: dict[str, Path], moto_endpoint: str
) -> None:
    def request(path: str) -> dict[str, Any]:
        event = json.loads((REPO_ROOT / "tests" / "events" / "api_predict.json").read_text())
        event.update(httpMethod="GET", path=path, body=None, isBase64Encoded=False)
        event["requestContext"].update(httpMethod="GET", path=path)
        answer = invoke(
            interpreter, assets["console"], runtime_sdk, "console", event, moto_endpoint
        )
        assert not {"tessera_dev", "moto", "sklearn", "onnxruntime"} & set(answer["modules"])
        result: dict[str, Any] = answer["result"]
        return result

    page = request("/")
    assert page["statusCode"] == 200 and "<canvas" in page["body"]
    assert request("/console/app.js")["statusCode"] == 200
    model = request(f"/models/{MODEL}")
    assert model["statusCode"] == 200, model["body"]
    assert json.loads(model["body"])["champion"]["version"] == VERSION
