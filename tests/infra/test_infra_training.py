"""Training: the container on Batch/Fargate and the workflow that runs it."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from aws_cdk.assertions import Template

from infra.training_job import JOB_VCPUS, TRAINING_DOCKERFILE
from tessera.config import PIPELINE
from tests.infra.conftest import REPO_ROOT, Synthesized, synthesize
from tests.infra.infra_template_tools import (
    as_list,
    logical_id,
    only,
    render,
    resources,
    resources_for_action,
    role_statements,
    state_machine_definition,
)


@pytest.fixture(scope="module")
def definition(template: Template) -> dict[str, Any]:
    return state_machine_definition(template)


def _train_state(definition: dict[str, Any]) -> dict[str, Any]:
    state: dict[str, Any] = definition["States"]["TrainAndPromote"]
    assert state["Resource"].endswith(":states:::batch:submitJob.sync")
    return state


def test_jobs_run_on_fargate_with_their_own_role(synthesized: Synthesized) -> None:
    template = synthesized.template
    template.has_resource_properties(
        "AWS::Batch::ComputeEnvironment",
        {
            "Type": "managed",
            "ComputeResources": {
                "Type": "FARGATE",
                "MaxvCpus": 16,
                "Subnets": _any_list(),
                "SecurityGroupIds": _any_list(),
            },
        },
    )
    _, job = only(template, "AWS::Batch::JobDefinition", JobDefinitionName="tessera-training")
    props = job["Properties"]
    assert props["PlatformCapabilities"] == ["FARGATE"]
    container = props["ContainerProperties"]
    assert container["JobRoleArn"] == {
        "Fn::GetAtt": [logical_id(synthesized.stack.training.job_role), "Arn"]
    }
    # The image's ENTRYPOINT runs `python -m training.train`; the command is its arguments.
    assert container["Command"] == ["--dataset", "Ref::dataset"]
    assert props["Parameters"] == {"dataset": PIPELINE.default_dataset}
    assert container["NetworkConfiguration"] == {"AssignPublicIp": "ENABLED"}


def test_the_job_command_completes_the_image_entrypoint(template: Template) -> None:
    # GIVEN the ENTRYPOINT of the training image and the job definition's command
    dockerfile = (REPO_ROOT / TRAINING_DOCKERFILE).read_text().splitlines()
    (entrypoint,) = [
        json.loads(line.removeprefix("ENTRYPOINT"))
        for line in dockerfile
        if line.startswith("ENTRYPOINT")
    ]
    _, job = only(template, "AWS::Batch::JobDefinition", JobDefinitionName="tessera-training")
    # THEN the container runs the training module once, with the dataset parameter
    argv = entrypoint + job["Properties"]["ContainerProperties"]["Command"]
    assert argv == ["python", "-m", "training.train", "--dataset", "Ref::dataset"]


def test_only_platform_failures_are_retried_by_batch(template: Template) -> None:
    _, job = only(template, "AWS::Batch::JobDefinition", JobDefinitionName="tessera-training")
    strategy = job["Properties"]["RetryStrategy"]
    assert strategy["Attempts"] > 1
    *retries, last = strategy["EvaluateOnExit"]
    assert all(r["Action"] == "RETRY" for r in retries)
    assert last == {"Action": "EXIT", "OnExitCode": "*"}


def test_the_job_security_group_admits_nothing_and_sends_only_https(template: Template) -> None:
    _, group = only(
        template,
        "AWS::EC2::SecurityGroup",
        GroupDescription="Training jobs: HTTPS out (ECR, S3, CloudWatch Logs), nothing in",
    )
    props = group["Properties"]
    assert "SecurityGroupIngress" not in props
    assert [(r["FromPort"], r["ToPort"]) for r in props["SecurityGroupEgress"]] == [(443, 443)]


def test_no_nat_gateway_is_deployed(template: Template) -> None:
    template.resource_count_is("AWS::EC2::NatGateway", 0)
    template.resource_count_is("AWS::EC2::FlowLog", 1)


def test_the_workflow_runs_the_job_and_waits_for_it(definition: dict[str, Any]) -> None:
    train = _train_state(definition)
    assert train["Parameters"]["Parameters"] == {"dataset.$": "$.dataset"}
    environment = train["Parameters"]["ContainerOverrides"]["Environment"]
    assert {"Name": "TESSERA_RUN_ID", "Value.$": "$$.Execution.Name"} in environment


def test_the_workflow_retries_transient_batch_errors(definition: dict[str, Any]) -> None:
    (retry,) = _train_state(definition)["Retry"]
    assert "Batch.AWSBatchException" in retry["ErrorEquals"]
    assert "States.ALL" not in retry["ErrorEquals"]
    assert retry["MaxAttempts"] >= 2


def _ends_in(states: dict[str, Any], start: str, target: str) -> bool:
    """Every path from `start` (Next, Choices, Default, Catch) ends in `target`."""
    seen: set[str] = set()
    todo = [start]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        state = states[name]
        following = [state.get("Next"), state.get("Default")]
        following += [c["Next"] for c in state.get("Choices", []) + state.get("Catch", [])]
        following = [f for f in following if f]
        if not following and name != target:
            return False
        todo += following
    return target in seen


def test_every_task_reports_failure_through_the_fail_state(definition: dict[str, Any]) -> None:
    states = definition["States"]
    (fail_name,) = [name for name, s in states.items() if s["Type"] == "Fail"]
    tasks = {name: s for name, s in states.items() if s["Type"] == "Task"}
    # train (or fan the search out, then train), read its report; on failure: read, record
    assert len(tasks) == 6
    for name, task in tasks.items():
        (catch,) = task["Catch"]
        assert catch["ErrorEquals"] == ["States.ALL"], name
        assert _ends_in(states, catch["Next"], fail_name), name
    assert states[fail_name]["ErrorPath"] == "$.error.Error"
    assert states[fail_name]["CausePath"] == "$.error.Cause"


def test_a_search_fans_out_as_an_array_job_of_the_same_image_then_the_job_gathers(
    definition: dict[str, Any],
) -> None:
    states = definition["States"]
    choice = states["SearchWanted"]
    (wanted,) = choice["Choices"]
    assert wanted == {"Variable": "$.search_workers", "IsPresent": True, "Next": "SearchFanOut"}
    assert choice["Default"] == "TrainAndPromote"
    fan_out, train = states["SearchFanOut"], states["TrainSearched"]
    job_definition = _train_state(definition)["Parameters"]["JobDefinition"]
    for state in (fan_out, train):
        assert state["Resource"].endswith(":states:::batch:submitJob.sync")
        assert state["Parameters"]["JobDefinition"] == job_definition  # the same image
    assert fan_out["Parameters"]["ArrayProperties"] == {"Size.$": "$.search_workers"}
    assert "ArrayProperties" not in train["Parameters"]
    children = {e["Name"]: e for e in fan_out["Parameters"]["ContainerOverrides"]["Environment"]}
    assert children["TESSERA_SEARCH_SHARD"]["Value.$"] == (
        "States.Format('-/{}', $.search_workers)"
    )  # each child's index is AWS_BATCH_JOB_ARRAY_INDEX
    assert children["TESSERA_RUN_ID"]["Value.$"] == "$$.Execution.Name"
    job = {e["Name"]: e for e in train["Parameters"]["ContainerOverrides"]["Environment"]}
    assert job["TESSERA_SEARCH_SHARDS"]["Value.$"] == "States.Format('{}', $.search_workers)"
    assert job["TESSERA_SEARCH"]["Value"] == "exhaustive"
    assert fan_out["Next"] == "TrainSearched" and train["Next"] == "ReadRunReport"


def test_a_job_that_dies_without_a_word_still_gets_failed_in_its_status(
    definition: dict[str, Any],
) -> None:
    """Killed (out of memory, spot reclaim, timeout), the job never writes `failed`: the
    workflow reads the run's status and writes it, unless the job already did."""
    states = definition["States"]
    status_key = f"States.Format('{PIPELINE.prefixes.runs}{{}}/status.json', $$.Execution.Name)"
    (catch,) = _train_state(definition)["Catch"]
    assert catch["ResultPath"] == "$.error"
    read = states[catch["Next"]]
    assert read["Resource"].endswith(":states:::aws-sdk:s3:getObject")
    assert read["Parameters"]["Key.$"] == status_key
    choice = states[read["Next"]]
    (already,) = choice["Choices"]
    assert {"Variable": "$.run.report.status", "StringEquals": "failed"} in already["And"]
    assert states[already["Next"]]["Type"] == "Fail"
    describe = states[choice["Default"]]
    assert states[read["Catch"][0]["Next"]] is describe  # no status at all: recorded too
    assert describe["Parameters"]["status"] == "failed"
    assert describe["Parameters"]["error"]["batch_error.$"] == "$.error.Error"
    record = states[describe["Next"]]
    assert record["Resource"].endswith(":states:::aws-sdk:s3:putObject")
    assert record["Parameters"]["Key.$"] == status_key
    assert record["Parameters"]["Body.$"] == "States.JsonToString($.failure)"
    assert states[record["Next"]]["Type"] == "Fail"


def test_the_workflow_reads_the_run_report_and_ends_by_the_promotion_outcome(
    definition: dict[str, Any],
) -> None:
    # GIVEN the state after the training job
    states = definition["States"]
    report = states[_train_state(definition)["Next"]]
    # THEN it reads runs/<execution name>/status.json, which the job writes (TESSERA_RUN_ID)
    assert report["Resource"].endswith(":states:::aws-sdk:s3:getObject")
    assert report["Parameters"]["Key.$"] == (
        f"States.Format('{PIPELINE.prefixes.runs}{{}}/status.json', $$.Execution.Name)"
    )
    # AND the outcome branches on the job's promotion decision
    outcome = states[report["Next"]]
    (promoted,) = outcome["Choices"]
    assert promoted["Variable"] == "$.run.report.promoted"
    assert promoted["BooleanEquals"] is True
    assert states[promoted["Next"]]["Type"] == "Succeed"
    assert states[outcome["Default"]]["Type"] == "Succeed"


def test_the_job_gets_the_bucket_and_uses_every_vcpu(template: Template) -> None:
    _, job = only(template, "AWS::Batch::JobDefinition", JobDefinitionName="tessera-training")
    environment = {
        e["Name"]: e["Value"] for e in job["Properties"]["ContainerProperties"]["Environment"]
    }
    assert "TESSERA_BUCKET" in environment
    assert environment["TESSERA_JOBS"] == str(JOB_VCPUS)


def test_the_workflow_defaults_the_dataset_and_the_family(definition: dict[str, Any]) -> None:
    states = definition["States"]
    start = states[definition["StartAt"]]
    assert start["Type"] == "Choice"
    default = states[start["Default"]]
    # only the dataset is filled in: a family given without a dataset is kept
    assert (default["Result"], default["ResultPath"]) == (PIPELINE.default_dataset, "$.dataset")
    family_given = states[default["Next"]]
    (given,) = family_given["Choices"]
    assert given == {"Variable": "$.family", "IsPresent": True, "Next": "SearchWanted"}
    family = states[family_given["Default"]]
    assert (family["Result"], family["ResultPath"]) == ("mlp", "$.family")
    # every training job fits the family asked for
    for name in ("TrainAndPromote", "TrainSearched"):
        environment = states[name]["Parameters"]["ContainerOverrides"]["Environment"]
        assert {"Name": "TESSERA_FAMILY", "Value.$": "$.family"} in environment


def test_the_workflow_is_logged_and_traced(template: Template) -> None:
    (machine,) = resources(template, "AWS::StepFunctions::StateMachine").values()
    props = machine["Properties"]
    assert props["TracingConfiguration"] == {"Enabled": True}
    assert props["LoggingConfiguration"]["Level"] == "ALL"


def test_a_schedule_starts_training_when_one_is_configured(synthesized: Synthesized) -> None:
    workflow_id = logical_id(synthesized.stack.training.state_machine)
    (rule,) = [
        r
        for r in resources(synthesized.template, "AWS::Events::Rule").values()
        if "ScheduleExpression" in r["Properties"]
    ]
    assert rule["Properties"]["ScheduleExpression"] == "rate(7 days)"
    (target,) = rule["Properties"]["Targets"]
    assert target["Arn"] == {"Ref": workflow_id}
    assert json.loads(target["Input"]) == {"dataset": PIPELINE.default_dataset}


def test_without_a_schedule_nothing_starts_training_on_a_timer(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    bare = synthesize(tmp_path_factory.mktemp("no-schedule"), {"tessera:bundle": False})
    assert not [
        r
        for r in resources(bare.template, "AWS::Events::Rule").values()
        if "ScheduleExpression" in r["Properties"]
    ]
    bare.template.resource_count_is("AWS::SNS::Subscription", 0)


def test_the_training_image_is_a_docker_asset_built_at_deploy_time(
    synthesized: Synthesized,
) -> None:
    manifest = json.loads((synthesized.outdir / "Tessera.assets.json").read_text())
    (image,) = manifest["dockerImages"].values()
    assert image["source"]["dockerFile"] == TRAINING_DOCKERFILE
    assert image["source"]["platform"] == "linux/amd64"
    # Staged, not built: the build context is a copy of the repo without the heavy folders.
    context = synthesized.outdir / image["source"]["directory"]
    assert (context / TRAINING_DOCKERFILE).is_file()
    assert not (context / ".venv").exists()
    assert not (context / "node_modules").exists()


def _any_list() -> Any:
    from aws_cdk.assertions import Match

    return Match.any_value()


def _workflow_statements(synthesized: Synthesized) -> list[dict[str, Any]]:
    role_id = logical_id(synthesized.stack.training.state_machine.role)
    return role_statements(synthesized.template, role_id)


def test_the_workflow_may_submit_only_this_stacks_job(synthesized: Synthesized) -> None:
    statements = _workflow_statements(synthesized)
    submit = resources_for_action(statements, "batch:SubmitJob")
    # THEN SubmitJob names this job definition (any revision) and this queue, nothing wider
    assert any(r.endswith(":job-definition/tessera-training:*") for r in submit)
    assert not any(r.endswith(":job-definition/*") for r in submit)
    assert any("JobQueueArn" in r for r in submit) and len(submit) == 2


def test_an_aborted_execution_can_stop_its_job(synthesized: Synthesized) -> None:
    statements = _workflow_statements(synthesized)
    assert resources_for_action(statements, "batch:TerminateJob") == {
        "arn:<AWS::Partition>:batch:<AWS::Region>:<AWS::AccountId>:job/*"
    }
    assert resources_for_action(statements, "batch:DescribeJobs") == {"*"}


def test_the_s3_endpoint_admits_only_this_bucket_and_ecr_layers(synthesized: Synthesized) -> None:
    (endpoint,) = resources(synthesized.template, "AWS::EC2::VPCEndpoint").values()
    statements = endpoint["Properties"]["PolicyDocument"]["Statement"]
    targets = {render(r) for s in statements for r in as_list(s["Resource"])}
    bucket = logical_id(synthesized.stack.storage.bucket)
    assert targets == {
        f"<{bucket}.Arn>",
        f"<{bucket}.Arn>/*",
        "arn:<AWS::Partition>:s3:::prod-<AWS::Region>-starport-layer-bucket/*",
    }


def test_the_training_base_image_is_pinned_by_digest() -> None:
    (base,) = [
        line.split()[1]
        for line in (REPO_ROOT / TRAINING_DOCKERFILE).read_text().splitlines()
        if line.startswith("FROM ")
    ]
    name, _, digest = base.partition("@")
    assert name == "python:3.11-slim"
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", digest)
