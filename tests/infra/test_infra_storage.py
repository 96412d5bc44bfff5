"""The pipeline bucket: private, encrypted, TLS-only, versioned, with lifecycle rules."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aws_cdk.assertions import Match, Template

from infra.app import build_app
from tessera.config import PIPELINE
from tests.infra.conftest import TEST_CONTEXT, Synthesized
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


def test_users_images_tiles_and_quarantine_expire_by_prefix(synthesized: Synthesized) -> None:
    rules = {
        rule.get("Prefix"): rule
        for rule in _pipeline_bucket(synthesized)["LifecycleConfiguration"]["Rules"]
    }
    P = PIPELINE.prefixes
    for prefix in (P.tiles, P.quarantine, P.incoming_train, P.incoming_predict, P.predictions):
        assert rules[prefix]["Status"] == "Enabled"
        assert rules[prefix]["ExpirationInDays"] > 0
    # Users' uploads and predictions are kept for the retention setting (default documented).
    for prefix in (P.incoming_train, P.incoming_predict, P.predictions):
        assert rules[prefix]["ExpirationInDays"] == PIPELINE.retention_days
    # Nothing else is deleted by age: datasets, models and run records stay.
    expected = {P.tiles, P.quarantine, P.incoming_train, P.incoming_predict, P.predictions, None}
    assert set(rules) == expected
    assert "ExpirationInDays" not in rules[None]
    assert rules[None]["NoncurrentVersionExpiration"]["NoncurrentDays"] > 0


def test_retention_comes_from_context(tmp_path: Path) -> None:
    app, stack = build_app(
        context={**TEST_CONTEXT, "tessera:retention_days": "7"}, outdir=str(tmp_path), nag=False
    )
    app.synth()
    bucket_id = logical_id(stack.storage.bucket)
    rules = resources(Template.from_stack(stack), "AWS::S3::Bucket")[bucket_id]["Properties"][
        "LifecycleConfiguration"
    ]["Rules"]
    days = {r.get("Prefix"): r.get("ExpirationInDays") for r in rules}
    assert days[PIPELINE.prefixes.incoming_train] == 7
    assert days[PIPELINE.prefixes.predictions] == 7


def test_the_access_log_bucket_is_versioned(synthesized: Synthesized) -> None:
    logs_id = logical_id(synthesized.stack.storage.access_logs)
    props = resources(synthesized.template, "AWS::S3::Bucket")[logs_id]["Properties"]
    assert props["VersioningConfiguration"] == {"Status": "Enabled"}


def test_data_is_retained_when_the_stack_is_deleted_by_default(template: Template) -> None:
    template.all_resources("AWS::S3::Bucket", Match.object_like({"DeletionPolicy": "Retain"}))
