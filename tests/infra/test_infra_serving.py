"""Serving: routes from the config, API keys everywhere, POST /train straight to Step Functions."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from aws_cdk.assertions import Match, Template

from infra.app import build_app
from infra.serving import TRAIN_ROUTE
from tessera.config import PIPELINE
from tests.infra.conftest import TEST_CONTEXT, Synthesized
from tests.infra.infra_template_tools import (
    logical_id,
    render,
    resources,
    resources_for_action,
    role_statements,
)


def _methods(template: Template) -> dict[tuple[str, str], dict[str, Any]]:
    """(HTTP method, path) -> method properties, with paths rebuilt from the resource tree."""
    api_resources = resources(template, "AWS::ApiGateway::Resource")

    def path_of(resource_ref: Any) -> str:
        if isinstance(resource_ref, dict) and "Fn::GetAtt" in resource_ref:
            return ""  # the root resource
        props = api_resources[resource_ref["Ref"]]["Properties"]
        return f"{path_of(props['ParentId'])}/{props['PathPart']}"

    return {
        (m["Properties"]["HttpMethod"], path_of(m["Properties"]["ResourceId"]) or "/"): m[
            "Properties"
        ]
        for m in resources(template, "AWS::ApiGateway::Method").values()
    }


CONSOLE = {(r.method, r.path): r for r in PIPELINE.console_routes}
STATIC = {("GET", "/"), ("GET", "/console/{name}")}


def test_the_api_exposes_exactly_the_configured_routes(template: Template) -> None:
    configured = {(r.method, r.path) for r in (*PIPELINE.routes, *PIPELINE.console_routes)}
    assert set(_methods(template)) == configured


def test_machine_routes_need_an_api_key_training_iam_and_the_console_a_sign_in(
    template: Template,
) -> None:
    methods = _methods(template)
    train = methods.pop((TRAIN_ROUTE.method, TRAIN_ROUTE.path))
    # A client API key predicts; only a caller with AWS credentials (SigV4) may start a run.
    assert train["AuthorizationType"] == "AWS_IAM"
    assert train.get("ApiKeyRequired") is not True
    console = {route: methods.pop(route) for route in list(methods) if route in CONSOLE}
    assert all(props["ApiKeyRequired"] is True for props in methods.values())
    assert all(props.get("AuthorizationType", "NONE") == "NONE" for props in methods.values())
    # The console's user data (its /predict and /train included) needs a Cognito sign-in;
    # only its page and script are open, and none of it takes the machines' API key.
    (pool,) = resources(template, "AWS::ApiGateway::Authorizer").values()
    assert pool["Properties"]["Type"] == "COGNITO_USER_POOLS"
    for route, props in console.items():
        assert props.get("ApiKeyRequired") is not True, route
        expected = "NONE" if route in STATIC else "COGNITO_USER_POOLS"
        assert props.get("AuthorizationType", "NONE") == expected, route


def test_the_gateways_own_errors_answer_in_the_json_error_shape(template: Template) -> None:
    responses = {
        r["Properties"]["ResponseType"]: r["Properties"]
        for r in resources(template, "AWS::ApiGateway::GatewayResponse").values()
    }
    assert {"DEFAULT_4XX", "DEFAULT_5XX", "BAD_REQUEST_BODY"} <= set(responses)
    for response in responses.values():
        body = response["ResponseTemplates"]["application/json"]
        assert body.startswith('{"error": {"code": ') and '"message": ' in body


def test_the_body_limit_keeps_the_event_under_lambdas_payload_limit() -> None:
    limits = PIPELINE.limits
    # A raw image body arrives base64-encoded; headers and request context add a few KiB.
    assert limits.max_api_body_bytes * 4 / 3 + 64 * 1024 < limits.max_lambda_event_bytes


def test_client_keys_and_waf_come_from_context(tmp_path: Path) -> None:
    # GIVEN a deploy naming two clients and asking for WAF
    app, stack = build_app(
        context={**TEST_CONTEXT, "tessera:api_clients": "alice,bob", "tessera:waf": "true"},
        outdir=str(tmp_path),
    )
    app.synth()  # cdk-nag included: no unacknowledged finding with WAF on either
    template = Template.from_stack(stack)
    # THEN each client has its own key in the usage plan, beside the default key
    keys = {
        k["Properties"]["Name"] for k in resources(template, "AWS::ApiGateway::ApiKey").values()
    }
    assert keys == {"tessera-default", "tessera-alice", "tessera-bob"}
    assert len(resources(template, "AWS::ApiGateway::UsagePlanKey")) == 3
    # AND a web ACL with a rate-based rule and the body-size rule guards the stage
    (acl,) = resources(template, "AWS::WAFv2::WebACL").values()
    rules = {r["Name"]: r for r in acl["Properties"]["Rules"]}
    assert rules["RatePerIp"]["Statement"]["RateBasedStatement"]["AggregateKeyType"] == "IP"
    regex = rules["BodyOverLimit"]["Statement"]["RegexMatchStatement"]["RegexString"]
    limit = PIPELINE.limits.max_api_body_bytes
    for length, refused in ((limit, False), (limit + 1, True), (10 * limit, True), (100, False)):
        assert bool(re.match(regex, str(length))) is refused
    assert len(resources(template, "AWS::WAFv2::WebACLAssociation")) == 1


def test_post_bodies_are_validated_before_anything_runs(template: Template) -> None:
    for (method, path), props in _methods(template).items():
        if method == "POST":
            assert "RequestValidatorId" in props, path
            assert "application/json" in props["RequestModels"], path
    template.has_resource_properties(
        "AWS::ApiGateway::RequestValidator",
        {"ValidateRequestBody": True, "ValidateRequestParameters": True},
    )
    template.has_resource_properties(
        "AWS::ApiGateway::Model",
        {
            "Schema": Match.object_like(
                {"additionalProperties": False, "properties": {"dataset": Match.any_value()}}
            )
        },
    )


def test_inference_routes_are_proxied_to_the_inference_function(
    synthesized: Synthesized,
) -> None:
    function_id = logical_id(synthesized.stack.serving.inference.function)
    console_id = logical_id(synthesized.stack.serving.console.function.function)
    for (method, path), props in _methods(synthesized.template).items():
        route = CONSOLE.get((method, path))
        if (method, path) == (TRAIN_ROUTE.method, TRAIN_ROUTE.path) or (
            route is not None and route.function == "train"
        ):
            continue
        integration = props["Integration"]
        assert integration["Type"] == "AWS_PROXY", path
        target = console_id if route is not None and route.function == "console" else function_id
        assert f"<{target}.Arn>" in render(integration["Uri"]), path


def test_post_train_is_checked_by_the_console_function_which_alone_may_start_the_workflow(
    synthesized: Synthesized,
) -> None:
    # GIVEN POST /train and the console's /console/train
    methods = _methods(synthesized.template)
    console_id = logical_id(synthesized.stack.serving.console.function.function)
    workflow_id = logical_id(synthesized.stack.training.state_machine)
    trains = [(TRAIN_ROUTE.method, TRAIN_ROUTE.path)] + [
        (r.method, r.path) for r in PIPELINE.console_routes if r.function == "train"
    ]
    for route in trains:
        # THEN each is the console function's (which checks the dataset has rows first)
        integration = methods[route]["Integration"]
        assert integration["Type"] == "AWS_PROXY", route
        assert f"<{console_id}.Arn>" in render(integration["Uri"]), route
    assert methods[trains[0]]["AuthorizationType"] == "AWS_IAM"
    assert all(methods[route]["AuthorizationType"] == "COGNITO_USER_POOLS" for route in trains[1:])
    # AND the function knows the workflow and may start it (this one only)
    role_id = synthesized.stack.serving.console.function.role.node.default_child
    statements = role_statements(synthesized.template, logical_id(role_id))
    assert resources_for_action(statements, "states:StartExecution") == {f"<{workflow_id}>"}
    function = resources(synthesized.template, "AWS::Lambda::Function")[console_id]
    variables = function["Properties"]["Environment"]["Variables"]
    assert render(variables["TESSERA_TRAINING_STATE_MACHINE"]) == f"<{workflow_id}>"


def test_the_stage_logs_access_traces_and_throttles(template: Template) -> None:
    (stage,) = resources(template, "AWS::ApiGateway::Stage").values()
    props = stage["Properties"]
    assert props["TracingEnabled"] is True
    assert "DestinationArn" in props["AccessLogSetting"]
    (settings,) = props["MethodSettings"]
    assert settings["ThrottlingRateLimit"] > 0
    assert settings["ThrottlingBurstLimit"] > 0
    assert settings["DataTraceEnabled"] is False


def test_a_usage_plan_throttles_the_key_on_the_stage(template: Template) -> None:
    ((plan_id, plan),) = resources(template, "AWS::ApiGateway::UsagePlan").items()
    props = plan["Properties"]
    assert props["Throttle"]["RateLimit"] > 0
    assert props["Quota"]["Limit"] > 0
    assert len(props["ApiStages"]) == 1
    template.has_resource_properties(
        "AWS::ApiGateway::UsagePlanKey", {"UsagePlanId": {"Ref": plan_id}, "KeyType": "API_KEY"}
    )


def test_image_bodies_are_binary_media_types(template: Template) -> None:
    # The same list the local API server uses to decide what arrives base64-encoded.
    template.has_resource_properties(
        "AWS::ApiGateway::RestApi", {"BinaryMediaTypes": list(PIPELINE.binary_media_types)}
    )
    assert {"image/png", "image/jpeg"} <= set(PIPELINE.binary_media_types)


def test_the_inference_function_gives_up_before_the_api_gateway_timeout(
    synthesized: Synthesized,
) -> None:
    function_id = logical_id(synthesized.stack.serving.inference.function)
    function = resources(synthesized.template, "AWS::Lambda::Function")[function_id]
    assert function["Properties"]["Timeout"] < 29


def _actions(statement: dict[str, Any]) -> list[str]:
    action = statement["Action"]
    return action if isinstance(action, list) else [action]


def test_console_users_are_invited_need_mfa_and_sign_in_with_code_and_pkce(
    template: Template,
) -> None:
    (pool,) = resources(template, "AWS::Cognito::UserPool").values()
    props = pool["Properties"]
    assert props["AdminCreateUserConfig"]["AllowAdminCreateUserOnly"] is True
    assert props["MfaConfiguration"] == "ON"
    assert props["Policies"]["PasswordPolicy"]["MinimumLength"] >= 12
    (client,) = resources(template, "AWS::Cognito::UserPoolClient").values()
    client_props = client["Properties"]
    assert client_props["GenerateSecret"] is False
    assert client_props["AllowedOAuthFlows"] == ["code"]
    (callback,) = client_props["CallbackURLs"]
    assert render(callback).endswith("/v1/")
