"""A client for people who run the pipeline: the same commands against the local runtime and a
deployed stack (read from its CloudFormation outputs).

    tessera drop SHEET --dataset digits --row-labels "0 1 2"     tessera predict digit.png
    tessera train --dataset digits --wait                         tessera status RUN_ID
    tessera models                                                tessera champion MODEL VERSION
    tessera redrive [--queue vectorize]

`--stack NAME` targets a deployed stack; without it, the local runtime that `tessera local up`
started (it records its endpoints in ~/.tessera/local.json). Errors from the API are shown as
their code and message.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest

from tessera.config import DEFAULT_FAMILY, PIPELINE
from tessera.errors import CodedError, InvalidInput
from tessera.names import validate_dataset_name, validate_label, validate_model_name
from tessera.serving import console
from tessera.sheets.spec import labels_manifest_key
from tessera.storage.s3 import S3ObjectStore

LOCAL_STATE = Path.home() / ".tessera" / "local.json"
# S3 user metadata travels as ASCII HTTP headers of at most 2 KB in all.
MAX_METADATA_BYTES = 2 * 1024
POLL_SECONDS = 5.0


class ClientError(CodedError):
    """What a command could not do, as a code and a message a person can act on."""


@dataclass(frozen=True)
class Target:
    """Where the pipeline runs: the bucket, the API, and how to reach both."""

    bucket: str
    api_url: str
    region: str
    aws_endpoint: str | None = None  # the local runtime's moto server; None on AWS
    api_key: str | None = None  # deployed: the x-api-key the prediction routes take
    train_url: str | None = None  # deployed: POST /train, SigV4-signed
    queues: dict[str, dict[str, str]] = field(default_factory=dict)  # function -> urls

    @property
    def local(self) -> bool:
        return self.aws_endpoint is not None

    def client(self, service: str) -> Any:
        if self.local:
            # moto takes any credentials; a newcomer's shell need not have AWS ones at all.
            return boto3.client(
                service,
                region_name=self.region,
                endpoint_url=self.aws_endpoint,
                aws_access_key_id="testing",
                aws_secret_access_key="testing",
            )
        return boto3.client(service, region_name=self.region)

    def store(self) -> S3ObjectStore:
        return S3ObjectStore(bucket=self.bucket, client=self.client("s3"))


def local_target(path: Path | None = None) -> Target:
    path = path or LOCAL_STATE
    if not path.is_file():
        raise ClientError(
            "no_target",
            f"no local runtime recorded in {path}: start one with `tessera local up`, "
            "or name a deployed stack with --stack",
        )
    described = json.loads(path.read_text())
    return Target(
        bucket=described["bucket"],
        api_url=described["api_url"].rstrip("/") + "/",
        region=described["region"],
        aws_endpoint=described["aws_endpoint"],
        queues=described.get("queues", {}),
    )


def stack_target(stack: str, region: str | None = None) -> Target:
    """A deployed stack, from its outputs (as DEPLOY.md's `out` function reads them)."""
    session = boto3.session.Session(region_name=region)
    cloudformation = session.client("cloudformation")
    try:
        (described,) = cloudformation.describe_stacks(StackName=stack)["Stacks"]
    except cloudformation.exceptions.ClientError as error:
        raise ClientError("no_target", f"stack {stack!r}: {error}") from None
    outputs = {o["OutputKey"]: o["OutputValue"] for o in described.get("Outputs", [])}
    key = session.client("apigateway").get_api_key(apiKey=outputs["ApiKeyId"], includeValue=True)
    sqs = session.client("sqs")
    queues = {
        spec.function: {
            "queue": sqs.get_queue_url(QueueName=spec.name)["QueueUrl"],
            "dlq": sqs.get_queue_url(QueueName=spec.dlq_name)["QueueUrl"],
        }
        for spec in PIPELINE.queues
    }
    return Target(
        bucket=outputs["BucketName"],
        api_url=outputs["ApiUrl"],
        region=session.region_name or "us-east-1",
        api_key=str(key["value"]),
        train_url=outputs.get("TrainUrl"),
        queues=queues,
    )


def _request(
    target: Target,
    method: str,
    url: str,
    body: bytes | None = None,
    content_type: str = "application/json",
    *,
    sign: bool = False,
) -> dict[str, Any]:
    headers = {"content-type": content_type}
    if target.api_key and not sign:
        headers["x-api-key"] = target.api_key
    if sign:
        credentials = boto3.session.Session().get_credentials()
        if credentials is None:
            raise ClientError("no_credentials", "POST /train is signed with AWS credentials")
        signed = AWSRequest(method=method, url=url, data=body or b"", headers=headers)
        SigV4Auth(credentials.get_frozen_credentials(), "execute-api", target.region).add_auth(
            signed
        )
        headers = dict(signed.headers.items())
    request = urllib.request.Request(url, data=body, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            answer: dict[str, Any] = json.loads(response.read() or b"{}")
            return answer
    except urllib.error.HTTPError as error:
        raw = error.read()
        try:
            detail = json.loads(raw).get("error") or {}
        except (ValueError, AttributeError):
            detail = {}
        code = str(detail.get("code") or f"http_{error.code}")
        message = str(detail.get("message") or raw[:200].decode(errors="replace"))
        raise ClientError(code, message) from None
    except urllib.error.URLError as error:
        raise ClientError("unreachable", f"{url}: {error.reason}") from None


def drop(
    target: Target,
    sheet: Path,
    *,
    dataset: str,
    grid: str | None = None,
    labels: list[str] | None = None,
    row_labels: list[str] | None = None,
    label: str | None = None,
    predict: bool = False,
    model: str | None = None,
) -> str:
    """Upload a sheet with what it holds; labels metadata cannot carry go in a manifest."""
    if not sheet.is_file():
        raise ClientError("no_such_file", f"{sheet} is not a file")
    if predict:
        folder = f"{validate_model_name(model)}/" if model else ""
        key = f"{PIPELINE.prefixes.incoming_predict}{folder}{sheet.name}"
        fields: dict[str, str | list[str]] = {"grid": grid} if grid else {}
    else:
        key = f"{PIPELINE.prefixes.incoming_train}{validate_dataset_name(dataset)}/{sheet.name}"
        fields = {"grid": grid} if grid else {}
        given = [
            (name, value)
            for name, value in (("labels", labels), ("row-labels", row_labels), ("label", label))
            if value
        ]
        if len(given) != 1:
            raise ClientError("missing_labels", "give one of --labels, --row-labels or --label")
        name, value = given[0]
        fields[name] = [validate_label(v) for v in value] if isinstance(value, list) else value
    metadata = {k: " ".join(v) if isinstance(v, list) else v for k, v in fields.items()}
    fits = all(v.isascii() for v in metadata.values()) and (
        sum(len(k) + len(v) for k, v in metadata.items()) <= MAX_METADATA_BYTES
    )
    s3 = target.client("s3")
    if not fits:
        # The manifest first: the sheet's own event then finds it.
        s3.put_object(
            Bucket=target.bucket,
            Key=labels_manifest_key(key),
            Body=json.dumps(fields, ensure_ascii=False).encode(),
            ContentType="application/json",
        )
        metadata = {}
    s3.put_object(Bucket=target.bucket, Key=key, Body=sheet.read_bytes(), Metadata=metadata)
    return key


def predict(
    target: Target, image: Path, *, model: str | None = None, top_k: int = 3
) -> dict[str, Any]:
    query = f"?top_k={top_k}" + (f"&model={validate_model_name(model)}" if model else "")
    return _request(
        target, "POST", f"{target.api_url}predict{query}", image.read_bytes(), "image/png"
    )


def models(target: Target) -> dict[str, Any]:
    return _request(target, "GET", f"{target.api_url}models")


def status(target: Target, run_id: str) -> dict[str, Any]:
    document = target.store().get_json(f"{PIPELINE.prefixes.runs}{run_id}/status.json")
    if not isinstance(document, dict):
        raise ClientError("no_such_run", f"run {run_id!r} has recorded no status (yet)")
    return document


def train(
    target: Target,
    *,
    datasets: list[str],
    family: str = DEFAULT_FAMILY,
    wait: bool = False,
    progress: Callable[[str], None] = lambda _message: None,
    timeout: float = 4 * 3600,
) -> dict[str, Any]:
    """Start a run (POST /train) of `family` and, with `wait`, follow it until it ends."""
    names = [validate_dataset_name(name) for name in datasets]
    request: dict[str, Any] = {"datasets": names} if target.local else {"dataset": names[0]}
    body = json.dumps({**request, "family": family}).encode()
    if target.local:
        started = _request(target, "POST", f"{target.api_url}train", body)
        run_id = str(started["execution"])
    else:
        if target.train_url is None:
            raise ClientError("no_target", "the stack has no TrainUrl output")
        if len(names) != 1:
            raise ClientError("bad_request", "a deployed run trains one dataset")
        started = _request(target, "POST", target.train_url, body, sign=True)
        run_id = str(started["executionArn"]).rsplit(":", 1)[-1]
    progress(f"run {run_id} started")
    if not wait:
        return {"run_id": run_id, **started}
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            document = status(target, run_id)
        except ClientError:
            document = {"status": "starting"}
        if document.get("status") != last:
            last = document.get("status")
            progress(f"run {run_id}: {last}")
        if last in ("succeeded", "failed"):
            return document
        time.sleep(POLL_SECONDS)
    raise ClientError("timeout", f"run {run_id} did not end within {timeout:.0f} s")


def set_champion(target: Target, model: str, version: str) -> dict[str, Any]:
    """Point the champion at `version` (a roll back or forward), as the console does: the same
    conditional pointer write promotion uses; a version that failed its parity gate is refused."""
    try:
        return console.set_champion(target.store(), model, version, set_by="tessera champion")
    except InvalidInput as error:
        raise ClientError(error.code, error.message) from None


def redrive(target: Target, *, function: str | None = None) -> dict[str, int]:
    """Move dead-lettered messages back to their queues: SQS's own move task on AWS; on the
    local runtime (moto has no move task) the same receive-send-delete the task performs."""
    sqs = target.client("sqs")
    moved: dict[str, int] = {}
    for name, urls in target.queues.items():
        if function and name != function:
            continue
        if not target.local:
            attributes = sqs.get_queue_attributes(QueueUrl=urls["dlq"], AttributeNames=["QueueArn"])
            sqs.start_message_move_task(SourceArn=attributes["Attributes"]["QueueArn"])
            moved[name] = -1  # started; SQS moves them in the background
            continue
        count = 0
        while True:
            batch = sqs.receive_message(QueueUrl=urls["dlq"], MaxNumberOfMessages=10).get(
                "Messages", []
            )
            if not batch:
                break
            for message in batch:
                sqs.send_message(QueueUrl=urls["queue"], MessageBody=message["Body"])
                sqs.delete_message(QueueUrl=urls["dlq"], ReceiptHandle=message["ReceiptHandle"])
                count += 1
        moved[name] = count
    if function and function not in moved:
        raise ClientError("no_such_queue", f"no queue feeds {function!r}")
    return moved


def record_local(described: dict[str, Any], path: Path | None = None) -> None:
    """What `tessera local up` leaves for the client: its endpoints, readable by this user."""
    path = path or LOCAL_STATE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".partial")
    tmp.write_text(json.dumps(described))
    os.chmod(tmp, 0o600)
    tmp.replace(path)
