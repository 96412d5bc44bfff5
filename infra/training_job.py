"""Training: the training/ container on AWS Batch (Fargate), driven by a Step Functions workflow."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aws_cdk import Duration, RemovalPolicy, Size, Stack
from aws_cdk import aws_batch as batch
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk import aws_stepfunctions_tasks as tasks
from constructs import Construct

from infra.access import bucket_arn_placeholder, wildcard_resource_ack
from infra.bundling import REPO_ROOT
from infra.gpu import GPU_FAMILIES, GPU_JOB_DEFINITION_NAME, GpuQueue
from tessera.config import DEFAULT_FAMILY, PIPELINE, Env

TRAINING_DOCKERFILE = "training/Dockerfile"
GPU_TRAINING_DOCKERFILE = "training/Dockerfile.gpu"
RUN_STATUS_FILE = "status.json"  # training/train.py: runs/<run id>/status.json
# Kept out of the Docker build context (and out of the asset hash computed at synth).
BUILD_CONTEXT_EXCLUDES = [
    ".git",
    ".venv",
    "node_modules",
    "cdk.out",
    "cdk.out.gpu",
    "build",
    "runs",
    "**/__pycache__",
    "**/*.pyc",
    ".mypy_cache",
    ".pytest_cache",
    ".ruff_cache",
    ".hypothesis",
    "*.egg-info",
]

# A hyper-parameter search over MNIST-sized data: 4 vCPU / 16 GiB finishes in minutes and costs
# about $0.25 per hour of Fargate (us-east-1); the timeout stops a runaway search.
JOB_VCPUS = 4
JOB_MEMORY = Size.gibibytes(16)
JOB_TIMEOUT = Duration.hours(2)
WORKFLOW_TIMEOUT = Duration.hours(3)
MAX_VCPUS = 16  # at most four jobs at once
JOB_DEFINITION_NAME = f"{PIPELINE.project}-training"

# The job's exit is final when the code failed; these platform failures are worth a new attempt.
# "Host EC2*" is an instance taken away under the job (a spot reclaim: "Host EC2 (instance i-...)
# terminated."), whether or not the container left an exit code; it must come before the exit
# code rule, since Batch takes the first rule that matches (at most 5 rules).
PLATFORM_FAILURES = (
    batch.Reason.CANNOT_PULL_CONTAINER,
    batch.Reason.custom(on_status_reason="ResourceInitializationError*"),
    batch.Reason.custom(on_status_reason="Timeout waiting for network interface*"),
    batch.Reason.custom(on_status_reason="Host EC2*"),
)


@dataclass(frozen=True)
class Routed:
    """A job step that may be a choice of queues: where it starts, the submits it ends in."""

    start: sfn.IChainable
    ends: list[sfn.CustomState]


def _image(dockerfile: str) -> ecs.ContainerImage:
    return ecs.ContainerImage.from_asset(
        str(REPO_ROOT),
        file=dockerfile,
        exclude=BUILD_CONTEXT_EXCLUDES,
        platform=ecr_assets.Platform.LINUX_AMD64,
    )


def _retry_strategies() -> list[batch.RetryStrategy]:
    """A failure to start a container or a lost host is retried; the code's own exit is final."""
    return [
        *(batch.RetryStrategy.of(batch.Action.RETRY, r) for r in PLATFORM_FAILURES),
        batch.RetryStrategy.of(batch.Action.EXIT, batch.Reason.custom(on_exit_code="*")),
    ]


class Training(Construct):
    """POST /train, the CLI or the schedule start one execution: `{"dataset": "<name>"}`.

    The workflow runs the job and waits for it. The job trains, evaluates the candidate and the
    current champion on the same held-out rows, and promotes the candidate when it is at least as
    accurate (training/train.py). The workflow then reads the run's report (runs/<execution
    name>/status.json: version, accuracy, promoted) into its output and ends in NewChampion or
    ChampionKept, so `describe-execution` says what the run did. Batch API hiccups are retried by
    the workflow, failures to start a container and a lost host (a spot reclaim) by the job
    definition; anything else fails the execution with the error and its cause, which monitoring
    turns into an e-mail.

    The input's `family` (default mlp) is the job's TESSERA_FAMILY. With `gpu`, a second queue
    on GPU instances (infra/gpu.py) takes the runs that fit a Keras family (or all of them).
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        bucket: s3.IBucket,
        environment: Mapping[str, str],
        schedule: str | None,
        gpu: bool = False,
        gpu_spot: bool = False,
    ) -> None:
        super().__init__(scope, construct_id)
        self.vpc = ec2.Vpc(
            self,
            "Network",
            max_azs=2,
            # No NAT gateway (about $33 a month each, even idle): tasks get a public IP in a
            # public subnet, reach ECR over HTTPS and S3 through the free gateway endpoint, and
            # their security group admits no inbound traffic at all.
            nat_gateways=0,
            subnet_configuration=[
                ec2.SubnetConfiguration(
                    name="public", subnet_type=ec2.SubnetType.PUBLIC, cidr_mask=24
                )
            ],
            restrict_default_security_group=True,
            flow_logs={
                "all": ec2.FlowLogOptions(
                    destination=ec2.FlowLogDestination.to_cloud_watch_logs(
                        logs.LogGroup(
                            self,
                            "FlowLogs",
                            retention=logs.RetentionDays.ONE_MONTH,
                            removal_policy=RemovalPolicy.DESTROY,
                        )
                    ),
                    traffic_type=ec2.FlowLogTrafficType.ALL,
                )
            },
        )
        self.s3_endpoint = self.vpc.add_gateway_endpoint(
            "S3", service=ec2.GatewayVpcEndpointAwsService.S3
        )
        # The endpoint carries only what the job needs: this stack's bucket, and the bucket ECR
        # serves image layers from (Fargate pulls them through this endpoint).
        stack = Stack.of(self)
        self.s3_endpoint.add_to_policy(
            iam.PolicyStatement(
                principals=[iam.AnyPrincipal()],
                actions=["s3:GetObject", "s3:PutObject", "s3:ListBucket"],
                resources=[bucket.bucket_arn, bucket.arn_for_objects("*")],
            )
        )
        self.s3_endpoint.add_to_policy(
            iam.PolicyStatement(
                principals=[iam.AnyPrincipal()],
                actions=["s3:GetObject"],
                resources=[
                    f"arn:{stack.partition}:s3:::prod-{stack.region}-starport-layer-bucket/*"
                ],
            )
        )
        security_group = ec2.SecurityGroup(
            self,
            "JobSecurityGroup",
            vpc=self.vpc,
            description="Training jobs: HTTPS out (ECR, S3, CloudWatch Logs), nothing in",
            allow_all_outbound=False,
        )
        security_group.add_egress_rule(ec2.Peer.any_ipv4(), ec2.Port.tcp(443), "HTTPS out")

        compute = batch.FargateComputeEnvironment(
            self,
            "Compute",
            vpc=self.vpc,
            vpc_subnets=ec2.SubnetSelection(subnet_type=ec2.SubnetType.PUBLIC),
            security_groups=[security_group],
            maxv_cpus=MAX_VCPUS,
            spot=False,
        )
        self.job_queue = batch.JobQueue(
            self,
            "Queue",
            job_queue_name=f"{PIPELINE.project}-training",
            compute_environments=[
                batch.OrderedComputeEnvironment(compute_environment=compute, order=1)
            ],
        )

        self.job_role = iam.Role(
            self,
            "JobRole",
            assumed_by=iam.ServicePrincipal("ecs-tasks.amazonaws.com"),
            description="What the training container may do: the bucket prefixes it is granted",
        )
        self.job_logs = logs.LogGroup(
            self,
            "JobLogs",
            log_group_name=f"/aws/batch/{PIPELINE.project}-training",
            retention=logs.RetentionDays.THREE_MONTHS,
            removal_policy=RemovalPolicy.DESTROY,
        )
        container = batch.EcsFargateContainerDefinition(
            self,
            "Container",
            image=_image(TRAINING_DOCKERFILE),
            cpu=JOB_VCPUS,
            memory=JOB_MEMORY,
            fargate_cpu_architecture=ecs.CpuArchitecture.X86_64,
            fargate_operating_system_family=ecs.OperatingSystemFamily.LINUX,
            assign_public_ip=True,
            # The image's ENTRYPOINT is `python -m training.train`; Batch supplies the arguments.
            command=["--dataset", "Ref::dataset"],
            environment={**environment, Env.JOBS: str(JOB_VCPUS)},
            job_role=self.job_role,
            logging=ecs.LogDriver.aws_logs(stream_prefix="training", log_group=self.job_logs),
            readonly_root_filesystem=False,
        )
        job_definition_props = {
            "parameters": {"dataset": PIPELINE.default_dataset},
            "timeout": JOB_TIMEOUT,
            "retry_attempts": 3,
            "propagate_tags": True,
        }
        self.job_definition = batch.EcsJobDefinition(
            self,
            "JobDefinition",
            job_definition_name=JOB_DEFINITION_NAME,
            container=container,
            retry_strategies=_retry_strategies(),
            **job_definition_props,  # type: ignore[arg-type]
        )
        self._acknowledge_execution_role(container.execution_role)
        self.gpu: GpuQueue | None = None
        if gpu:
            self.gpu = GpuQueue(
                self,
                "Gpu",
                vpc=self.vpc,
                security_group=security_group,
                image=_image(GPU_TRAINING_DOCKERFILE),
                job_role=self.job_role,
                job_logs=self.job_logs,
                environment=environment,
                job_definition_props=job_definition_props,
                retry_strategies=_retry_strategies(),
                spot=gpu_spot,
            )
            self._acknowledge_execution_role(self.gpu.container.execution_role)

        self.state_machine = self._workflow(bucket)
        if schedule:
            events.Rule(
                self,
                "Schedule",
                description="Retrains the default dataset on a schedule",
                schedule=events.Schedule.expression(schedule),
                targets=[
                    targets.SfnStateMachine(
                        self.state_machine,
                        input=events.RuleTargetInput.from_object(
                            {"dataset": PIPELINE.default_dataset}
                        ),
                    )
                ],
            )

    def _submit_job(
        self,
        name: str,
        environment: list[dict[str, str]],
        *,
        array_size: str | None = None,
        on_gpu: bool = False,
    ) -> sfn.CustomState:
        """One run of the training job definition, waited for (.sync). The Batch integration is
        written out, not tasks.BatchSubmitJob: that construct grants SubmitJob on every job
        definition in the account, and neither TerminateJob nor DescribeJobs, so an aborted or
        timed-out execution would leave its job running."""
        stack = Stack.of(self)
        queue, definition = self.job_queue, self.job_definition
        if on_gpu:
            assert self.gpu is not None
            queue, definition = self.gpu.job_queue, self.gpu.job_definition
        parameters: dict[str, Any] = {
            "JobName": f"{PIPELINE.project}-{'search' if array_size else 'training'}",
            "JobQueue": queue.job_queue_arn,
            "JobDefinition": definition.job_definition_arn,
            "Parameters": {"dataset.$": "$.dataset"},
            "ContainerOverrides": {"Environment": environment},
        }
        if array_size is not None:
            parameters["ArrayProperties"] = {"Size.$": array_size}
        state = sfn.CustomState(
            self,
            name,
            state_json={
                "Type": "Task",
                "Resource": f"arn:{stack.partition}:states:::batch:submitJob.sync",
                "Parameters": parameters,
                "ResultSelector": {"jobId.$": "$.JobId", "status.$": "$.Status"},
                "ResultPath": "$.searchJob" if array_size else "$.job",
            },
        )
        state.add_retry(
            errors=["Batch.AWSBatchException", "Batch.ServerException"],
            interval=Duration.seconds(30),
            max_attempts=3,
            backoff_rate=2,
        )
        return state

    def _by_family(
        self, name: str, environment: list[dict[str, str]], *, record_failure: sfn.IChainable
    ) -> Routed:
        """The job on the CPU queue; with a GPU queue, a choice first that sends the Keras
        families (and all) to the GPU job definition instead."""
        cpu = self._submit_job(name, environment)
        cpu.add_catch(record_failure, result_path="$.error")
        if self.gpu is None:
            return Routed(start=cpu, ends=[cpu])
        gpu = self._submit_job(f"{name}OnGpu", environment, on_gpu=True)
        gpu.add_catch(record_failure, result_path="$.error")
        keras = sfn.Condition.or_(
            *(sfn.Condition.string_equals("$.family", family) for family in GPU_FAMILIES)
        )
        choice = sfn.Choice(self, f"{name}Where").when(keras, gpu).otherwise(cpu)
        return Routed(start=choice, ends=[cpu, gpu])

    def _record_failure(self, bucket: s3.IBucket, failed: sfn.Fail) -> sfn.IChainable:
        """A job that failed on its own has written `failed` with its reason; one that was
        killed (out of memory, a spot reclaim, the job timeout) wrote nothing past `running`.
        The workflow reads the run's status and, unless it already says failed, writes
        `failed` with the Batch error, so every run records an outcome. Then TrainingFailed."""
        status_key = sfn.JsonPath.format(
            f"{PIPELINE.prefixes.runs}{{}}/{RUN_STATUS_FILE}",
            sfn.JsonPath.string_at("$$.Execution.Name"),
        )
        runs = [bucket.arn_for_objects(f"{PIPELINE.prefixes.runs}*")]
        read = tasks.CallAwsService(
            self,
            "ReadFailedRun",
            service="s3",
            action="getObject",
            parameters={"Bucket": bucket.bucket_name, "Key": status_key},
            iam_action="s3:GetObject",
            iam_resources=runs,
            result_selector={
                "report": sfn.JsonPath.string_to_json(sfn.JsonPath.string_at("$.Body"))
            },
            result_path="$.run",
        )
        record = tasks.CallAwsService(
            self,
            "RecordFailure",
            service="s3",
            action="putObject",
            parameters={
                "Bucket": bucket.bucket_name,
                "Key": status_key,
                "ContentType": "application/json",
                "Body": sfn.JsonPath.json_to_string(sfn.JsonPath.object_at("$.failure")),
            },
            iam_action="s3:PutObject",
            iam_resources=runs,
            result_path=sfn.JsonPath.DISCARD,
        )
        describe = sfn.Pass(
            self,
            "DescribeFailure",
            parameters={
                "run_id": sfn.JsonPath.string_at("$$.Execution.Name"),
                "status": "failed",
                "error": {
                    "code": "job_ended",
                    "message": "the training job ended without a result",
                    "batch_error": sfn.JsonPath.string_at("$.error.Error"),
                    "cause": sfn.JsonPath.string_at("$.error.Cause"),
                },
                "recorded_by": "workflow",
            },
            result_path="$.failure",
        )
        # an unreadable status (none written yet) is recorded too
        read.add_catch(describe, result_path="$.readError")
        record.add_catch(failed, result_path="$.recordError")
        describe.next(record).next(failed)
        already = sfn.Condition.and_(
            sfn.Condition.is_present("$.run.report.status"),
            sfn.Condition.string_equals("$.run.report.status", "failed"),
        )
        read.next(sfn.Choice(self, "FailureRecorded").when(already, failed).otherwise(describe))
        return read

    def _workflow(self, bucket: s3.IBucket) -> sfn.StateMachine:
        failed = sfn.Fail(
            self, "TrainingFailed", error_path="$.error.Error", cause_path="$.error.Cause"
        )
        record_failure = self._record_failure(bucket, failed)
        run_id = {"Name": Env.RUN_ID, "Value.$": "$$.Execution.Name"}
        family = {"Name": Env.FAMILY, "Value.$": "$.family"}
        train = self._by_family("TrainAndPromote", [run_id, family], record_failure=record_failure)
        # With "search_workers": N, the exhaustive search fans out first: an array job of N
        # children of the same image and entry point, each scoring its slice of the grid into
        # runs/<execution name>/search/ (training.fanout); then the job gathers and trains. The
        # children fit the MLP's grid only: they run on the CPU queue whatever the family.
        fan_out = self._submit_job(
            "SearchFanOut",
            [
                run_id,
                {"Name": Env.SEARCH, "Value": "exhaustive"},
                {"Name": Env.SEARCH_SHARD, "Value.$": "States.Format('-/{}', $.search_workers)"},
            ],
            array_size="$.search_workers",
        )
        fan_out.add_catch(record_failure, result_path="$.error")
        train_searched = self._by_family(
            "TrainSearched",
            [
                run_id,
                family,
                {"Name": Env.SEARCH, "Value": "exhaustive"},
                {"Name": Env.SEARCH_SHARDS, "Value.$": "States.Format('{}', $.search_workers)"},
            ],
            record_failure=record_failure,
        )
        fan_out.next(train_searched.start)

        # training/train.py records each run in runs/<run id>/status.json; the run id is the
        # execution name (TESSERA_RUN_ID), so the workflow knows where to read the outcome.
        read_report = tasks.CallAwsService(
            self,
            "ReadRunReport",
            service="s3",
            action="getObject",
            parameters={
                "Bucket": bucket.bucket_name,
                "Key": sfn.JsonPath.format(
                    f"{PIPELINE.prefixes.runs}{{}}/{RUN_STATUS_FILE}",
                    sfn.JsonPath.string_at("$$.Execution.Name"),
                ),
            },
            iam_action="s3:GetObject",
            iam_resources=[bucket.arn_for_objects(f"{PIPELINE.prefixes.runs}*")],
            result_selector={
                "report": sfn.JsonPath.string_to_json(sfn.JsonPath.string_at("$.Body"))
            },
            result_path="$.run",
        )
        read_report.add_retry(
            errors=["S3.S3Exception", "S3.SdkClientException"],
            interval=Duration.seconds(5),
            max_attempts=3,
            backoff_rate=2,
        )
        read_report.add_catch(failed, result_path="$.error")

        use_default = sfn.Pass(
            self,
            "UseDefaultDataset",
            result=sfn.Result.from_string(PIPELINE.default_dataset),
            result_path="$.dataset",
        )
        search_wanted = (
            sfn.Choice(self, "SearchWanted")
            .when(sfn.Condition.is_present("$.search_workers"), fan_out)
            .otherwise(train.start)
        )
        use_default_family = sfn.Pass(
            self,
            "UseDefaultFamily",
            result=sfn.Result.from_string(DEFAULT_FAMILY),
            result_path="$.family",
        )
        family_given = (
            sfn.Choice(self, "FamilyGiven")
            .when(sfn.Condition.is_present("$.family"), search_wanted)
            .otherwise(use_default_family.next(search_wanted))
        )
        definition = (
            sfn.Choice(self, "DatasetGiven")
            .when(sfn.Condition.is_present("$.dataset"), family_given)
            .otherwise(use_default.next(family_given))
        )
        outcome = (
            sfn.Choice(self, "Promoted")
            .when(
                sfn.Condition.boolean_equals("$.run.report.promoted", True),
                sfn.Succeed(self, "NewChampion", comment="the candidate now serves"),
            )
            .otherwise(sfn.Succeed(self, "ChampionKept", comment="the champion was more accurate"))
        )
        read_report.next(outcome)
        for submit in (*train.ends, *train_searched.ends):
            submit.next(read_report)

        logs_group = logs.LogGroup(
            self,
            "WorkflowLogs",
            log_group_name=f"/aws/vendedlogs/states/{PIPELINE.project}-training",
            retention=logs.RetentionDays.THREE_MONTHS,
            removal_policy=RemovalPolicy.DESTROY,
        )
        state_machine = sfn.StateMachine(
            self,
            "Workflow",
            state_machine_name=f"{PIPELINE.project}-training",
            definition_body=sfn.DefinitionBody.from_chainable(definition),
            state_machine_type=sfn.StateMachineType.STANDARD,
            timeout=WORKFLOW_TIMEOUT,
            tracing_enabled=True,
            logs=sfn.LogOptions(destination=logs_group, level=sfn.LogLevel.ALL),
        )
        self._grant_batch_run_job(state_machine.role)
        for resource, reason in (
            (
                "*",
                "X-Ray, CloudWatch Logs delivery (logs:CreateLogDelivery and friends) and "
                "batch:DescribeJobs support no resource-level permissions.",
            ),
            (
                f"{bucket_arn_placeholder(bucket)}/{PIPELINE.prefixes.runs}*",
                "The workflow reads runs/<execution name>/status.json; the name is known only "
                "at run time.",
            ),
            *(
                (
                    f"arn:<AWS::Partition>:batch:<AWS::Region>:<AWS::AccountId>:job-definition/"
                    f"{name}:*",
                    "SubmitJob on this stack's job definition, any revision (an ARN pins one "
                    "and a redeploy adds the next); the job queue, hence the compute, is this "
                    "stack's own.",
                )
                for name in (
                    (JOB_DEFINITION_NAME, GPU_JOB_DEFINITION_NAME)
                    if self.gpu
                    else (JOB_DEFINITION_NAME,)
                )
            ),
            (
                "arn:<AWS::Partition>:batch:<AWS::Region>:<AWS::AccountId>:job/*",
                "TerminateJob, so an aborted or timed-out execution stops its job; job ids are "
                "known only at run time, and the role can submit to this stack's queue only.",
            ),
        ):
            wildcard_resource_ack(state_machine.role, resource, reason)
        return state_machine

    def _grant_batch_run_job(self, role: iam.IRole) -> None:
        """What the .sync Batch integration needs, and no more (AWS documents these actions)."""
        stack = Stack.of(self)

        def arn(resource: str) -> str:
            return f"arn:{stack.partition}:batch:{stack.region}:{stack.account}:{resource}"

        submit = [arn(f"job-definition/{JOB_DEFINITION_NAME}:*"), self.job_queue.job_queue_arn]
        if self.gpu is not None:
            submit += [
                arn(f"job-definition/{GPU_JOB_DEFINITION_NAME}:*"),
                self.gpu.job_queue.job_queue_arn,
            ]
        for statement in (
            iam.PolicyStatement(actions=["batch:SubmitJob"], resources=submit),
            iam.PolicyStatement(actions=["batch:TerminateJob"], resources=[arn("job/*")]),
            # DescribeJobs supports no resource-level permission.
            iam.PolicyStatement(actions=["batch:DescribeJobs"], resources=["*"]),
            iam.PolicyStatement(
                actions=["events:PutTargets", "events:PutRule", "events:DescribeRule"],
                resources=[
                    f"arn:{stack.partition}:events:{stack.region}:{stack.account}:rule/"
                    "StepFunctionsGetEventsForBatchJobsRule"
                ],
            ),
        ):
            role.add_to_principal_policy(statement)

    def _acknowledge_execution_role(self, execution_role: iam.IRole) -> None:
        wildcard_resource_ack(
            execution_role,
            "*",
            "ecr:GetAuthorizationToken supports no resource-level permission; image pulls "
            "themselves are limited to the asset repository.",
        )
