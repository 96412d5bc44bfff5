"""Operations: alarms on what someone must act on, all routed to the alarm topic; outputs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from aws_cdk.assertions import Template

from infra.app import build_app
from tessera.config import PIPELINE
from tests.infra.conftest import ALARM_EMAIL, TEST_CONTEXT, Synthesized
from tests.infra.infra_template_tools import logical_id, only, render, resources


def _alarms(template: Template) -> list[dict[str, Any]]:
    return [a["Properties"] for a in resources(template, "AWS::CloudWatch::Alarm").values()]


def _dimension(alarm: dict[str, Any], name: str) -> Any:
    return next(d["Value"] for d in alarm.get("Dimensions", []) if d["Name"] == name)


@pytest.mark.parametrize("spec", PIPELINE.queues, ids=lambda spec: spec.function)
def test_a_message_in_a_dead_letter_queue_raises_an_alarm(template: Template, spec: Any) -> None:
    dlq_id, _ = only(template, "AWS::SQS::Queue", QueueName=spec.dlq_name)
    (alarm,) = [
        a
        for a in _alarms(template)
        if a["MetricName"] == "ApproximateNumberOfMessagesVisible"
        and _dimension(a, "QueueName") == {"Fn::GetAtt": [dlq_id, "QueueName"]}
    ]
    assert alarm["Threshold"] == 1
    assert alarm["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"


@pytest.mark.parametrize("function", ["split", "vectorize", "inference", "batch_predict"])
@pytest.mark.parametrize("metric", ["Errors", "Throttles"])
def test_function_errors_and_throttles_raise_alarms(
    template: Template, function: str, metric: str
) -> None:
    function_id, _ = only(
        template, "AWS::Lambda::Function", Handler=f"functions.{function}.handler.lambda_handler"
    )
    assert [
        a
        for a in _alarms(template)
        if a["MetricName"] == metric and _dimension(a, "FunctionName") == {"Ref": function_id}
    ]


@pytest.mark.parametrize("metric", ["5XXError", "Latency"])
def test_api_errors_and_latency_raise_alarms(template: Template, metric: str) -> None:
    assert [
        a
        for a in _alarms(template)
        if a["Namespace"] == "AWS/ApiGateway" and a["MetricName"] == metric
    ]


def test_failed_training_raises_an_alarm_and_sends_the_execution(
    synthesized: Synthesized,
) -> None:
    workflow_id = logical_id(synthesized.stack.training.state_machine)
    assert [a for a in _alarms(synthesized.template) if a["MetricName"] == "ExecutionsFailed"]
    topic_id = logical_id(synthesized.stack.monitoring.alarm_topic)
    (rule,) = [
        r["Properties"]
        for r in resources(synthesized.template, "AWS::Events::Rule").values()
        if "EventPattern" in r["Properties"]
    ]
    assert rule["EventPattern"]["detail"]["stateMachineArn"] == [{"Ref": workflow_id}]
    assert "FAILED" in rule["EventPattern"]["detail"]["status"]
    assert rule["Targets"][0]["Arn"] == {"Ref": topic_id}


def test_every_alarm_notifies_the_alarm_topic(synthesized: Synthesized) -> None:
    topic = {"Ref": logical_id(synthesized.stack.monitoring.alarm_topic)}
    alarms = _alarms(synthesized.template)
    assert len(alarms) >= 3 * len(PIPELINE.queues)
    assert all(a["AlarmActions"] == [topic] for a in alarms)


def test_the_alarm_topic_mails_the_address_from_context(template: Template) -> None:
    template.has_resource_properties(
        "AWS::SNS::Subscription", {"Protocol": "email", "Endpoint": ALARM_EMAIL}
    )


def test_a_dashboard_is_deployed(template: Template) -> None:
    template.resource_count_is("AWS::CloudWatch::Dashboard", 1)


@pytest.mark.parametrize(
    "output", ["BucketName", "ApiUrl", "ApiKeyId", "TrainingStateMachineArn", "AlarmTopicArn"]
)
def test_the_stack_outputs_what_the_deploy_guide_uses(template: Template, output: str) -> None:
    assert output in template.find_outputs("*")


def _topic_statements(synthesized: Synthesized) -> list[dict[str, Any]]:
    topic = {"Ref": logical_id(synthesized.stack.monitoring.alarm_topic)}
    (policy,) = [
        p["Properties"]
        for p in resources(synthesized.template, "AWS::SNS::TopicPolicy").values()
        if topic in p["Properties"]["Topics"]
    ]
    statements: list[dict[str, Any]] = policy["PolicyDocument"]["Statement"]
    return statements


def _service(statement: dict[str, Any]) -> str | None:
    principal = statement.get("Principal")
    return principal.get("Service") if isinstance(principal, dict) else None


def test_cloudwatch_may_publish_this_stacks_alarms_to_the_topic(synthesized: Synthesized) -> None:
    # GIVEN the explicit topic policy enforce_ssl makes CDK write (it replaces the default one)
    statements = _topic_statements(synthesized)
    # THEN CloudWatch may publish, for this account's alarms named like this stack's only
    (cloudwatch,) = [s for s in statements if _service(s) == "cloudwatch.amazonaws.com"]
    assert cloudwatch["Effect"] == "Allow" and cloudwatch["Action"] == "sns:Publish"
    assert cloudwatch["Condition"]["StringEquals"] == {
        "aws:SourceAccount": {"Ref": "AWS::AccountId"}
    }
    assert render(cloudwatch["Condition"]["ArnLike"]["aws:SourceArn"]).endswith(":alarm:tessera-*")
    names = [a["AlarmName"] for a in _alarms(synthesized.template)]
    assert names and all(name.startswith("tessera-") for name in names)


def test_eventbridge_may_publish_only_for_its_rule(synthesized: Synthesized) -> None:
    statements = _topic_statements(synthesized)
    events = [s for s in statements if _service(s) == "events.amazonaws.com"]
    # THEN there is one EventBridge statement, and it names the training-failures rule
    assert len(events) == 1
    assert set(events[0]["Condition"]["ArnEquals"]) == {"aws:SourceArn"}
    assert "GetAtt" in json.dumps(events[0]["Condition"]["ArnEquals"]["aws:SourceArn"])
    # AND every Allow is conditioned: no service may publish for another account's resources
    assert all("Condition" in s for s in statements if s["Effect"] == "Allow")


def test_a_deploy_with_no_subscriber_says_so(tmp_path: Path) -> None:
    # GIVEN a stack synthesized without tessera:alarm_email
    app, stack = build_app(
        context={**TEST_CONTEXT, "tessera:alarm_email": ""}, outdir=str(tmp_path), nag=False
    )
    assembly = app.synth()
    # THEN a stack output and a synth-time warning both say alarms reach no one
    outputs = Template.from_stack(stack).find_outputs("AlarmSubscribers")
    assert "NONE" in json.dumps(outputs)
    messages = [
        str(m.entry.data)
        for artifact in assembly.stacks
        for m in artifact.messages
        if m.level.name == "WARNING"
    ]
    assert any("alarm topic has no subscriber" in m for m in messages)
    assert not resources(Template.from_stack(stack), "AWS::SNS::Subscription")
