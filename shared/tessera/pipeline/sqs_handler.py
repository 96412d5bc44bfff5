"""The Lambda handler every pipeline step runs behind: S3 notifications arrive through SQS, each
object named goes through the step, and only failed messages are reported for retry."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote_plus

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from tessera.pipeline.outcome import Outcome
from tessera.storage import ObjectStore
from tessera.storage.s3 import S3ObjectStore

Step = Callable[[ObjectStore, str], Outcome]
Handler = Callable[[dict[str, Any], LambdaContext], dict[str, Any]]


def s3_objects_in(record: SQSRecord) -> list[tuple[str, str]]:
    """(bucket, key) for each S3 record in an SQS message; none for S3's s3:TestEvent.

    S3 url-encodes keys in notifications (a space arrives as '+'), hence unquote_plus.
    """
    message = json.loads(record.body)
    if message.get("Event") == "s3:TestEvent":
        return []
    return [
        (item["s3"]["bucket"]["name"], unquote_plus(item["s3"]["object"]["key"]))
        for item in message.get("Records", [])
    ]


def s3_queue_handler(step: Step, *, service: str) -> Handler:
    """A Lambda handler that runs `step` on every object named in an SQS batch of S3 events,
    reporting failed messages so only they are retried."""
    logger = Logger(service=service)

    def record_handler(record: SQSRecord) -> None:
        objects = s3_objects_in(record)
        if not objects:
            logger.info("skipping S3 test event", extra={"message_id": record.message_id})
        for bucket, key in objects:
            outcome = step(S3ObjectStore(bucket=bucket), key)
            logger.info(
                outcome.status,
                # nested, so that detail keys such as "message" cannot clash with the log record's
                extra={"key": key, "message_id": record.message_id, "detail": outcome.detail},
            )

    @logger.inject_lambda_context
    def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
        # A processor per invocation: it holds the batch's records and outcomes, and the local
        # runtime, unlike Lambda, runs invocations of one function side by side in a process.
        processor = BatchProcessor(event_type=EventType.SQS)
        return dict(
            process_partial_response(
                event=event, record_handler=record_handler, processor=processor, context=context
            )
        )

    return lambda_handler
