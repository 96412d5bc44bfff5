"""A bucket prefix feeding a function through SQS, with a dead-letter queue for poison messages."""

from __future__ import annotations

from collections.abc import Mapping

from aws_cdk import Duration
from aws_cdk import aws_lambda_event_sources as event_sources
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_s3_notifications as s3n
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from infra.function import PipelineFunction
from tessera.config import QueueSpec

DLQ_RETENTION = Duration.days(14)  # the SQS maximum: time to notice, fix and redrive
QUEUE_RETENTION = Duration.days(4)


class QueueFedFunction(Construct):
    """`s3:ObjectCreated:*` under `spec.prefix` -> queue (+DLQ) -> function, as `spec` describes.

    The event source reports batch item failures, so a failed record is retried alone and, after
    `spec.max_receive_count` receives, parked in the DLQ while the rest of the batch succeeds. The
    visibility timeout is six times the function timeout (AWS guidance), so a retried batch is
    not delivered again while an earlier attempt may still be running.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        spec: QueueSpec,
        bucket: s3.IBucket,
        environment: Mapping[str, str],
        bundle_dependencies: bool,
    ) -> None:
        super().__init__(scope, construct_id)
        self.spec = spec
        self.dead_letter_queue = sqs.Queue(
            self,
            "DeadLetterQueue",
            queue_name=spec.dlq_name,
            retention_period=DLQ_RETENTION,
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
        )
        self.queue = sqs.Queue(
            self,
            "Queue",
            queue_name=spec.name,
            visibility_timeout=Duration.seconds(spec.visibility_timeout_seconds),
            retention_period=QUEUE_RETENTION,
            # SSE-SQS, not KMS: S3 event notifications cannot publish to a queue encrypted with
            # the AWS-managed SQS key, and a customer key would only add cost here.
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            dead_letter_queue=sqs.DeadLetterQueue(
                queue=self.dead_letter_queue, max_receive_count=spec.max_receive_count
            ),
        )
        self.handler = PipelineFunction(
            self,
            "Handler",
            function=spec.function,
            memory_mb=spec.function_memory_mb,
            timeout=Duration.seconds(spec.function_timeout_seconds),
            environment=environment,
            bundle_dependencies=bundle_dependencies,
        )
        self.function = self.handler.function
        self.function.add_event_source(
            event_sources.SqsEventSource(
                self.queue,
                batch_size=spec.batch_size,
                max_batching_window=(
                    Duration.seconds(spec.max_batching_window_seconds)
                    if spec.max_batching_window_seconds
                    else None
                ),
                report_batch_item_failures=True,
                max_concurrency=spec.max_concurrency,
            )
        )
        for key_filter in _key_filters(spec):
            bucket.add_event_notification(
                s3.EventType.OBJECT_CREATED, s3n.SqsDestination(self.queue), key_filter
            )


def _key_filters(spec: QueueSpec) -> list[s3.NotificationKeyFilter]:
    if not spec.suffixes:
        return [s3.NotificationKeyFilter(prefix=spec.prefix)]
    return [s3.NotificationKeyFilter(prefix=spec.prefix, suffix=s) for s in spec.suffixes]
