"""Creates the pipeline's bucket, queues and notifications on the local moto server, from the
same `PIPELINE` config the CDK app deploys."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tessera.config import PIPELINE, QueueSpec

# Locally a failed message comes back after seconds, not after 6x a Lambda timeout.
LOCAL_VISIBILITY_TIMEOUT_SECONDS = 5


@dataclass(frozen=True)
class ProvisionedQueue:
    spec: QueueSpec
    url: str
    arn: str
    dlq_url: str
    dlq_arn: str


def _queue_arn(sqs: Any, url: str) -> str:
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
    return str(attributes["Attributes"]["QueueArn"])


def provision(
    *,
    s3: Any,
    sqs: Any,
    bucket: str,
    visibility_timeout: int = LOCAL_VISIBILITY_TIMEOUT_SECONDS,
    before_notifications: Callable[[], object] | None = None,
) -> list[ProvisionedQueue]:
    """The bucket, queues and notifications; `before_notifications` runs once the bucket
    exists and before any upload notifies a queue (restoring objects already processed)."""
    s3.create_bucket(Bucket=bucket)
    s3.put_public_access_block(
        Bucket=bucket,
        PublicAccessBlockConfiguration={
            "BlockPublicAcls": True,
            "IgnorePublicAcls": True,
            "BlockPublicPolicy": True,
            "RestrictPublicBuckets": True,
        },
    )
    s3.put_bucket_encryption(
        Bucket=bucket,
        ServerSideEncryptionConfiguration={
            "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]
        },
    )
    queues = []
    for spec in PIPELINE.queues:
        dlq_url = sqs.create_queue(QueueName=spec.dlq_name)["QueueUrl"]
        dlq_arn = _queue_arn(sqs, dlq_url)
        url = sqs.create_queue(
            QueueName=spec.name,
            Attributes={
                "VisibilityTimeout": str(visibility_timeout),
                "RedrivePolicy": json.dumps(
                    {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": spec.max_receive_count}
                ),
            },
        )["QueueUrl"]
        queues.append(
            ProvisionedQueue(
                spec=spec, url=url, arn=_queue_arn(sqs, url), dlq_url=dlq_url, dlq_arn=dlq_arn
            )
        )

    if before_notifications is not None:
        before_notifications()
    s3.put_bucket_notification_configuration(
        Bucket=bucket,
        NotificationConfiguration={
            "QueueConfigurations": [
                {
                    "Id": queue.spec.name,
                    "QueueArn": queue.arn,
                    "Events": ["s3:ObjectCreated:*"],
                    "Filter": {"Key": {"FilterRules": _filter_rules(queue.spec)}},
                }
                for queue in queues
            ]
        },
    )
    return queues


def _filter_rules(spec: QueueSpec) -> list[dict[str, str]]:
    rules = [{"Name": "prefix", "Value": spec.prefix}]
    if spec.suffixes:
        rules.append({"Name": "suffix", "Value": spec.suffixes[0]})
    return rules
