"""The local embedded runtime: moto plays AWS, event pumps play Lambda's SQS mappings, a local
HTTP server plays API Gateway, and training runs as a local process of the container's entry
point. The AWS CLI and boto3 work against it unchanged with `--endpoint-url`."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

from tessera.config import PIPELINE, Env
from tessera.corrections import UnknownTile
from tessera.errors import InvalidInput
from tessera.serving.console import checked_training_request
from tessera.serving.http_errors import STATUS_BY_CODE
from tessera.storage.s3 import S3ObjectStore
from tessera_dev.local.api import LocalApi
from tessera_dev.local.aws_server import AwsServer
from tessera_dev.local.faults import Faults
from tessera_dev.local.persistence import (
    SNAPSHOT_SECONDS,
    BucketMirror,
    Snapshotter,
    Stored,
    snapshot_on_stop,
)
from tessera_dev.local.pump import EventPump
from tessera_dev.local.recovery import resend_unfinished
from tessera_dev.local.resources import ProvisionedQueue, provision

REGION = "us-east-1"
MAX_CONNECTIONS = 64
_CREDENTIALS = {
    # moto accepts any credentials; these only keep boto3 from looking for real ones.
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": REGION,
}


def handler_for(function: str) -> Any:
    """The same `lambda_handler` a deployed function runs."""
    return importlib.import_module(f"functions.{function}.handler").lambda_handler


@dataclass
class LocalRuntime:
    """moto, the pumps and the API. With a `data_dir` the bucket outlives the runtime: restored
    from the directory on start, snapshotted to it every `snapshot_seconds` and on stop;
    without one (tests, the demo) everything lives in moto's memory and goes with it. moto
    runs in a process of its own (tessera_dev.local.aws_server), which ends with the runtime."""

    bucket: str = "tessera-local"
    host: str = "127.0.0.1"
    aws_port: int = 0
    api_port: int = 0
    data_dir: Path | None = None
    snapshot_seconds: float = SNAPSHOT_SECONDS
    # Invocations of one function at once, at most (each queue's maxConcurrency caps it too):
    # Lambda runs them side by side; here they are threads that overlap one another's waits.
    concurrency: int = 4
    # Injected into every function's path (benchmarks and tests of at-least-once delivery).
    faults: Faults | None = None
    queues: list[ProvisionedQueue] = field(default_factory=list)
    pumps: list[EventPump] = field(default_factory=list)
    # What the start restored from the data directory, and which of it was sent again.
    restored: list[Stored] = field(default_factory=list)
    resent: list[str] = field(default_factory=list)
    # `module:callable` wrapping moto's WSGI app in its process (a benchmark's request counter).
    moto_middleware: str | None = None
    _moto: AwsServer | None = None
    _api: LocalApi | None = None
    _mirror: BucketMirror | None = None
    _snapshotter: Snapshotter | None = None
    _saved_env: dict[str, str | None] = field(default_factory=dict)
    # After stop(): the keys the last snapshot could not write to the data directory.
    unsaved_on_stop: list[str] = field(default_factory=list)

    @property
    def aws_endpoint(self) -> str:
        assert self._moto is not None, "the runtime is not started"
        return self._moto.endpoint

    @property
    def api_url(self) -> str:
        assert self._api is not None, "the runtime is not started"
        return self._api.url

    def env(self) -> dict[str, str]:
        """What a function or the training job needs to talk to this runtime."""
        return {
            **_CREDENTIALS,
            "AWS_ENDPOINT_URL": self.aws_endpoint,
            Env.BUCKET: self.bucket,
            Env.LOG_LEVEL: os.environ.get(Env.LOG_LEVEL, "WARNING"),
        }

    def client(self, service: str) -> Any:
        # One SQS client serves every pump's pollers and their leases (up to 8 calls at once
        # per queue): a pool that size keeps their connections instead of reopening them.
        return boto3.client(
            service,
            endpoint_url=self.aws_endpoint,
            region_name=REGION,
            config=Config(max_pool_connections=MAX_CONNECTIONS),
        )

    def start(self) -> LocalRuntime:
        """Raises `DataDirError` before anything starts if the data directory cannot be used."""
        if self.data_dir is not None:
            self._mirror = BucketMirror(self.data_dir, self.bucket)
            self._mirror.open()
        try:
            return self._start_services()
        except BaseException:
            if self._mirror is not None:  # unlocked, and no snapshot of a half-started bucket
                self._mirror.close()
            raise

    def _start_services(self) -> LocalRuntime:
        # moto in a process of its own: the functions' calls and its answers use both cores.
        self._moto = AwsServer(self.host, self.aws_port, self.moto_middleware).start()
        for name, value in self.env().items():
            self._saved_env.setdefault(name, os.environ.get(name))
            os.environ[name] = value
        sqs, s3 = self.client("sqs"), self.client("s3")
        self.queues = provision(
            s3=s3, sqs=sqs, bucket=self.bucket, before_notifications=self._restore
        )
        if self._mirror is not None:
            self.resent = resend_unfinished(sqs, s3, self.bucket, self.queues, self.restored)
            self._snapshotter = Snapshotter(self._mirror, s3, self.bucket, self.snapshot_seconds)
            self._snapshotter.start()
        for queue in self.queues:
            handler = handler_for(queue.spec.function)
            if self.faults is not None:
                handler = self.faults.wrap(
                    queue.spec.function, handler, sqs=sqs, queue_url=queue.url
                )
            pump = EventPump(
                sqs=sqs,
                queue=queue,
                handler=handler,
                region=REGION,
                concurrency=min(self.concurrency, queue.spec.max_concurrency),
            )
            pump.start()
            self.pumps.append(pump)
        self._api = LocalApi(
            handler_for("inference"),
            host=self.host,
            port=self.api_port,
            extra_routes={
                ("POST", "/train"): self._train_route,
                ("POST", "/console/train"): self._train_route,
            },
            functions={
                "console": (
                    tuple(r for r in PIPELINE.console_routes if r.function == "console"),
                    handler_for("console"),
                )
            },
        )
        self._api.start()
        return self

    def stop(self) -> None:
        for pump in self.pumps:
            pump.stop()
        for pump in self.pumps:
            pump.join(timeout=5)
        if self._api is not None:
            self._api.stop()
        self._last_snapshot()
        if self._moto is not None:
            self._moto.stop()
        for name, value in self._saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value

    def _restore(self) -> None:
        """The data directory's objects back into the bucket, before its notifications exist:
        what was processed before the restart is not processed again."""
        if self._mirror is not None:
            self.restored = self._mirror.restore(self.client("s3"), self.bucket)

    def _last_snapshot(self) -> None:
        if self._snapshotter is not None:
            self._snapshotter.stop()
            self._snapshotter.join(timeout=30)
        if self._mirror is not None and self._mirror.is_open:
            self.unsaved_on_stop = snapshot_on_stop(self._mirror, self.client("s3"), self.bucket)
            self._mirror.close()

    def __enter__(self) -> LocalRuntime:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def describe(self) -> dict[str, Any]:
        return {
            "aws_endpoint": self.aws_endpoint,
            "bucket": self.bucket,
            "data_dir": str(self._mirror.root) if self._mirror is not None else None,
            "api_url": self.api_url,
            "region": REGION,
            "queues": {q.spec.function: {"queue": q.url, "dlq": q.dlq_url} for q in self.queues},
        }

    def queue_depths(self) -> dict[str, int]:
        sqs = self.client("sqs")
        depths = {}
        for queue in self.queues:
            for name, url in ((queue.spec.name, queue.url), (queue.spec.dlq_name, queue.dlq_url)):
                attributes = sqs.get_queue_attributes(
                    QueueUrl=url,
                    AttributeNames=[
                        "ApproximateNumberOfMessages",
                        "ApproximateNumberOfMessagesNotVisible",
                    ],
                )["Attributes"]
                depths[name] = int(attributes["ApproximateNumberOfMessages"]) + int(
                    attributes["ApproximateNumberOfMessagesNotVisible"]
                )
        return depths

    def wait_until_idle(self, *, timeout: float = 300.0, settle: int = 3) -> bool:
        """True once every work queue is empty and every pump idle, `settle` checks in a row."""
        deadline = time.monotonic() + timeout
        quiet = 0
        work_queues = {q.spec.name for q in self.queues}
        while time.monotonic() < deadline:
            depths = self.queue_depths()
            busy = any(depths[name] for name in work_queues) or any(
                pump.stats.in_flight for pump in self.pumps
            )
            quiet = 0 if busy else quiet + 1
            if quiet >= settle:
                return True
            time.sleep(0.3)
        return False

    def train(
        self,
        datasets: list[str],
        *,
        run_id: str | None = None,
        extra_args: list[str] | None = None,
    ) -> dict[str, Any]:
        """Run the training entry point as a local process, as the container would run."""
        run_id = run_id or local_run_id()
        return self.finish_training(
            self.start_training(datasets, run_id=run_id, extra_args=extra_args), run_id
        )

    def start_training(
        self, datasets: list[str], *, run_id: str, extra_args: list[str] | None = None
    ) -> subprocess.Popen[str]:
        """The training process, started: `finish_training` waits for it and records its end."""
        command = [sys.executable, "-m", "training.train", "--run-id", run_id]
        for name in datasets:
            command += ["--dataset", name]
        command += extra_args or []
        return subprocess.Popen(
            command,
            env={**os.environ, **self.env()},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def finish_training(self, process: subprocess.Popen[str], run_id: str) -> dict[str, Any]:
        """Wait for the job; a job that died without saying so (killed, out of memory) gets
        `failed` in its status.json, as the deployed workflow's RecordFailure state writes it,
        so every started run records an outcome."""
        stdout, stderr = process.communicate()
        lines = [line for line in stdout.splitlines() if line.startswith("{")]
        result: dict[str, Any] = json.loads(lines[-1]) if lines else {}
        result.setdefault("status", "succeeded" if process.returncode == 0 else "failed")
        if process.returncode != 0:
            result.setdefault("error", stderr[-2000:])
            store = S3ObjectStore(bucket=self.bucket, client=self.client("s3"))
            key = f"{PIPELINE.prefixes.runs}{run_id}/status.json"
            recorded = store.get_json(key)
            if not isinstance(recorded, dict) or recorded.get("status") != "failed":
                cause = (
                    f"killed by signal {-process.returncode}"
                    if process.returncode < 0
                    else f"exit code {process.returncode}"
                )
                store.put_json(
                    key,
                    {
                        "run_id": run_id,
                        "status": "failed",
                        "error": {
                            "code": "job_ended",
                            "message": f"the training job ended without a result ({cause})",
                        },
                        "recorded_by": "local runtime",
                    },
                )
        return result

    def _train_route(self, event: dict[str, Any]) -> dict[str, Any]:
        """POST /train: plays the Step Functions execution the deployed API starts. The request
        is checked before anything starts, so every accepted run records an outcome."""
        store = S3ObjectStore(bucket=self.bucket, client=self.client("s3"))
        try:
            request = checked_training_request(store, event.get("body"))
        except InvalidInput as error:
            status = 404 if isinstance(error, UnknownTile) else STATUS_BY_CODE.get(error.code, 400)
            return _json_response(status, {"error": error.as_dict()})
        execution = local_run_id()
        datasets = request.datasets
        # The same search the deployed workflow fans out as an array job: local workers here.
        extra = ["--family", request.family]
        if request.search_workers:
            extra += ["--search", "exhaustive", "--search-workers", str(request.search_workers)]
        threading.Thread(
            target=self.train,
            args=(datasets,),
            kwargs={"run_id": execution, "extra_args": extra},
            daemon=True,
        ).start()
        # The job records its progress where the deployed workflow reads it.
        status_key = f"{PIPELINE.prefixes.runs}{execution}/status.json"
        return _json_response(
            202,
            {
                "execution": execution,
                "datasets": datasets,
                "family": request.family,
                "status_key": status_key,
            },
        )


def local_run_id() -> str:
    """A run id as the deployed workflow's execution names are: unique, and safe in a key."""
    return f"local-{uuid.uuid4().hex[:12]}"


def _json_response(status: int, body: dict[str, Any]) -> dict[str, Any]:
    return {
        "statusCode": status,
        "headers": {"content-type": "application/json"},
        "body": json.dumps(body),
    }
