"""The GPU job queue (`-c tessera:gpu=true`): EC2 GPU instances from zero, the CUDA image, and
a workflow that sends the Keras families there; off by default."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from infra.gpu import GPU_FAMILIES, GPU_INSTANCE_TYPE, GPU_JOB_VCPUS
from infra.training_job import GPU_TRAINING_DOCKERFILE, TRAINING_DOCKERFILE
from tessera.config import KERAS_FAMILIES, MODEL_FAMILIES
from tests.infra.conftest import REPO_ROOT, TEST_CONTEXT, Synthesized, synthesize
from tests.infra.infra_template_tools import (
    logical_id,
    only,
    resources,
    resources_for_action,
    role_statements,
    state_machine_definition,
)


@pytest.fixture(scope="module")
def with_gpu(tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    # synthesize() runs cdk-nag: an unacknowledged finding fails here
    return synthesize(tmp_path_factory.mktemp("cdk.out.gpu"), {**TEST_CONTEXT, "tessera:gpu": True})


@pytest.fixture(scope="module")
def states(with_gpu: Synthesized) -> dict[str, Any]:
    states: dict[str, Any] = state_machine_definition(with_gpu.template)["States"]
    return states


def queue_arn(queue: Any) -> str:
    """How the rendered definition names a job queue."""
    return f"<{logical_id(queue)}.JobQueueArn>"


def test_no_gpu_queue_unless_asked(synthesized: Synthesized) -> None:
    assert synthesized.stack.training.gpu is None
    environments = resources(synthesized.template, "AWS::Batch::ComputeEnvironment")
    assert [e["Properties"]["ComputeResources"]["Type"] for e in environments.values()] == [
        "FARGATE"
    ]
    states = state_machine_definition(synthesized.template)["States"]
    assert not [name for name in states if name.endswith("OnGpu")]


def test_gpu_instances_start_from_zero_on_the_nvidia_ami(with_gpu: Synthesized) -> None:
    environments = resources(with_gpu.template, "AWS::Batch::ComputeEnvironment").values()
    (resources_,) = [
        e["Properties"]["ComputeResources"]
        for e in environments
        if e["Properties"]["ComputeResources"]["Type"] == "EC2"
    ]
    assert resources_["InstanceTypes"] == [GPU_INSTANCE_TYPE]
    assert resources_["MinvCpus"] == 0  # nothing runs, nothing is billed, while no job waits
    assert resources_["Ec2Configuration"] == [{"ImageType": "ECS_AL2023_NVIDIA"}]
    assert "BidPercentage" not in resources_  # on demand unless tessera:gpu_spot
    # the CPU queue's network and security group: HTTPS out, nothing in
    fargate = [
        e["Properties"]["ComputeResources"]
        for e in resources(with_gpu.template, "AWS::Batch::ComputeEnvironment").values()
        if e["Properties"]["ComputeResources"]["Type"] == "FARGATE"
    ]
    assert resources_["SecurityGroupIds"] == fargate[0]["SecurityGroupIds"]
    assert resources_["Subnets"] == fargate[0]["Subnets"]


def test_gpu_instances_take_imdsv2_only_and_encrypt_their_disk(with_gpu: Synthesized) -> None:
    (template,) = resources(with_gpu.template, "AWS::EC2::LaunchTemplate").values()
    data = template["Properties"]["LaunchTemplateData"]
    # one hop: the ECS agent reaches the metadata service, the job's container does not
    assert data["MetadataOptions"] == {"HttpTokens": "required", "HttpPutResponseHopLimit": 1}
    (disk,) = data["BlockDeviceMappings"]
    assert disk["Ebs"]["Encrypted"] is True and disk["Ebs"]["DeleteOnTermination"] is True


def test_the_gpu_job_asks_for_a_gpu_and_runs_the_cuda_image(with_gpu: Synthesized) -> None:
    _, job = only(
        with_gpu.template, "AWS::Batch::JobDefinition", JobDefinitionName="tessera-training-gpu"
    )
    props = job["Properties"]
    assert props["PlatformCapabilities"] == ["EC2"]
    container = props["ContainerProperties"]
    requirements = {r["Type"]: r["Value"] for r in container["ResourceRequirements"]}
    assert requirements["GPU"] == "1" and requirements["VCPU"] == str(GPU_JOB_VCPUS)
    # the same job role, command and retry rules as the CPU job
    _, cpu = only(
        with_gpu.template, "AWS::Batch::JobDefinition", JobDefinitionName="tessera-training"
    )
    for key in ("JobRoleArn", "Command"):
        assert container[key] == cpu["Properties"]["ContainerProperties"][key]
    assert props["RetryStrategy"] == cpu["Properties"]["RetryStrategy"]
    assert container["Image"] != cpu["Properties"]["ContainerProperties"]["Image"]


def test_the_workflow_sends_the_keras_families_to_the_gpu_queue(
    with_gpu: Synthesized, states: dict[str, Any]
) -> None:
    assert set(GPU_FAMILIES) == {*KERAS_FAMILIES, "all"} and "mlp" not in GPU_FAMILIES
    for name in ("TrainAndPromote", "TrainSearched"):
        where = states[f"{name}Where"]
        (keras,) = where["Choices"]
        assert {c["StringEquals"] for c in keras["Or"]} == set(GPU_FAMILIES)
        assert {c["Variable"] for c in keras["Or"]} == {"$.family"}
        gpu, cpu = states[keras["Next"]], states[where["Default"]]
        assert keras["Next"] == f"{name}OnGpu" and where["Default"] == name
        assert gpu["Parameters"]["JobQueue"] == queue_arn(with_gpu.stack.training.gpu.job_queue)  # type: ignore[union-attr]
        assert cpu["Parameters"]["JobQueue"] == queue_arn(with_gpu.stack.training.job_queue)
        # both report alike: the same environment, the same catch, the same next state
        for key in ("Next", "Catch", "Retry"):
            assert gpu[key] == cpu[key], key
        assert gpu["Parameters"]["ContainerOverrides"] == cpu["Parameters"]["ContainerOverrides"]
    # the search's children fit the MLP's grid: the CPU queue, whatever the family
    assert states["SearchFanOut"]["Parameters"]["JobQueue"] == queue_arn(
        with_gpu.stack.training.job_queue
    )
    assert states["SearchWanted"]["Default"] == "TrainAndPromoteWhere"
    assert states["SearchFanOut"]["Next"] == "TrainSearchedWhere"


def test_the_workflow_may_submit_to_both_queues_and_nothing_else(with_gpu: Synthesized) -> None:
    role = logical_id(with_gpu.stack.training.state_machine.role)
    submit = resources_for_action(role_statements(with_gpu.template, role), "batch:SubmitJob")
    assert {r.rsplit(":", 2)[-2] for r in submit if "job-definition/" in r} == {
        "job-definition/tessera-training",
        "job-definition/tessera-training-gpu",
    }
    assert len(submit) == 4  # the two definitions (any revision) and the two queues


def test_the_gpu_image_is_the_cpu_image_with_cuda_tensorflow() -> None:
    def lines(dockerfile: str) -> list[str]:
        text = (REPO_ROOT / dockerfile).read_text().replace("\\\n", " ")
        return [line for line in text.splitlines() if line and not line.startswith("#")]

    def environment(lines: list[str]) -> set[str]:
        return {pair for line in lines if line.startswith("ENV ") for pair in line.split()[1:]}

    cpu, gpu = lines(TRAINING_DOCKERFILE), lines(GPU_TRAINING_DOCKERFILE)
    # the same pinned base, code, user and entry point; the requirements are the GPU ones
    kept = [line for line in cpu if "requirements" not in line and not line.startswith("ENV ")]
    assert [
        line for line in gpu if "requirements" not in line and not line.startswith("ENV ")
    ] == kept
    assert environment(cpu) < environment(gpu)
    assert "RUN pip install --no-cache-dir -r training/requirements-gpu.txt" in gpu


def test_gpu_requirements_are_the_cpu_pins_with_tensorflow_for_cuda() -> None:
    from tests.infra.test_pins import pins

    def pinned(name: str) -> dict[str, str]:
        return pins(Path(REPO_ROOT / "training" / name).read_text().splitlines())

    cpu, gpu = pinned("requirements.txt"), pinned("requirements-gpu.txt")
    assert gpu.pop("tensorflow") == cpu.pop("tensorflow-cpu")
    assert gpu == cpu
    assert "tensorflow[and-cuda]==" in (REPO_ROOT / "training" / "requirements-gpu.txt").read_text()
    assert set(KERAS_FAMILIES) < set(MODEL_FAMILIES)


def test_gpu_spot_puts_the_instances_on_spot(tmp_path: Path) -> None:
    spot = synthesize(
        tmp_path / "cdk.out", {**TEST_CONTEXT, "tessera:gpu": True, "tessera:gpu_spot": True}
    )
    environments = resources(spot.template, "AWS::Batch::ComputeEnvironment").values()
    types = {e["Properties"]["ComputeResources"]["Type"] for e in environments}
    assert types == {"FARGATE", "SPOT"}


def batch_decision(rules: list[dict[str, str]], status_reason: str, exit_code: int | None) -> str:
    """What AWS Batch does with a failed attempt: the first rule whose every condition matches
    (a condition is a value or a prefix ending in `*`), RETRY when none does."""

    def matches(pattern: str, value: str | None) -> bool:
        if value is None:
            return False
        if pattern.endswith("*"):
            return value.startswith(pattern[:-1])
        return value == pattern

    for rule in rules:
        conditions = {
            "OnStatusReason": status_reason,
            "OnExitCode": None if exit_code is None else str(exit_code),
        }
        given = {k: v for k, v in rule.items() if k != "Action"}
        if all(matches(pattern, conditions.get(k)) for k, pattern in given.items()):
            return rule["Action"]
    return "RETRY"


@pytest.mark.parametrize(
    ("status_reason", "exit_code", "action"),
    [
        # a spot reclaim: the instance goes; the container may or may not leave an exit code
        ("Host EC2 (instance i-0abc) terminated.", 143, "RETRY"),
        ("Host EC2 (instance i-0abc) terminated.", None, "RETRY"),
        ("CannotPullContainerError: pull access denied", None, "RETRY"),
        # the training code's own failure (a refused dataset, a bug) is final
        ("Essential container in task exited", 1, "EXIT"),
        ("Essential container in task exited", 2, "EXIT"),
    ],
)
def test_a_reclaimed_gpu_instance_retries_the_job_and_a_code_failure_does_not(
    with_gpu: Synthesized, status_reason: str, exit_code: int | None, action: str
) -> None:
    _, job = only(
        with_gpu.template, "AWS::Batch::JobDefinition", JobDefinitionName="tessera-training-gpu"
    )
    rules = job["Properties"]["RetryStrategy"]["EvaluateOnExit"]
    assert len(rules) <= 5  # Batch's limit
    assert batch_decision(rules, status_reason, exit_code) == action
