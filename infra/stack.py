"""The whole pipeline as one stack: components built from `PIPELINE`, wired and granted here."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from aws_cdk import Acknowledgment, Annotations, Aspects, CfnOutput, Stack, Validations
from aws_cdk import aws_iam as iam
from constructs import Construct

from infra.access import grant_prefixes
from infra.checkov import CheckovJustifications
from infra.ingest import Ingest
from infra.monitoring import Monitoring
from infra.serving import Serving
from infra.storage import Storage
from infra.training_job import Training
from tessera.config import PIPELINE, Env
from tessera.corrections import CORRECTIONS_PATTERN
from tessera.dataset import ROWS_PATTERN, SHEET_MANIFESTS_PATTERN, SUPERSEDED_PATTERN
from tessera.registry import CHAMPION_HISTORY_PATTERN, CHAMPION_PATTERN

CONTEXT_PREFIX = "tessera:"


def _flag(value: Any, *, default: bool) -> bool:
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() not in ("false", "0", "no", "off", "")


@dataclass(frozen=True, kw_only=True)
class DeploySettings:
    """What may differ between deployments; read from CDK context (`-c tessera:<key>=...`)."""

    alarm_email: str | None = None
    training_schedule: str | None = None  # an EventBridge expression: "rate(7 days)", "cron(...)"
    retain_data: bool = True  # keep the buckets (and their data) when the stack is deleted
    bundle: bool = True  # False: functions without third-party packages; tests only, never deploy
    retention_days: int = PIPELINE.retention_days  # uploads and predictions, then deleted
    inference_reserved_concurrency: int = PIPELINE.inference_reserved_concurrency
    api_clients: tuple[str, ...] = ()  # one API key each, in the usage plan
    waf: bool = False  # a WAF web ACL (rate per IP, oversized bodies) in front of the API
    gpu: bool = False  # a GPU job queue (EC2 g4dn) the Keras families train on
    gpu_spot: bool = False  # its instances on spot (cheaper; a reclaimed job fails, is rerun)

    @classmethod
    def from_context(cls, scope: Construct) -> DeploySettings:
        def get(key: str) -> Any:
            return scope.node.try_get_context(CONTEXT_PREFIX + key)

        return cls(
            alarm_email=get("alarm_email") or None,
            training_schedule=get("training_schedule") or None,
            retain_data=_flag(get("retain_data"), default=True),
            bundle=_flag(get("bundle"), default=True),
            retention_days=_positive(get("retention_days"), "retention_days")
            or PIPELINE.retention_days,
            inference_reserved_concurrency=_count(
                get("inference_reserved_concurrency"),
                "inference_reserved_concurrency",
                default=PIPELINE.inference_reserved_concurrency,
            ),
            api_clients=_clients(get("api_clients")),
            waf=_flag(get("waf"), default=False),
            gpu=_flag(get("gpu"), default=False),
            gpu_spot=_flag(get("gpu_spot"), default=False),
        )


def _count(value: Any, name: str, *, default: int) -> int:
    if value is None or value == "":
        return default
    try:
        number = int(str(value))
    except ValueError:
        raise ValueError(f"tessera:{name} must be a whole number, got {value!r}") from None
    if number < 0:
        raise ValueError(f"tessera:{name} must not be negative, got {number}")
    return number


_CLIENT = re.compile(r"^[A-Za-z0-9-]{1,32}$")


def _clients(value: Any) -> tuple[str, ...]:
    """tessera:api_clients: "alice,bob" (or a JSON list from cdk.json)."""
    if value in (None, ""):
        return ()
    names = value if isinstance(value, list) else str(value).split(",")
    clients = tuple(str(name).strip() for name in names if str(name).strip())
    bad = [name for name in clients if not _CLIENT.fullmatch(name)]
    if bad or len(set(clients)) != len(clients):
        raise ValueError(
            f"tessera:api_clients must be distinct names of 1-32 letters, digits or '-': {bad}"
        )
    return clients


def _positive(value: Any, name: str) -> int | None:
    if value is None or value == "":
        return None
    number = _count(value, name, default=0)
    if number < 1:
        raise ValueError(f"tessera:{name} must be at least 1, got {number}")
    return number


class TesseraStack(Stack):
    def __init__(
        self, scope: Construct, construct_id: str, *, settings: DeploySettings, **kwargs: Any
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        prefixes = PIPELINE.prefixes
        if not settings.bundle:
            Annotations.of(self).add_warning_v2(
                "tessera:unbundled",
                "tessera:bundle=false: functions lack their third-party packages; do not deploy.",
            )

        self.storage = Storage(
            self,
            "Storage",
            retain_data=settings.retain_data,
            retention_days=settings.retention_days,
        )
        bucket = self.storage.bucket
        environment = {
            Env.BUCKET: bucket.bucket_name,
            Env.MODEL_NAME: PIPELINE.default_dataset,
            Env.CHAMPION_TTL_SECONDS: str(PIPELINE.champion_ttl_seconds),
        }

        self.ingest = Ingest(
            self,
            "Ingest",
            bucket=bucket,
            environment=environment,
            bundle_dependencies=settings.bundle,
        )
        self.training = Training(
            self,
            "Training",
            bucket=bucket,
            environment={Env.BUCKET: bucket.bucket_name},
            schedule=settings.training_schedule,
            gpu=settings.gpu,
            gpu_spot=settings.gpu_spot,
        )
        self.serving = Serving(
            self,
            "Serving",
            environment=environment,
            bucket=bucket,
            training_workflow=self.training.state_machine,
            bundle_dependencies=settings.bundle,
            reserved_concurrency=settings.inference_reserved_concurrency,
            api_clients=settings.api_clients,
            waf=settings.waf,
        )
        self.monitoring = Monitoring(
            self,
            "Monitoring",
            alarm_email=settings.alarm_email,
            queued_functions=(*self.ingest.stages, self.serving.batch_predict),
            other_functions={
                "inference": self.serving.inference.function,
                "console": self.serving.console.function.function,
            },
            api=self.serving.api,
            training_workflow=self.training.state_machine,
        )

        # Who may touch which prefix: each stage reads its input and writes only its outputs
        # (and quarantine/), never under a prefix that would trigger itself.
        grants: tuple[tuple[iam.IRole, list[str], list[str]], ...] = (
            # Split also records each sheet's manifest (grid, empty cells) beside its dataset,
            # and reads earlier manifests to record the sheets a new upload to a key supersedes.
            (
                self.ingest.split.handler.role,
                [prefixes.incoming_train, SHEET_MANIFESTS_PATTERN],
                [prefixes.tiles, prefixes.quarantine, SHEET_MANIFESTS_PATTERN, SUPERSEDED_PATTERN],
            ),
            # Rows are read too: a sheet's shard is rewritten only when its tile batch changed
            # (HEAD). Nothing else under datasets/ (manifests, snapshots) is Vectorize's.
            (
                self.ingest.vectorize.handler.role,
                [prefixes.tiles, ROWS_PATTERN],
                [ROWS_PATTERN, prefixes.quarantine],
            ),
            # The internet-facing function reads models (and their embedding index) only.
            (self.serving.inference.role, [prefixes.models], []),
            # The console shows tiles, sheets (manifests, overlays, rows, quarantine reasons),
            # models and runs, and writes only corrections and the champion pointer.
            (
                self.serving.console.function.role,
                [
                    prefixes.tiles,
                    prefixes.datasets,
                    prefixes.models,
                    prefixes.runs,
                    prefixes.quarantine,
                ],
                [CORRECTIONS_PATTERN, CHAMPION_PATTERN, CHAMPION_HISTORY_PATTERN],
            ),
            (
                self.serving.batch_predict.handler.role,
                [prefixes.incoming_predict, prefixes.models],
                [prefixes.predictions, prefixes.quarantine],
            ),
            # The job compares against the champion (models/ read), writes dataset snapshots,
            # model versions, the champion pointer and run artefacts.
            (
                self.training.job_role,
                [prefixes.datasets, prefixes.models],
                [prefixes.datasets, prefixes.models, prefixes.runs],
            ),
        )
        # The only deletions anything in the pipeline makes, both Split's: a stale quarantine
        # record once the same bytes split after all (their labels manifest arrived second),
        # and the superseded record of a sheet whose bytes came back to its key.
        deletes: dict[iam.IRole, list[str]] = {
            self.ingest.split.handler.role: [prefixes.quarantine, SUPERSEDED_PATTERN]
        }
        for role, read, write in grants:
            grant_prefixes(
                bucket=bucket,
                grantee=role,
                acknowledge_on=role,
                read=read,
                write=write,
                delete=deletes.get(role, []),
            )

        self._acknowledge_cdk_internals()
        Aspects.of(self).add(CheckovJustifications())

        CfnOutput(
            self,
            "BucketName",
            value=bucket.bucket_name,
            description="Drop sheets under incoming/train/ and incoming/predict/",
        )
        CfnOutput(self, "ApiUrl", value=self.serving.api.url, description="REST API base URL")
        CfnOutput(
            self,
            "ApiKeyId",
            value=self.serving.api_key.key_id,
            description="aws apigateway get-api-key --api-key <id> --include-value",
        )
        for client, key in self.serving.client_keys.items():
            CfnOutput(
                self,
                f"ApiKeyId{client.replace('-', '')}",
                value=key.key_id,
                description=f"{client}'s API key: aws apigateway get-api-key --include-value",
            )
        CfnOutput(
            self,
            "TrainUrl",
            value=self.serving.api.url_for_path("/train"),
            description="POST with SigV4 (IAM): tessera train, or awscurl --service execute-api",
        )
        CfnOutput(
            self,
            "TrainingStateMachineArn",
            value=self.training.state_machine.state_machine_arn,
            description="aws stepfunctions start-execution --state-machine-arn <arn>",
        )
        CfnOutput(self, "AlarmTopicArn", value=self.monitoring.alarm_topic.topic_arn)
        CfnOutput(
            self,
            "ConsoleUrl",
            value=self.serving.api.url,
            description="the console: sign in with a user of ConsoleUserPoolId",
        )
        CfnOutput(
            self,
            "ConsoleUserPoolId",
            value=self.serving.console.user_pool.user_pool_id,
            description="aws cognito-idp admin-create-user --user-pool-id <id> --username <email>",
        )
        CfnOutput(
            self,
            "AlarmSubscribers",
            value=self.monitoring.subscribers,
            description="Who alarms reach; prove it with aws cloudwatch set-alarm-state",
        )
        CfnOutput(self, "DashboardName", value=self.monitoring.dashboard.dashboard_name)

    def _acknowledge_cdk_internals(self) -> None:
        # The singleton function CDK deploys to configure bucket notifications (one call per
        # deployment) has its own role, outside this app's control.
        for child in self.node.children:
            if child.node.id.startswith("BucketNotificationsHandler"):
                Validations.of(child).acknowledge(
                    Acknowledgment(
                        id="AwsSolutions::AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::"
                        "aws:policy/service-role/AWSLambdaBasicExecutionRole]",
                        reason="CDK's bucket-notification handler (runs only during deployment) "
                        "is created with this managed policy; its role is not configurable.",
                    )
                )
