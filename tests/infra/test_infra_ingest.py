"""Ingest wiring: bucket prefix -> queue (+DLQ) -> function, exactly as PIPELINE.queues says."""

from __future__ import annotations

from typing import Any

import pytest
from aws_cdk.assertions import Match, Template

from tessera.config import PIPELINE, QueueSpec
from tests.infra.conftest import Synthesized
from tests.infra.infra_template_tools import logical_id, only, render, resources

QUEUES = {spec.function: spec for spec in PIPELINE.queues}


def _notifications(template: Template) -> list[dict[str, Any]]:
    (notifications,) = resources(template, "Custom::S3BucketNotifications").values()
    configurations: list[dict[str, Any]] = notifications["Properties"]["NotificationConfiguration"][
        "QueueConfigurations"
    ]
    return configurations


def _filter_rules(configuration: dict[str, Any]) -> dict[str, str]:
    return {rule["Name"]: rule["Value"] for rule in configuration["Filter"]["Key"]["FilterRules"]}


@pytest.mark.parametrize("spec", PIPELINE.queues, ids=lambda spec: spec.function)
def test_objects_created_under_the_prefix_notify_the_queue(
    template: Template, spec: QueueSpec
) -> None:
    # GIVEN the queue built for this spec
    queue_id, _ = only(template, "AWS::SQS::Queue", QueueName=spec.name)

    # WHEN we look at the bucket notifications that target it
    configurations = [
        c for c in _notifications(template) if render(c["QueueArn"]) == f"<{queue_id}.Arn>"
    ]

    # THEN object creation under the spec's prefix (and suffixes, if any) reaches it
    expected = [{"prefix": spec.prefix, "suffix": s} for s in spec.suffixes] or [
        {"prefix": spec.prefix}
    ]
    assert sorted(_filter_rules(c).items() for c in configurations) == sorted(
        e.items() for e in expected
    )
    assert all(c["Events"] == ["s3:ObjectCreated:*"] for c in configurations)


def test_no_notification_fires_for_a_prefix_outside_the_config(template: Template) -> None:
    prefixes = {_filter_rules(c)["prefix"] for c in _notifications(template)}
    assert prefixes == {spec.prefix for spec in PIPELINE.queues}


@pytest.mark.parametrize("spec", PIPELINE.queues, ids=lambda spec: spec.function)
def test_each_queue_sends_poison_messages_to_its_dead_letter_queue(
    template: Template, spec: QueueSpec
) -> None:
    dlq_id, _ = only(template, "AWS::SQS::Queue", QueueName=spec.dlq_name)
    _, queue = only(template, "AWS::SQS::Queue", QueueName=spec.name)

    redrive = queue["Properties"]["RedrivePolicy"]
    assert redrive["maxReceiveCount"] == spec.max_receive_count
    assert render(redrive["deadLetterTargetArn"]) == f"<{dlq_id}.Arn>"


@pytest.mark.parametrize("spec", PIPELINE.queues, ids=lambda spec: spec.function)
def test_visibility_timeout_is_six_times_the_function_timeout_plus_the_window(
    template: Template, spec: QueueSpec
) -> None:
    _, queue = only(template, "AWS::SQS::Queue", QueueName=spec.name)
    _, function = only(template, "AWS::Lambda::Function", Handler=_handler(spec))

    timeout = function["Properties"]["Timeout"]
    assert timeout == spec.function_timeout_seconds
    window = spec.max_batching_window_seconds
    assert queue["Properties"]["VisibilityTimeout"] >= 6 * timeout + window
    assert function["Properties"]["MemorySize"] == spec.function_memory_mb


@pytest.mark.parametrize("spec", PIPELINE.queues, ids=lambda spec: spec.function)
def test_the_function_reads_its_queue_and_reports_batch_item_failures(
    template: Template, spec: QueueSpec
) -> None:
    queue_id, _ = only(template, "AWS::SQS::Queue", QueueName=spec.name)
    function_id, _ = only(template, "AWS::Lambda::Function", Handler=_handler(spec))

    mapping = {
        "EventSourceArn": {"Fn::GetAtt": [queue_id, "Arn"]},
        "FunctionName": {"Ref": function_id},
        "BatchSize": spec.batch_size,
        "FunctionResponseTypes": ["ReportBatchItemFailures"],
    }
    if spec.max_batching_window_seconds:
        mapping["MaximumBatchingWindowInSeconds"] = spec.max_batching_window_seconds
    template.resource_count_is("AWS::Lambda::EventSourceMapping", len(PIPELINE.queues))
    template.has_resource_properties("AWS::Lambda::EventSourceMapping", mapping)


@pytest.mark.parametrize("spec", PIPELINE.queues, ids=lambda spec: spec.function)
def test_queues_are_encrypted_and_refuse_plain_http(template: Template, spec: QueueSpec) -> None:
    for name in (spec.name, spec.dlq_name):
        queue_id, queue = only(template, "AWS::SQS::Queue", QueueName=name)
        assert queue["Properties"]["SqsManagedSseEnabled"] is True
        template.has_resource_properties(
            "AWS::SQS::QueuePolicy",
            {
                "Queues": Match.array_with([{"Ref": queue_id}]),
                "PolicyDocument": {
                    "Statement": Match.array_with(
                        [
                            Match.object_like(
                                {
                                    "Effect": "Deny",
                                    "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                                }
                            )
                        ]
                    )
                },
            },
        )


@pytest.mark.parametrize("function", ["split", "vectorize", "inference", "batch_predict"])
def test_functions_run_the_handler_from_the_bundle_with_the_pipeline_settings(
    synthesized: Synthesized, function: str
) -> None:
    _, resource = only(
        synthesized.template,
        "AWS::Lambda::Function",
        Handler=f"functions.{function}.handler.lambda_handler",
    )
    props = resource["Properties"]
    bucket_id = logical_id(synthesized.stack.storage.bucket)
    assert props["Runtime"] == "python3.12"
    assert props["Architectures"] == ["x86_64"]
    assert props["TracingConfig"] == {"Mode": "Active"}
    environment = props["Environment"]["Variables"]
    assert environment["TESSERA_BUCKET"] == {"Ref": bucket_id}
    assert environment["TESSERA_MODEL_NAME"] == PIPELINE.default_dataset
    assert environment["TESSERA_CHAMPION_TTL_SECONDS"] == str(PIPELINE.champion_ttl_seconds)
    assert environment["POWERTOOLS_SERVICE_NAME"] == function


def _handler(spec: QueueSpec) -> str:
    return f"functions.{spec.function}.handler.lambda_handler"


@pytest.mark.parametrize("spec", PIPELINE.queues, ids=lambda s: s.function)
def test_each_queue_caps_how_many_functions_it_drives(template: Template, spec: Any) -> None:
    function_id, _ = only(template, "AWS::Lambda::Function", Handler=_handler(spec))
    mappings = [
        m["Properties"]
        for m in resources(template, "AWS::Lambda::EventSourceMapping").values()
        if m["Properties"]["FunctionName"] == {"Ref": function_id}
    ]
    assert len(mappings) == 1
    assert mappings[0]["ScalingConfig"] == {"MaximumConcurrency": spec.max_concurrency}


def test_the_api_function_has_reserved_concurrency(synthesized: Synthesized) -> None:
    function_id = logical_id(synthesized.stack.serving.inference.function)
    props = resources(synthesized.template, "AWS::Lambda::Function")[function_id]["Properties"]
    assert props["ReservedConcurrentExecutions"] == PIPELINE.inference_reserved_concurrency
