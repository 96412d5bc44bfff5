"""A GPU job queue for the Keras families (`-c tessera:gpu=true`): AWS Batch on EC2 instances
with an NVIDIA GPU, beside the Fargate queue that trains everything else.

Fargate has no GPUs, so the GPU queue is a managed EC2 compute environment: g4dn.xlarge
instances (4 vCPUs, 16 GiB, one NVIDIA T4) on the ECS-optimized Amazon Linux 2023 NVIDIA AMI,
scaled from zero (no instance, no cost, while no job waits) to `GPU_MAX_VCPUS`. They sit in the
training network's public subnets behind the job security group (HTTPS out, nothing in), with
IMDSv2 only and an encrypted root volume; the job runs training/Dockerfile.gpu, the CPU image
with CUDA TensorFlow, under the same job role as the CPU job.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from aws_cdk import Acknowledgment, Size, Validations
from aws_cdk import aws_batch as batch
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from constructs import Construct

from tessera.config import KERAS_FAMILIES, PIPELINE, Env

# One NVIDIA T4 per instance: $0.526 an hour on demand in us-east-1 (about $0.16 on spot).
GPU_INSTANCE_TYPE = "g4dn.xlarge"
GPU_JOB_VCPUS = 4
# What ECS leaves a job of the instance's 16 GiB once its agent and the OS have theirs.
GPU_JOB_MEMORY_MIB = 14 * 1024
GPU_MAX_VCPUS = 8  # two instances, two jobs at once; the account's G-instance quota caps it too
GPU_ROOT_VOLUME_GIB = 100  # the CUDA image is about 8 GB; Docker unpacks it beside its layers
GPU_JOB_DEFINITION_NAME = f"{PIPELINE.project}-training-gpu"
# What the workflow sends to the GPU queue: the Keras families, and `all`, which fits them too.
GPU_FAMILIES = (*KERAS_FAMILIES, "all")


class GpuQueue(Construct):
    """The compute environment, its queue and the GPU job definition."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        vpc: ec2.IVpc,
        security_group: ec2.ISecurityGroup,
        image: ecs.ContainerImage,
        job_role: iam.IRole,
        job_logs: logs.ILogGroup,
        environment: Mapping[str, str],
        job_definition_props: Mapping[str, object],
        retry_strategies: Sequence[batch.RetryStrategy],
        spot: bool,
    ) -> None:
        super().__init__(scope, construct_id)
        launch_template = ec2.LaunchTemplate(
            self,
            "Instances",
            # IMDSv2 only, one hop: the ECS agent (host network) reaches it, the job's container
            # (bridge network) does not, so the job holds its job role and never the instances'.
            require_imdsv2=True,
            http_put_response_hop_limit=1,
            block_devices=[
                ec2.BlockDevice(
                    device_name="/dev/xvda",
                    volume=ec2.BlockDeviceVolume.ebs(
                        GPU_ROOT_VOLUME_GIB,
                        encrypted=True,
                        volume_type=ec2.EbsDeviceVolumeType.GP3,
                        delete_on_termination=True,
                    ),
                )
            ],
        )
        self.compute = batch.ManagedEc2EcsComputeEnvironment(
            self,
            "Compute",
            vpc=vpc,
            vpc_subnets=ec2.SubnetSelection(subnet_type=ec2.SubnetType.PUBLIC),
            security_groups=[security_group],
            instance_types=[ec2.InstanceType(GPU_INSTANCE_TYPE)],
            use_optimal_instance_classes=False,
            images=[batch.EcsMachineImage(image_type=batch.EcsMachineImageType.ECS_AL2023_NVIDIA)],
            launch_template=launch_template,
            minv_cpus=0,
            maxv_cpus=GPU_MAX_VCPUS,
            spot=spot,
            update_to_latest_image_version=True,
        )
        Validations.of(self.compute).acknowledge(
            Acknowledgment(
                id="AwsSolutions::AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/"
                "service-role/AmazonEC2ContainerServiceforEC2Role]",
                reason="The instances' role: what the ECS agent on a Batch EC2 instance needs "
                "(register, poll for tasks, pull the image, ship logs), as AWS maintains it.",
            )
        )
        self.job_queue = batch.JobQueue(
            self,
            "Queue",
            job_queue_name=f"{PIPELINE.project}-training-gpu",
            compute_environments=[
                batch.OrderedComputeEnvironment(compute_environment=self.compute, order=1)
            ],
        )
        self.container = batch.EcsEc2ContainerDefinition(
            self,
            "Container",
            image=image,
            cpu=GPU_JOB_VCPUS,
            memory=Size.mebibytes(GPU_JOB_MEMORY_MIB),
            gpu=1,
            command=["--dataset", "Ref::dataset"],
            environment={**environment, Env.JOBS: str(GPU_JOB_VCPUS)},
            job_role=job_role,
            logging=ecs.LogDriver.aws_logs(stream_prefix="training-gpu", log_group=job_logs),
            readonly_root_filesystem=False,
        )
        self.job_definition = batch.EcsJobDefinition(
            self,
            "JobDefinition",
            job_definition_name=GPU_JOB_DEFINITION_NAME,
            container=self.container,
            retry_strategies=list(retry_strategies),
            **job_definition_props,  # type: ignore[arg-type]
        )
