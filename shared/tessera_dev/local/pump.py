"""Plays Lambda's SQS event-source mapping: receive a batch, call the handler in-process with
the real SQS event shape, delete what succeeded, leave failures for retry and redrive."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, cast

from aws_lambda_powertools.utilities.typing import LambdaContext

from tessera_dev.local.resources import LOCAL_VISIBILITY_TIMEOUT_SECONDS, ProvisionedQueue

log = logging.getLogger("tessera_dev.local.pump")
Handler = Callable[[dict[str, Any], Any], dict[str, Any]]


@dataclass
class LocalLambdaContext:
    """The attributes of Lambda's context object that handlers and Powertools read."""

    function_name: str
    memory_limit_in_mb: int = 1024
    timeout_seconds: int = 60
    function_version: str = "$LATEST"
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    log_group_name: str = "/aws/lambda/local"
    log_stream_name: str = "local"
    _deadline: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        self._deadline = time.monotonic() + self.timeout_seconds

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:us-east-1:123456789012:function:{self.function_name}"

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def lambda_context(function_name: str, **settings: Any) -> LambdaContext:
    """A local context typed as the Lambda context handlers are written against."""
    return cast(LambdaContext, LocalLambdaContext(function_name=function_name, **settings))


def sqs_event(messages: list[dict[str, Any]], *, queue_arn: str, region: str) -> dict[str, Any]:
    return {
        "Records": [
            {
                "messageId": message["MessageId"],
                "receiptHandle": message["ReceiptHandle"],
                "body": message["Body"],
                "attributes": message.get("Attributes", {}),
                "messageAttributes": message.get("MessageAttributes", {}),
                "md5OfBody": message.get("MD5OfBody")
                or hashlib.md5(message["Body"].encode()).hexdigest(),
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": region,
            }
            for message in messages
        ]
    }


def _entries(messages: list[dict[str, Any]]) -> list[dict[str, str]]:
    """The batch calls' entries (delete, change visibility) naming these received messages."""
    return [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)]


@dataclass
class PumpStats:
    batches: int = 0
    succeeded: int = 0
    failed: int = 0
    in_flight: int = 0


class EventPump(threading.Thread):
    """One queue's event-source mapping. Lambda runs up to the mapping's maximum concurrency
    of invocations at once; the pump runs `concurrency` pollers, each one batch at a time,
    so one sheet's waits on S3 overlap another's work as they do deployed."""

    def __init__(
        self,
        *,
        sqs: Any,
        queue: ProvisionedQueue,
        handler: Handler,
        region: str,
        concurrency: int = 1,
        visibility_timeout: int = LOCAL_VISIBILITY_TIMEOUT_SECONDS,
    ) -> None:
        super().__init__(name=f"pump-{queue.spec.function}", daemon=True)
        self.sqs = sqs
        self.queue = queue
        self.handler = handler
        self.region = region
        self.concurrency = max(1, concurrency)
        self.visibility_timeout = visibility_timeout
        self.stats = PumpStats()
        self._stats_lock = threading.Lock()
        self._stop_event = threading.Event()

    def stop(self) -> None:
        self._stop_event.set()

    def run(self) -> None:
        pollers = [
            threading.Thread(target=self._poll, name=f"{self.name}-{index}", daemon=True)
            for index in range(1, self.concurrency)
        ]
        for poller in pollers:
            poller.start()
        self._poll()
        for poller in pollers:
            poller.join()

    def _poll(self) -> None:
        while not self._stop_event.is_set():
            try:
                self.poll_once(wait_seconds=1)
            except Exception:  # the pump must outlive any one bad batch, as Lambda's does
                log.exception("event pump for %s failed a poll", self.queue.spec.name)
                time.sleep(0.5)

    def poll_once(self, *, wait_seconds: int = 0) -> int:
        response = self.sqs.receive_message(
            QueueUrl=self.queue.url,
            MaxNumberOfMessages=min(self.queue.spec.batch_size, 10),
            WaitTimeSeconds=wait_seconds,
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
        )
        messages = response.get("Messages", [])
        if not messages:
            return 0
        with self._stats_lock:
            self.stats.in_flight += len(messages)
        try:
            with self._kept_invisible(messages):
                failed = self._invoke(messages)
        finally:
            with self._stats_lock:
                self.stats.in_flight -= len(messages)
        done = [m for m in messages if m["MessageId"] not in failed]
        if done:
            self.sqs.delete_message_batch(QueueUrl=self.queue.url, Entries=_entries(done))
        with self._stats_lock:
            self.stats.batches += 1
            self.stats.succeeded += len(done)
            self.stats.failed += len(failed)
        return len(messages)

    @contextlib.contextmanager
    def _kept_invisible(self, messages: list[dict[str, Any]]) -> Iterator[None]:
        """While the handler runs, its messages stay invisible to the other pollers. Deployed,
        the visibility timeout is six times the function's timeout, so a message never comes
        back while its invocation lives; locally it is seconds (failures come back fast), so
        the pump extends it, up to the function's timeout, as a live invocation's lease."""
        done = threading.Event()
        entries = _entries(messages)

        def extend() -> None:
            deadline = time.monotonic() + self.queue.spec.function_timeout_seconds
            while not done.wait(self.visibility_timeout / 2) and time.monotonic() < deadline:
                try:
                    self.sqs.change_message_visibility_batch(
                        QueueUrl=self.queue.url,
                        Entries=[
                            {**e, "VisibilityTimeout": self.visibility_timeout} for e in entries
                        ],
                    )
                except Exception:  # the lease is best effort: a redelivery is idempotent
                    log.warning("could not extend the visibility of a %s batch", self.name)

        lease = threading.Thread(target=extend, name=f"{self.name}-lease", daemon=True)
        lease.start()
        try:
            yield
        finally:
            done.set()
            lease.join()

    def _invoke(self, messages: list[dict[str, Any]]) -> set[str]:
        """Message ids the handler reported as failed (all of them if it raised)."""
        event = sqs_event(messages, queue_arn=self.queue.arn, region=self.region)
        context = LocalLambdaContext(
            function_name=self.queue.spec.function,
            memory_limit_in_mb=self.queue.spec.function_memory_mb,
            timeout_seconds=self.queue.spec.function_timeout_seconds,
        )
        try:
            result = self.handler(event, context) or {}
        except Exception:
            log.exception("%s failed a whole batch; it will be retried", self.queue.spec.function)
            return {m["MessageId"] for m in messages}
        return {item["itemIdentifier"] for item in result.get("batchItemFailures", [])}
