"""Serving: the REST API in front of the inference function, and batch prediction of sheets."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from aws_cdk import Acknowledgment, Duration, RemovalPolicy, Validations
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk import aws_wafv2 as wafv2
from constructs import Construct

from infra.console import Console
from infra.function import PipelineFunction
from infra.queued import QueueFedFunction
from tessera.config import PIPELINE, Route
from tessera.serving.train_request import MAX_SEARCH_WORKERS

STAGE_NAME = "v1"
# Image bodies arrive base64-encoded in the proxy event only for these content types; the local
# API server reads the same list.
BINARY_MEDIA_TYPES = list(PIPELINE.binary_media_types)
# Requests per second across all keys of the plan, and the burst on top; the daily quota caps
# what a leaked key can cost.
THROTTLE_RATE_LIMIT = 50
THROTTLE_BURST_LIMIT = 100
DAILY_QUOTA = 100_000
# The API Gateway integration timeout is 29 s; the function must give up before it does.
INFERENCE_TIMEOUT = Duration.seconds(28)
# About one full vCPU: onnxruntime and image decoding are CPU-bound, and the champion model plus
# the dataset embeddings for /similar stay cached in memory between requests.
INFERENCE_MEMORY_MB = 2048
TRAIN_ROUTE = Route(method="POST", path="/train")
DATASET_NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,31}$"
# With tessera:waf=true: requests per client IP per 5 minutes before WAF answers 429.
WAF_REQUESTS_PER_5_MINUTES_PER_IP = 2_000


class Serving(Construct):
    """`PIPELINE.routes` on one REST API stage; every method needs an API key.

    `POST /train` goes to the console function, which checks the request (a dataset without rows
    is a 404) and starts the training workflow; every other route is proxied to the inference
    function. Request validation rejects malformed
    JSON before any function runs; image bodies are validated by the function (size, pixels).
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        environment: Mapping[str, str],
        bucket: s3.IBucket,
        training_workflow: sfn.IStateMachine,
        bundle_dependencies: bool,
        reserved_concurrency: int,
        api_clients: tuple[str, ...] = (),
        waf: bool = False,
    ) -> None:
        super().__init__(scope, construct_id)
        self.inference = PipelineFunction(
            self,
            "Inference",
            function="inference",
            memory_mb=INFERENCE_MEMORY_MB,
            timeout=INFERENCE_TIMEOUT,
            environment=environment,
            bundle_dependencies=bundle_dependencies,
            reserved_concurrency=reserved_concurrency or None,
        )
        self.batch_predict = QueueFedFunction(
            self,
            "BatchPredict",
            spec=PIPELINE.queue_for("batch_predict"),
            bucket=bucket,
            environment=environment,
            bundle_dependencies=bundle_dependencies,
        )

        access_logs = logs.LogGroup(
            self,
            "AccessLogs",
            retention=logs.RetentionDays.THREE_MONTHS,
            removal_policy=RemovalPolicy.DESTROY,
        )
        self.api = apigw.RestApi(
            self,
            "Api",
            rest_api_name=PIPELINE.project,
            description="Tessera: predictions from the champion model, and training on demand",
            binary_media_types=BINARY_MEDIA_TYPES,
            endpoint_types=[apigw.EndpointType.REGIONAL],
            # Execution logs need the account-wide API Gateway CloudWatch role. It is retained on
            # delete: other APIs in the account may log through the same account setting.
            cloud_watch_role=True,
            cloud_watch_role_removal_policy=RemovalPolicy.RETAIN,
            deploy_options=apigw.StageOptions(
                stage_name=STAGE_NAME,
                access_log_destination=apigw.LogGroupLogDestination(access_logs),
                access_log_format=apigw.AccessLogFormat.json_with_standard_fields(
                    caller=False,
                    http_method=True,
                    ip=True,
                    protocol=True,
                    request_time=True,
                    resource_path=True,
                    response_length=True,
                    status=True,
                    user=True,
                ),
                tracing_enabled=True,
                # Errors only, and never request bodies: they are users' images.
                logging_level=apigw.MethodLoggingLevel.ERROR,
                data_trace_enabled=False,
                metrics_enabled=True,
                throttling_rate_limit=THROTTLE_RATE_LIMIT,
                throttling_burst_limit=THROTTLE_BURST_LIMIT,
            ),
            default_method_options=apigw.MethodOptions(api_key_required=True),
        )
        self.validator = self.api.add_request_validator(
            "Validator", validate_request_body=True, validate_request_parameters=True
        )
        self.api_key = self.api.add_api_key(
            "DefaultKey", api_key_name=f"{PIPELINE.project}-default"
        )
        plan = self.api.add_usage_plan(
            "UsagePlan",
            name=f"{PIPELINE.project}-default",
            throttle=apigw.ThrottleSettings(
                rate_limit=THROTTLE_RATE_LIMIT, burst_limit=THROTTLE_BURST_LIMIT
            ),
            quota=apigw.QuotaSettings(limit=DAILY_QUOTA, period=apigw.Period.DAY),
        )
        plan.add_api_key(self.api_key)
        plan.add_api_stage(stage=self.api.deployment_stage)
        # One key per named client (tessera:api_clients=alice,bob), so a leaked key is revoked
        # without cutting everyone off; all share the plan's throttle and quota.
        self.client_keys: dict[str, apigw.IApiKey] = {}
        for client in api_clients:
            key = self.api.add_api_key(
                f"ClientKey{client}", api_key_name=f"{PIPELINE.project}-{client}"
            )
            plan.add_api_key(key)
            self.client_keys[client] = key
        self._gateway_responses()
        self.web_acl = self._web_acl() if waf else None

        proxy = apigw.LambdaIntegration(self.inference.function, proxy=True)
        train_model = self._train_request_model()
        self.console = Console(
            self,
            "Console",
            api=self.api,
            inference=self.inference.function,
            training_workflow=training_workflow,
            train_model=train_model,
            json_model=self._json_body_model(),
            validator=self.validator,
            stage=STAGE_NAME,
            environment=environment,
            bundle_dependencies=bundle_dependencies,
        )
        # POST /train: the console function checks the request (the dataset has rows) and
        # starts the workflow; no code path of the inference function can start a run.
        start_training = apigw.LambdaIntegration(self.console.function.function, proxy=True)
        for route in PIPELINE.routes:
            resource = self.api.root.resource_for_path(route.path)
            if route == TRAIN_ROUTE:
                # Starting a two-hour Fargate run is not for whoever holds a client API key:
                # the caller signs the request (SigV4) with AWS credentials that may
                # execute-api:Invoke this route, e.g. `tessera train` or awscurl.
                resource.add_method(
                    route.method,
                    start_training,
                    authorization_type=apigw.AuthorizationType.IAM,
                    api_key_required=False,
                    request_validator=self.validator,
                    request_models={"application/json": train_model},
                )
            elif route.method == "POST":
                resource.add_method(
                    route.method,
                    proxy,
                    request_validator=self.validator,
                    request_models={"application/json": self._json_body_model()},
                )
            else:
                resource.add_method(route.method, proxy)

        for rule, reason in (
            (
                "AwsSolutions-APIG4",
                "POST /train is IAM-authorized (SigV4); the prediction routes take API keys bound "
                "to a usage plan (machine clients); the console's data routes take a Cognito "
                "token; GET / and /console/{name} are the console's static page and script, "
                "which hold no user data and must load before anyone has signed in.",
            ),
            (
                "AwsSolutions-COG4",
                "The console's routes use the Cognito authorizer; the machine routes take API "
                "keys (and /train SigV4), and the console's static files need no sign-in.",
            ),
        ):
            Validations.of(self.api).acknowledge(
                Acknowledgment(id=f"AwsSolutions::{rule}", reason=reason)
            )
        if not waf:
            Validations.of(self.api).acknowledge(
                Acknowledgment(
                    id="AwsSolutions::AwsSolutions-APIG3",
                    reason="No WAF web ACL by default: callers hold API keys, the usage plan "
                    "throttles and caps them, and a web ACL adds about $8 a month to an idle "
                    "deployment. -c tessera:waf=true adds a rate-based one.",
                )
            )
        Validations.of(self.api).acknowledge(
            Acknowledgment(
                id="AwsSolutions::AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/"
                "service-role/AmazonAPIGatewayPushToCloudWatchLogs]",
                reason="The account-level role API Gateway uses to write execution logs; the "
                "AWS-managed policy is the documented way to grant it.",
            )
        )

    def _train_request_model(self) -> apigw.Model:
        return self.api.add_model(
            "TrainRequest",
            content_type="application/json",
            schema=apigw.JsonSchema(
                schema=apigw.JsonSchemaVersion.DRAFT4,
                title="TrainRequest",
                type=apigw.JsonSchemaType.OBJECT,
                properties={
                    "dataset": apigw.JsonSchema(
                        type=apigw.JsonSchemaType.STRING, pattern=DATASET_NAME_PATTERN
                    ),
                    "search_workers": apigw.JsonSchema(
                        type=apigw.JsonSchemaType.INTEGER,
                        minimum=2,
                        maximum=MAX_SEARCH_WORKERS,
                    ),
                },
                additional_properties=False,
            ),
        )

    def _json_body_model(self) -> apigw.Model:
        existing = self.api.node.try_find_child("JsonObject")
        if isinstance(existing, apigw.Model):
            return existing
        return self.api.add_model(
            "JsonObject",
            model_name="JsonObject",
            content_type="application/json",
            schema=apigw.JsonSchema(
                schema=apigw.JsonSchemaVersion.DRAFT4,
                title="JsonObject",
                type=apigw.JsonSchemaType.OBJECT,
                min_properties=1,
            ),
        )

    def _gateway_responses(self) -> None:
        """API Gateway's own refusals (no key, throttled, body refused by the model, an
        integration that failed) answer in the function's JSON error shape."""
        error = (
            '{"error": {"code": "$context.error.responseType.toLowerCase()", '
            '"message": $context.error.messageString}}'
        )
        validation = (
            '{"error": {"code": "bad_request", "message": "$util.escapeJavaScript('
            '$context.error.validationErrorString)"}}'
        )
        for response_id, response_type, template in (
            ("Default4xx", apigw.ResponseType.DEFAULT_4_XX, error),
            ("Default5xx", apigw.ResponseType.DEFAULT_5_XX, error),
            ("BadBody", apigw.ResponseType.BAD_REQUEST_BODY, validation),
        ):
            self.api.add_gateway_response(
                response_id,
                type=response_type,
                templates={"application/json": template},
            )

    def _web_acl(self) -> wafv2.CfnWebACL:
        """A rate-based rule per client IP, and bodies over the documented limit refused with
        the JSON error shape before they reach the function (tessera:waf=true)."""
        limit = PIPELINE.limits.max_api_body_bytes
        acl = wafv2.CfnWebACL(
            self,
            "WebAcl",
            scope="REGIONAL",
            default_action=wafv2.CfnWebACL.DefaultActionProperty(allow={}),
            visibility_config=_visibility("tessera-api"),
            custom_response_bodies={
                "tooLarge": _json_body("body_too_large", f"over {limit} bytes"),
                "throttled": _json_body("throttled", "too many requests"),
            },
            rules=[
                _blocking_rule(
                    "RatePerIp",
                    priority=0,
                    status=429,
                    body="throttled",
                    statement=wafv2.CfnWebACL.StatementProperty(
                        rate_based_statement=wafv2.CfnWebACL.RateBasedStatementProperty(
                            limit=WAF_REQUESTS_PER_5_MINUTES_PER_IP, aggregate_key_type="IP"
                        )
                    ),
                ),
                _blocking_rule(
                    "BodyOverLimit",
                    priority=1,
                    status=413,
                    body="tooLarge",
                    statement=wafv2.CfnWebACL.StatementProperty(
                        regex_match_statement=wafv2.CfnWebACL.RegexMatchStatementProperty(
                            regex_string=numbers_over(limit),
                            field_to_match=wafv2.CfnWebACL.FieldToMatchProperty(
                                single_header={"Name": "content-length"}
                            ),
                            text_transformations=[
                                wafv2.CfnWebACL.TextTransformationProperty(priority=0, type="NONE")
                            ],
                        )
                    ),
                ),
            ],
        )
        wafv2.CfnWebACLAssociation(
            self,
            "WebAclAssociation",
            resource_arn=self.api.deployment_stage.stage_arn,
            web_acl_arn=acl.attr_arn,
        )
        return acl


def numbers_over(limit: int) -> str:
    """A regular expression matching exactly the decimal numbers greater than `limit` (WAF
    compares header text, not numbers): each digit position may be higher than the limit's
    with the digits before it equal, or the number may have more digits."""
    digits = str(limit)
    alternatives = []
    for position, digit in enumerate(digits):
        if digit == "9":
            continue
        rest = len(digits) - position - 1
        higher = f"[{int(digit) + 1}-9]" if digit != "8" else "9"
        alternatives.append(digits[:position] + higher + (f"[0-9]{{{rest}}}" if rest else ""))
    alternatives.append(f"[1-9][0-9]{{{len(digits)},}}")
    return "^(" + "|".join(alternatives) + ")$"


def _json_body(code: str, message: str) -> wafv2.CfnWebACL.CustomResponseBodyProperty:
    """WAF's refusals in the API's JSON error shape."""
    return wafv2.CfnWebACL.CustomResponseBodyProperty(
        content_type="APPLICATION_JSON",
        content=json.dumps({"error": {"code": code, "message": message}}),
    )


def _blocking_rule(
    name: str, *, priority: int, status: int, body: str, statement: Any
) -> wafv2.CfnWebACL.RuleProperty:
    return wafv2.CfnWebACL.RuleProperty(
        name=name,
        priority=priority,
        action=wafv2.CfnWebACL.RuleActionProperty(
            block=wafv2.CfnWebACL.BlockActionProperty(
                custom_response=wafv2.CfnWebACL.CustomResponseProperty(
                    response_code=status, custom_response_body_key=body
                )
            )
        ),
        statement=statement,
        visibility_config=_visibility(f"tessera-{name}"),
    )


def _visibility(name: str) -> wafv2.CfnWebACL.VisibilityConfigProperty:
    return wafv2.CfnWebACL.VisibilityConfigProperty(
        cloud_watch_metrics_enabled=True, metric_name=name, sampled_requests_enabled=False
    )
