"""One pipeline Lambda function: its code bundle, log group, role and common settings."""

from __future__ import annotations

from collections.abc import Mapping

from aws_cdk import Acknowledgment, Duration, RemovalPolicy, Validations
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from infra.access import wildcard_resource_ack
from infra.bundling import FUNCTIONS_DIR, function_code
from tessera.config import PIPELINE, Env

# What each function imports: split and vectorize work on images only, serving needs onnxruntime.
SERVING_REQUIREMENTS = FUNCTIONS_DIR / "requirements.txt"
IMAGE_REQUIREMENTS = FUNCTIONS_DIR / "requirements-image.txt"
REQUIREMENTS_BY_FUNCTION = {
    "split": IMAGE_REQUIREMENTS,
    "vectorize": IMAGE_REQUIREMENTS,
    "inference": SERVING_REQUIREMENTS,
    "batch_predict": SERVING_REQUIREMENTS,
    "console": IMAGE_REQUIREMENTS,  # numpy for the row shards; no model runs in it
}

RUNTIME = lambda_.Runtime.PYTHON_3_12
LOG_RETENTION = logs.RetentionDays.ONE_MONTH


def function_name(function: str) -> str:
    return f"{PIPELINE.project}-{function.replace('_', '-')}"


class PipelineFunction(Construct):
    """A function running `functions.<function>.handler.lambda_handler`.

    The role starts empty (no AWSLambdaBasicExecutionRole, whose log permissions cover every log
    group in the account): it may write to this function's own log group, send X-Ray traces, and
    whatever the stack grants where it wires the function to a bucket prefix or a queue.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        function: str,
        memory_mb: int,
        timeout: Duration,
        environment: Mapping[str, str],
        bundle_dependencies: bool,
        reserved_concurrency: int | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        name = function_name(function)
        self.log_group = logs.LogGroup(
            self,
            "Logs",
            log_group_name=f"/aws/lambda/{name}",
            retention=LOG_RETENTION,
            removal_policy=RemovalPolicy.DESTROY,
        )
        self.role = iam.Role(
            self,
            "Role",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description=f"Runs the {function} function",
        )
        self.function = lambda_.Function(
            self,
            "Function",
            function_name=name,
            runtime=RUNTIME,
            architecture=lambda_.Architecture.X86_64,
            handler=f"functions.{function}.handler.lambda_handler",
            code=function_code(
                function=function,
                requirements=REQUIREMENTS_BY_FUNCTION[function],
                with_dependencies=bundle_dependencies,
            ),
            memory_size=memory_mb,
            timeout=timeout,
            environment={
                "POWERTOOLS_SERVICE_NAME": function,
                Env.LOG_LEVEL: "INFO",
                **environment,
            },
            role=self.role,
            log_group=self.log_group,
            tracing=lambda_.Tracing.ACTIVE,
            reserved_concurrent_executions=reserved_concurrency,
        )
        # logs:CreateLogGroup is not needed: the group above exists before the first invocation.
        self.log_group.grant(self.role, "logs:CreateLogStream", "logs:PutLogEvents")
        wildcard_resource_ack(
            self.role,
            "*",
            "X-Ray PutTraceSegments/PutTelemetryRecords support no resource-level permissions.",
        )
        Validations.of(self.function).acknowledge(
            Acknowledgment(
                id="AwsSolutions::AwsSolutions-L1",
                reason="Python 3.12 is the newest runtime the project supports "
                "(requires-python <3.13) and the runtime the pinned wheels are bundled for.",
            )
        )
