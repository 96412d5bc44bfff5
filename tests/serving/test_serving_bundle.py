"""The serving bundle carries onnxruntime only: importing the handlers and answering a request
must not pull in TensorFlow, scikit-learn or SciPy (they are not in the Lambda bundle)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import BUCKET
from tests.serving.conftest import MODEL, VERSION

FORBIDDEN = ("tensorflow", "keras", "sklearn", "scipy", "torch", "tf2onnx", "skl2onnx", "onnx")

_SCRIPT = """
import base64, io, json, os, sys
import boto3
from moto import mock_aws

model = open(sys.argv[1], "rb").read()
with mock_aws():
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=os.environ["TESSERA_BUCKET"])
    s3.put_object(Bucket=os.environ["TESSERA_BUCKET"], Key="models/{model}/{version}/model.onnx",
                  Body=model)
    s3.put_object(Bucket=os.environ["TESSERA_BUCKET"], Key="models/{model}/champion.json",
                  Body=json.dumps({{"version": "{version}"}}).encode())
    before = set(sys.modules)
    from functions.inference.handler import lambda_handler
    from functions.batch_predict.handler import lambda_handler as batch_handler
    from tessera_dev.local.pump import lambda_context
    event = {{"httpMethod": "POST", "path": "/predict", "headers": {{}},
             "body": json.dumps({{"pixels": [0] * 784}}), "isBase64Encoded": False,
             "requestContext": {{"requestId": "r"}}}}
    reply = lambda_handler(event, lambda_context("inference"))
    loaded = sorted(set(sys.modules) - before)
print(json.dumps({{"status": reply["statusCode"], "loaded": loaded, "all": sorted(sys.modules)}}))
"""


def test_the_handlers_import_and_serve_without_training_libraries(
    tmp_path: Path, model_bytes: bytes
) -> None:
    model_path = tmp_path / "model.onnx"
    model_path.write_bytes(model_bytes)
    env = {
        "PATH": "/usr/bin:/bin",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "TESSERA_BUCKET": BUCKET,
        "POWERTOOLS_LOG_LEVEL": "WARNING",
    }
    completed = subprocess.run(
        [sys.executable, "-c", _SCRIPT.format(model=MODEL, version=VERSION), str(model_path)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    # The request really ran: a model was loaded from the bucket and answered.
    assert result["status"] == 200
    assert "onnxruntime" in result["loaded"]
    # Nothing in the process has them, not only nothing the handlers imported themselves.
    roots = {name.split(".")[0] for name in result["all"]}
    assert not roots & set(FORBIDDEN), sorted(roots & set(FORBIDDEN))
