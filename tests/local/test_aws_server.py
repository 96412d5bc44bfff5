"""moto's server in a process of its own (tessera_dev.local.aws_server), and the event pumps
that run a function's invocations side by side as Lambda does."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from typing import Any

import boto3
import pytest
from moto import mock_aws

from tessera.config import PIPELINE
from tessera_dev.local.aws_server import AwsServer
from tessera_dev.local.pump import EventPump
from tessera_dev.local.resources import ProvisionedQueue


def _s3(endpoint: str) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def _refuses(endpoint: str) -> bool:
    host, port = endpoint.removeprefix("http://").split(":")
    try:
        socket.create_connection((host, int(port)), timeout=1).close()
    except OSError:
        return True
    return False


def _gone(pid: int, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        # a zombie is gone too: its parent (killed) cannot reap it, init will
        try:
            with open(f"/proc/{pid}/stat") as stat:
                if stat.read().split(") ", 1)[1].startswith("Z"):
                    return True
        except FileNotFoundError:  # reaped between the two looks
            return True
        time.sleep(0.1)
    return False


def test_the_server_answers_s3_and_goes_when_stopped() -> None:
    server = AwsServer().start()
    try:
        s3 = _s3(server.endpoint)
        s3.create_bucket(Bucket="tessera-aws-server")
        s3.put_object(Bucket="tessera-aws-server", Key="a.txt", Body=b"kept")
        body = s3.get_object(Bucket="tessera-aws-server", Key="a.txt")["Body"].read()
        assert body == b"kept"
    finally:
        server.stop()
    assert _refuses(server.endpoint)


def test_a_port_in_use_is_a_clear_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(RuntimeError, match=f"did not start on 127.0.0.1:{port}"):
            AwsServer(port=port).start()


def test_the_server_does_not_outlive_a_killed_runtime() -> None:
    """SIGKILL leaves no handler to stop anything: the server sees its input end and goes,
    so the port is free for the next `tessera local up`."""
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                """
                import json, os, time
                from tessera_dev.local.aws_server import AwsServer
                server = AwsServer().start()
                print(json.dumps({"pid": server._process.pid, "endpoint": server.endpoint}))
                os.sys.stdout.flush()
                time.sleep(600)
                """
            ),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert parent.stdout is not None
    started = json.loads(parent.stdout.readline())
    assert not _refuses(started["endpoint"])
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    assert _gone(started["pid"], within=10)
    assert _refuses(started["endpoint"])


def _split_queue(sqs: Any, name: str, visibility_timeout: int | None = None) -> ProvisionedQueue:
    """A queue on moto, described as the split function's (its own DLQ left out)."""
    attributes = (
        {} if visibility_timeout is None else {"VisibilityTimeout": str(visibility_timeout)}
    )
    url = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    return ProvisionedQueue(
        spec=PIPELINE.queue_for("split"), url=url, arn=arn, dlq_url=url, dlq_arn=arn
    )


def test_a_pump_runs_invocations_side_by_side() -> None:
    """Three messages, a handler that returns only once three invocations are in it at once:
    with three pollers all succeed; one at a time, each would time out and fail."""
    with mock_aws():
        sqs = boto3.client("sqs", region_name="us-east-1")
        queue = _split_queue(sqs, "tessera-side-by-side")
        together = threading.Barrier(3, timeout=10)

        def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
            together.wait()
            return {"batchItemFailures": []}

        pump = EventPump(sqs=sqs, queue=queue, handler=handler, region="us-east-1", concurrency=3)
        for index in range(3):
            sqs.send_message(QueueUrl=queue.url, MessageBody=json.dumps({"n": index}))
        pump.start()
        deadline = time.monotonic() + 30
        while pump.stats.succeeded + pump.stats.failed < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
        pump.stop()
        pump.join(timeout=10)
    assert (pump.stats.succeeded, pump.stats.failed, pump.stats.in_flight) == (3, 0, 0)


def test_a_long_invocation_keeps_its_message_from_the_other_pollers() -> None:
    """A 2 s visibility timeout and a 5 s invocation: without the pump's lease a second poller
    would get the message again after two seconds and do the work twice."""
    with mock_aws():
        sqs = boto3.client("sqs", region_name="us-east-1")
        queue = _split_queue(sqs, "tessera-lease", visibility_timeout=2)
        calls: list[str] = []

        def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
            calls.extend(record["messageId"] for record in event["Records"])
            time.sleep(5)
            return {"batchItemFailures": []}

        pump = EventPump(
            sqs=sqs,
            queue=queue,
            handler=handler,
            region="us-east-1",
            concurrency=3,
            visibility_timeout=2,
        )
        sqs.send_message(QueueUrl=queue.url, MessageBody="{}")
        pump.start()
        deadline = time.monotonic() + 30
        while pump.stats.succeeded < 1 and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(2.5)  # a redelivery would have been picked up by now
        pump.stop()
        pump.join(timeout=10)
    assert len(calls) == 1 and pump.stats.succeeded == 1
