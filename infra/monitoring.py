"""Operations: alarms routed to an SNS topic, and one dashboard for the whole pipeline."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import jsii
from aws_cdk import Annotations, ArnFormat, Duration, Stack
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_cloudwatch as cw
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_events as events
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk.interfaces.aws_events import IRuleRef
from constructs import Construct

from infra.queued import QueueFedFunction
from tessera.config import PIPELINE

PERIOD = Duration.minutes(5)
ALARM_NAME_PREFIX = f"{PIPELINE.project}-"
API_LATENCY_P99_MS = 5_000
API_5XX_PER_PERIOD = 5


class Monitoring(Construct):
    """Every alarm fires on a condition someone must act on, and notifies `alarm_topic`.

    - a message in any dead-letter queue (a record failed `max_receive_count` times);
    - any function error or throttle;
    - API 5xx responses, or p99 latency above 5 s for 15 minutes;
    - a failed, timed-out or aborted training execution (also sent as the execution's event, so
      the e-mail names the execution to look at).
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        alarm_email: str | None,
        queued_functions: Sequence[QueueFedFunction],
        other_functions: Mapping[str, lambda_.IFunction],
        api: apigw.RestApi,
        training_workflow: sfn.StateMachine,
    ) -> None:
        super().__init__(scope, construct_id)
        self.alarm_topic = sns.Topic(
            self,
            "Alarms",
            topic_name=f"{PIPELINE.project}-alarms",
            display_name="Tessera alarms",
            # Publishing requires TLS. No customer KMS key: notifications carry resource names
            # and states, no pipeline data, and a key would need grants for CloudWatch and
            # EventBridge and cost $1 a month.
            enforce_ssl=True,
        )
        if alarm_email:
            self.alarm_topic.add_subscription(subscriptions.EmailSubscription(alarm_email))
            self.subscribers = f"email {alarm_email} (confirm the subscription mail AWS sends)"
        else:
            self.subscribers = (
                "NONE: alarms reach no one. Deploy with -c tessera:alarm_email=you@example.com "
                "or subscribe to the topic yourself"
            )
            Annotations.of(self).add_warning_v2(
                "tessera:no-alarm-subscriber",
                "No tessera:alarm_email: the alarm topic has no subscriber, so alarms reach no "
                "one. Deploy with -c tessera:alarm_email=you@example.com.",
            )
        action = cw_actions.SnsAction(self.alarm_topic)
        self.alarms: list[cw.Alarm] = []

        def alarm(
            alarm_id: str,
            metric: cw.IMetric,
            *,
            threshold: float,
            description: str,
            evaluation_periods: int = 1,
        ) -> None:
            created = cw.Alarm(
                self,
                alarm_id,
                metric=metric,
                threshold=threshold,
                evaluation_periods=evaluation_periods,
                # Named, so the topic policy can admit exactly this stack's alarms.
                alarm_name=f"{ALARM_NAME_PREFIX}{alarm_id}",
                comparison_operator=cw.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
                treat_missing_data=cw.TreatMissingData.NOT_BREACHING,
                alarm_description=description,
            )
            created.add_alarm_action(action)
            self.alarms.append(created)

        functions: list[tuple[str, lambda_.IFunction]] = []
        for stage in queued_functions:
            name = stage.spec.function
            alarm(
                f"{name}DeadLetters",
                stage.dead_letter_queue.metric_approximate_number_of_messages_visible(
                    period=PERIOD, statistic="Maximum"
                ),
                threshold=1,
                description=f"Records for {name} failed {stage.spec.max_receive_count} times "
                f"and wait in {stage.spec.dlq_name}; fix the cause, then redrive.",
            )
            functions.append((name, stage.function))
        functions.extend(other_functions.items())
        for name, fn in functions:
            alarm(
                f"{name}Errors",
                fn.metric_errors(period=PERIOD, statistic="Sum"),
                threshold=1,
                description=f"The {name} function raised errors.",
            )
            alarm(
                f"{name}Throttles",
                fn.metric_throttles(period=PERIOD, statistic="Sum"),
                threshold=1,
                description=f"The {name} function was throttled (account concurrency?).",
            )

        alarm(
            "Api5xx",
            api.metric_server_error(period=PERIOD, statistic="Sum"),
            threshold=API_5XX_PER_PERIOD,
            description="The API answered 5xx responses.",
        )
        alarm(
            "ApiLatency",
            api.metric_latency(period=PERIOD, statistic="p99"),
            threshold=API_LATENCY_P99_MS,
            evaluation_periods=3,
            description="p99 API latency stayed above 5 s for 15 minutes.",
        )
        alarm(
            "TrainingFailed",
            training_workflow.metric_failed(period=PERIOD, statistic="Sum"),
            threshold=1,
            description="A training execution failed; its error and cause are in the console.",
        )
        alarm(
            "TrainingTimedOut",
            training_workflow.metric_timed_out(period=PERIOD, statistic="Sum"),
            threshold=1,
            description="A training execution timed out.",
        )
        failures = events.Rule(
            self,
            "TrainingFailures",
            description="Sends each failed training execution to the alarm topic",
            event_pattern=events.EventPattern(
                source=["aws.states"],
                detail_type=["Step Functions Execution Status Change"],
                detail={
                    "stateMachineArn": [training_workflow.state_machine_arn],
                    "status": ["FAILED", "TIMED_OUT", "ABORTED"],
                },
            ),
            targets=[_TopicTarget(self.alarm_topic)],
        )
        self._allow_publishers(failures)

        self.dashboard = cw.Dashboard(
            self, "Dashboard", dashboard_name=f"{PIPELINE.project}-pipeline"
        )
        self.dashboard.add_widgets(
            cw.GraphWidget(
                title="Queue depth",
                left=[
                    s.queue.metric_approximate_number_of_messages_visible(
                        period=PERIOD, label=s.spec.name
                    )
                    for s in queued_functions
                ],
                right=[
                    s.dead_letter_queue.metric_approximate_number_of_messages_visible(
                        period=PERIOD, label=s.spec.dlq_name
                    )
                    for s in queued_functions
                ],
            ),
            cw.GraphWidget(
                title="Function errors and throttles",
                left=[fn.metric_errors(period=PERIOD, label=f"{n} errors") for n, fn in functions],
                right=[
                    fn.metric_throttles(period=PERIOD, label=f"{n} throttles")
                    for n, fn in functions
                ],
            ),
            cw.GraphWidget(
                title="Function duration p95 (ms)",
                left=[
                    fn.metric_duration(period=PERIOD, statistic="p95", label=n)
                    for n, fn in functions
                ],
            ),
        )
        self.dashboard.add_widgets(
            cw.GraphWidget(
                title="API requests and errors",
                left=[api.metric_count(period=PERIOD)],
                right=[
                    api.metric_client_error(period=PERIOD),
                    api.metric_server_error(period=PERIOD),
                ],
            ),
            cw.GraphWidget(
                title="API latency (ms)",
                left=[
                    api.metric_latency(period=PERIOD, statistic="p50", label="p50"),
                    api.metric_latency(period=PERIOD, statistic="p99", label="p99"),
                ],
            ),
            cw.GraphWidget(
                title="Training executions",
                left=[
                    training_workflow.metric_started(period=PERIOD),
                    training_workflow.metric_succeeded(period=PERIOD),
                    training_workflow.metric_failed(period=PERIOD),
                ],
            ),
        )

    def _allow_publishers(self, failures: events.Rule) -> None:
        """The topic's resource policy admits exactly its two publishers.

        `enforce_ssl` makes CDK write an explicit topic policy, which replaces SNS's default one:
        without a statement for CloudWatch, every alarm's notification would be refused. Each
        service may publish only on behalf of this account's resources: CloudWatch for this
        stack's alarms (by name), EventBridge for the training-failures rule.
        """
        stack = Stack.of(self)
        alarms_arn = stack.format_arn(
            service="cloudwatch",
            resource="alarm",
            resource_name=f"{ALARM_NAME_PREFIX}*",
            arn_format=ArnFormat.COLON_RESOURCE_NAME,
        )
        self.alarm_topic.add_to_resource_policy(
            iam.PolicyStatement(
                sid="CloudWatchAlarmsOfThisStack",
                actions=["sns:Publish"],
                principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
                resources=[self.alarm_topic.topic_arn],
                conditions={
                    "StringEquals": {"aws:SourceAccount": stack.account},
                    "ArnLike": {"aws:SourceArn": alarms_arn},
                },
            )
        )
        self.alarm_topic.add_to_resource_policy(
            iam.PolicyStatement(
                sid="TrainingFailuresRule",
                actions=["sns:Publish"],
                principals=[iam.ServicePrincipal("events.amazonaws.com")],
                resources=[self.alarm_topic.topic_arn],
                conditions={"ArnEquals": {"aws:SourceArn": failures.rule_arn}},
            )
        )


@jsii.implements(events.IRuleTarget)
class _TopicTarget:
    """An SNS topic as a rule target, without the unconditioned publish grant CDK's
    `targets.SnsTopic` adds: `Monitoring._allow_publishers` grants it for this rule only."""

    def __init__(self, topic: sns.ITopic) -> None:
        self.topic = topic

    def bind(self, rule: IRuleRef, id: str | None = None) -> events.RuleTargetConfig:
        return events.RuleTargetConfig(arn=self.topic.topic_arn)
