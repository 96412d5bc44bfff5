"""The pipeline bucket: private, encrypted, TLS-only, versioned, with lifecycle rules."""

from __future__ import annotations

from typing import Any

from aws_cdk.assertions import Match, Template

from tessera.config import PIPELINE
from tests.infra.conftest import Synthesized
from tests.infra.infra_template_tools import logical_id, resources


def _pipeline_bucket(synthesized: Synthesized) -> dict[str, Any]:
    bucket_id = logical_id(synthesized.stack.storage.bucket)
    properties: dict[str, Any] = resources(synthesized.template, "AWS::S3::Bucket")[bucket_id][
        "Properties"
    ]
    return properties


def test_every_bucket_blocks_public_access_and_is_encrypted(template: Template) -> None:
    buckets = resources(template, "AWS::S3::Bucket")
    assert len(buckets) == 2
    for bucket in buckets.values():
        props = bucket["Properties"]
        assert props["PublicAccessBlockConfiguration"] == {
            "BlockPublicAcls": True,
            "BlockPublicPolicy": True,
            "IgnorePublicAcls": True,
            "RestrictPublicBuckets": True,
        }
        (rule,) = props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
        assert rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"


def test_every_bucket_policy_denies_requests_without_tls(template: Template) -> None:
    policies = resources(template, "AWS::S3::BucketPolicy")
    assert len(policies) == 2
    for policy in policies.values():
        statements = policy["Properties"]["PolicyDocument"]["Statement"]
        assert any(
            s["Effect"] == "Deny" and s["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
            for s in statements
        )


def test_pipeline_bucket_is_versioned_and_logs_access(synthesized: Synthesized) -> None:
    props = _pipeline_bucket(synthesized)
    assert props["VersioningConfiguration"] == {"Status": "Enabled"}
    assert props["LoggingConfiguration"]["DestinationBucketName"] == {
        "Ref": logical_id(synthesized.stack.storage.access_logs)
    }


def test_tiles_and_quarantine_expire_by_prefix(synthesized: Synthesized) -> None:
    rules = {
        rule.get("Prefix"): rule
        for rule in _pipeline_bucket(synthesized)["LifecycleConfiguration"]["Rules"]
    }
    for prefix in (PIPELINE.prefixes.tiles, PIPELINE.prefixes.quarantine):
        assert rules[prefix]["Status"] == "Enabled"
        assert rules[prefix]["ExpirationInDays"] > 0
    # Nothing else is deleted by age: sheets, datasets and models stay.
    assert set(rules) == {PIPELINE.prefixes.tiles, PIPELINE.prefixes.quarantine, None}
    assert "ExpirationInDays" not in rules[None]
    assert rules[None]["NoncurrentVersionExpiration"]["NoncurrentDays"] > 0


def test_data_is_retained_when_the_stack_is_deleted_by_default(template: Template) -> None:
    template.all_resources("AWS::S3::Bucket", Match.object_like({"DeletionPolicy": "Retain"}))
