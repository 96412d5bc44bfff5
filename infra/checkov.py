"""Checkov's findings on the template that stand by design, each skipped with its reason beside
the resource (a `checkov` Metadata entry), like the cdk-nag acknowledgements. `make synth` runs
checkov and fails on any finding without one."""

from __future__ import annotations

from typing import Any

import jsii
from aws_cdk import CfnResource, IAspect
from aws_cdk import aws_lambda as lambda_
from constructs import IConstruct

# Why each skipped check does not apply, by the resource type it is skipped on.
REASONS: dict[str, dict[str, str]] = {
    "AWS::Lambda::Function": {
        "CKV_AWS_116": "A Lambda DLQ catches failed asynchronous invocations only; these "
        "functions are invoked by SQS event sources (each queue has its own DLQ), by API "
        "Gateway synchronously, or by CloudFormation during deployment.",
        "CKV_AWS_117": "No VPC: the functions reach only S3 and SQS, over TLS with IAM; a VPC "
        "would need a NAT gateway or interface endpoints (about $33 or $7 a month each) and "
        "adds nothing to reach private resources, of which there are none.",
        "CKV_AWS_173": "The environment holds the bucket name, model name and log level, no "
        "secret; Lambda encrypts it at rest with an AWS-managed key.",
    },
    "AWS::Logs::LogGroup": {
        "CKV_AWS_158": "CloudWatch Logs encrypts every log group at rest; a customer key adds "
        "$1 a month and key grants, and these logs carry keys, codes and timings, never users' "
        "images (bodies are not logged).",
    },
    "AWS::ApiGateway::Stage": {
        "CKV_AWS_120": "No response cache: every prediction is for a different image, and a "
        "cache would keep users' results (and bill $0.02 an hour from the smallest size).",
    },
    "AWS::S3::Bucket": {
        "CKV_AWS_18": "This is the access-log bucket: logging it into itself would loop.",
    },
    "AWS::SNS::Topic": {
        "CKV_AWS_26": "Alarm notifications carry resource names and states, no pipeline data; a "
        "customer key would need grants for CloudWatch and EventBridge and cost $1 a month.",
    },
    "AWS::SQS::Queue": {
        "CKV_AWS_27": "Encrypted with SSE-SQS (SqsManagedSseEnabled), which checkov does not "
        "count; S3 event notifications cannot publish to a queue under the aws/sqs KMS key.",
    },
}
CONCURRENCY_REASON = (
    "Concurrency is capped where these functions are driven: the SQS event source's maximum "
    "concurrency (tessera.config), or CloudFormation during deployment; reserved concurrency "
    "would take from the account's pool instead."
)


def skip(resource: CfnResource, check: str, reason: str) -> None:
    """Record a checkov skip with its reason in the resource's metadata."""
    existing: Any = resource.get_metadata("checkov") or {}
    skips = [entry for entry in existing.get("skip", []) if entry.get("id") != check]
    resource.add_metadata("checkov", {"skip": [*skips, {"id": check, "comment": reason}]})


@jsii.implements(IAspect)
class CheckovJustifications:
    """Applies `REASONS` to every resource of the listed types, CDK's own included."""

    def visit(self, node: IConstruct) -> None:
        if not isinstance(node, CfnResource):
            return
        for check, reason in REASONS.get(node.cfn_resource_type, {}).items():
            skip(node, check, reason)
        if node.cfn_resource_type == "AWS::Lambda::Function":
            reserved = (
                node.reserved_concurrent_executions
                if isinstance(node, lambda_.CfnFunction)
                else None
            )
            if reserved is None:
                skip(node, "CKV_AWS_115", CONCURRENCY_REASON)
