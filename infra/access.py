"""Bucket access scoped to key prefixes, with the cdk-nag acknowledgement each scope needs."""

from __future__ import annotations

from collections.abc import Sequence

from aws_cdk import Acknowledgment, CfnResource, Stack, Validations
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3
from constructs import IConstruct


def wildcard_resource_ack(scope: IConstruct, resource: str, reason: str) -> None:
    """Acknowledge AwsSolutions-IAM5 for exactly one wildcard resource, never for the whole rule."""
    Validations.of(scope).acknowledge(
        Acknowledgment(id=f"AwsSolutions::AwsSolutions-IAM5[Resource::{resource}]", reason=reason)
    )


def bucket_arn_placeholder(bucket: s3.IBucket) -> str:
    """How cdk-nag spells the bucket's ARN in a finding: `<LogicalId.Arn>`."""
    cfn_bucket = bucket.node.default_child
    assert isinstance(cfn_bucket, CfnResource)
    stack = Stack.of(bucket)
    return f"<{stack.resolve(stack.get_logical_id(cfn_bucket))}.Arn>"


def grant_prefixes(
    *,
    bucket: s3.IBucket,
    grantee: iam.IGrantable,
    acknowledge_on: IConstruct,
    read: Sequence[str] = (),
    write: Sequence[str] = (),
    delete: Sequence[str] = (),
) -> None:
    """Let `grantee` read objects under `read` prefixes, write objects under `write` prefixes
    and delete objects under `delete` prefixes.

    Object actions are the plain GetObject/PutObject (no `s3:*Object*` families), each on
    `<bucket>/<prefix>*`. ListBucket is granted on the bucket itself: the library treats a
    missing object as "not there yet" (no champion, no row), and S3 answers 404 instead of 403
    only to principals that may list the bucket. That exposes key names, never object contents.
    """
    statements = [
        iam.PolicyStatement(actions=["s3:ListBucket"], resources=[bucket.bucket_arn]),
    ]
    for actions, prefixes in (
        (["s3:GetObject"], read),
        (["s3:PutObject"], write),
        (["s3:DeleteObject"], delete),
    ):
        if prefixes:
            statements.append(
                iam.PolicyStatement(
                    actions=actions,
                    resources=[bucket.arn_for_objects(f"{prefix}*") for prefix in prefixes],
                )
            )
    for statement in statements:
        grantee.grant_principal.add_to_principal_policy(statement)

    placeholder = bucket_arn_placeholder(bucket)
    for prefix in sorted({*read, *write, *delete}):
        wildcard_resource_ack(
            acknowledge_on,
            f"{placeholder}/{prefix}*",
            f"Object access is scoped to the {prefix} prefix this component owns or consumes; "
            "object keys below it are generated at run time, so they cannot be listed one by one.",
        )
