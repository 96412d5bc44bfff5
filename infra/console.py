"""The console deployed: its function, the Cognito user pool people sign in with, and its routes
on the pipeline's REST API.

The page and its script are served by the console function from the API itself (no S3 website,
no CloudFront): they hold no user data, so they are the only routes open without signing in, and
one origin means no CORS and one TLS certificate, API Gateway's. Every route that returns or
changes user data (sheets, tiles, corrections, models, and the console's own /predict, /similar
and /train) takes a Cognito ID token; machine clients keep their API keys on /predict and
/similar. Users are created by an administrator (no self sign-up), sign in through Cognito's
managed login with the authorization code flow and PKCE, and need a one-time-password app
(MFA required).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aws_cdk import Acknowledgment, Aws, Duration, RemovalPolicy, Validations
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_cognito as cognito
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from infra.checkov import skip
from infra.function import PipelineFunction
from tessera.config import PIPELINE, Env, Route

CONSOLE_TIMEOUT = Duration.seconds(28)  # inside API Gateway's 29 s integration timeout
CONSOLE_MEMORY_MB = 1024
STATIC_PATHS = ("/", "/console/{name}")
TOKEN_HOURS = 1


class Console(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        api: apigw.RestApi,
        inference: lambda_.IFunction,
        training_workflow: sfn.IStateMachine,
        train_model: apigw.IModel,
        json_model: apigw.IModel,
        validator: apigw.IRequestValidator,
        stage: str,
        environment: Mapping[str, str],
        bundle_dependencies: bool,
    ) -> None:
        super().__init__(scope, construct_id)
        self.user_pool = cognito.UserPool(
            self,
            "Users",
            user_pool_name=f"{PIPELINE.project}-console",
            self_sign_up_enabled=False,
            sign_in_aliases=cognito.SignInAliases(email=True),
            mfa=cognito.Mfa.REQUIRED,
            mfa_second_factor=cognito.MfaSecondFactor(sms=False, otp=True),
            password_policy=cognito.PasswordPolicy(
                min_length=12,
                require_lowercase=True,
                require_uppercase=True,
                require_digits=True,
                require_symbols=True,
                temp_password_validity=Duration.days(3),
            ),
            account_recovery=cognito.AccountRecovery.EMAIL_ONLY,
            deletion_protection=False,
            removal_policy=RemovalPolicy.DESTROY,
        )
        self.domain = self.user_pool.add_domain(
            "Login",
            cognito_domain=cognito.CognitoDomainOptions(
                domain_prefix=f"{PIPELINE.project}-console-{Aws.ACCOUNT_ID}"
            ),
        )
        # The stage's URL spelled from the API's id: `api.url` would make the client depend on
        # the deployment, which depends on the console's methods, which need the client's id.
        page_url = f"https://{api.rest_api_id}.execute-api.{Aws.REGION}.{Aws.URL_SUFFIX}/{stage}/"
        self.client = self.user_pool.add_client(
            "Page",
            user_pool_client_name=f"{PIPELINE.project}-console",
            generate_secret=False,  # a page cannot keep one; PKCE protects the code instead
            o_auth=cognito.OAuthSettings(
                flows=cognito.OAuthFlows(authorization_code_grant=True),
                scopes=[cognito.OAuthScope.OPENID, cognito.OAuthScope.EMAIL],
                callback_urls=[page_url],
                logout_urls=[page_url],
            ),
            prevent_user_existence_errors=True,
            id_token_validity=Duration.hours(TOKEN_HOURS),
            access_token_validity=Duration.hours(TOKEN_HOURS),
            refresh_token_validity=Duration.hours(12),
        )
        self.function = PipelineFunction(
            self,
            "Function",
            function="console",
            memory_mb=CONSOLE_MEMORY_MB,
            timeout=CONSOLE_TIMEOUT,
            environment={
                **environment,
                Env.CONSOLE_AUTH_DOMAIN: self.domain.base_url(),
                Env.CONSOLE_CLIENT_ID: self.client.user_pool_client_id,
                Env.TRAINING_STATE_MACHINE: training_workflow.state_machine_arn,
            },
            bundle_dependencies=bundle_dependencies,
        )
        # POST /train (and the page's /console/train) is checked here, then starts this one
        # workflow: the dataset must have rows, so a typo is a 404, not a failed two-hour run.
        training_workflow.grant_start_execution(self.function.role)
        authorizer = apigw.CognitoUserPoolsAuthorizer(
            self, "Authorizer", cognito_user_pools=[self.user_pool]
        )
        signed_in: dict[str, Any] = {
            "authorization_type": apigw.AuthorizationType.COGNITO,
            "authorizer": authorizer,
            "api_key_required": False,
        }
        console = apigw.LambdaIntegration(self.function.function, proxy=True)
        predictions = apigw.LambdaIntegration(inference, proxy=True)
        for route in PIPELINE.console_routes:
            resource = api.root.resource_for_path(route.path)
            if route.path in STATIC_PATHS:
                method = resource.add_method(route.method, console, api_key_required=False)
                skip(
                    method.node.default_child,  # type: ignore[arg-type]
                    "CKV_AWS_59",
                    "The console's static page and script: no user data, and they must load "
                    "before anyone has signed in; every data route takes a Cognito token.",
                )
            elif route.function == "train":
                resource.add_method(
                    route.method,
                    console,
                    request_validator=validator,
                    request_models={"application/json": train_model},
                    **signed_in,
                )
            else:
                target = predictions if route.function == "inference" else console
                # JSON bodies are checked before the function runs, as on /predict; an image
                # body (Draw's canvas may send one) goes to the function, which checks it.
                body: dict[str, Any] = (
                    {
                        "request_validator": validator,
                        "request_models": {"application/json": json_model},
                    }
                    if route.method == "POST"
                    else {}
                )
                resource.add_method(route.method, target, **body, **signed_in)
        self.routes: tuple[Route, ...] = PIPELINE.console_routes

        Validations.of(self.user_pool).acknowledge(
            Acknowledgment(
                id="AwsSolutions::AwsSolutions-COG8",
                reason="Cognito's Plus feature plan (threat protection) bills per monthly active "
                "user; the pool has no self sign-up, requires MFA and a 12-character password, "
                "and the API behind it is throttled by its stage.",
            )
        )
