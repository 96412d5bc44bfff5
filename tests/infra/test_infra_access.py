"""IAM: each component reaches only the bucket prefixes it consumes or produces."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from aws_cdk import aws_iam as iam

from infra.stack import TesseraStack
from tessera.config import PIPELINE, QueueSpec
from tessera.corrections import CORRECTIONS_PATTERN
from tessera.dataset import ROWS_PATTERN, SHEET_MANIFESTS_PATTERN, SUPERSEDED_PATTERN
from tessera.registry import CHAMPION_HISTORY_PATTERN, CHAMPION_PATTERN
from tests.infra.conftest import Synthesized
from tests.infra.infra_template_tools import (
    logical_id,
    resources,
    resources_for_action,
    role_statements,
)

P = PIPELINE.prefixes

# component -> (prefixes it may read, prefixes it may write)
EXPECTED_ACCESS: dict[str, tuple[Callable[[TesseraStack], iam.IRole], set[str], set[str]]] = {
    "split": (
        lambda s: s.ingest.split.handler.role,
        {P.incoming_train, SHEET_MANIFESTS_PATTERN},
        {P.tiles, P.quarantine, SHEET_MANIFESTS_PATTERN, SUPERSEDED_PATTERN},
    ),
    "vectorize": (
        lambda s: s.ingest.vectorize.handler.role,
        {P.tiles, ROWS_PATTERN},
        {ROWS_PATTERN, P.quarantine},
    ),
    "inference": (lambda s: s.serving.inference.role, {P.models}, set()),
    "console": (
        lambda s: s.serving.console.function.role,
        {P.tiles, P.datasets, P.models, P.runs, P.quarantine},
        {CORRECTIONS_PATTERN, CHAMPION_PATTERN, CHAMPION_HISTORY_PATTERN},
    ),
    "batch_predict": (
        lambda s: s.serving.batch_predict.handler.role,
        {P.incoming_predict, P.models},
        {P.predictions, P.quarantine},
    ),
    "training job": (
        lambda s: s.training.job_role,
        {P.datasets, P.models},
        {P.datasets, P.models, P.runs},
    ),
}


@pytest.mark.parametrize("component", EXPECTED_ACCESS)
def test_object_access_is_scoped_to_the_component_prefixes(
    synthesized: Synthesized, component: str
) -> None:
    # GIVEN the component's role and the bucket ARN as the template spells it
    role_of, reads, writes = EXPECTED_ACCESS[component]
    role_id = logical_id(role_of(synthesized.stack))
    bucket_arn = f"<{logical_id(synthesized.stack.storage.bucket)}.Arn>"

    # WHEN we collect what its policies allow on objects
    statements = role_statements(synthesized.template, role_id)

    # THEN it reads and writes exactly its prefixes, and lists only the bucket itself
    assert resources_for_action(statements, "s3:GetObject") == {
        f"{bucket_arn}/{prefix}*" for prefix in reads
    }
    assert resources_for_action(statements, "s3:PutObject") == {
        f"{bucket_arn}/{prefix}*" for prefix in writes
    }
    assert resources_for_action(statements, "s3:ListBucket") == {bucket_arn}
    # and deletes nothing, except split's stale quarantine and superseded records
    split_deletes = {f"{bucket_arn}/{P.quarantine}*", f"{bucket_arn}/{SUPERSEDED_PATTERN}*"}
    deletes = split_deletes if component == "split" else set()
    assert resources_for_action(statements, "s3:DeleteObject") == deletes


@pytest.mark.parametrize("spec", PIPELINE.queues, ids=lambda spec: spec.function)
def test_no_function_may_write_under_the_prefix_that_triggers_it(
    synthesized: Synthesized, spec: QueueSpec
) -> None:
    role_of, _, _ = EXPECTED_ACCESS[spec.function]
    role_id = logical_id(role_of(synthesized.stack))
    bucket_arn = f"<{logical_id(synthesized.stack.storage.bucket)}.Arn>"
    written = resources_for_action(role_statements(synthesized.template, role_id), "s3:PutObject")
    assert written
    assert not any(resource.startswith(f"{bucket_arn}/{spec.prefix}") for resource in written)


def test_no_policy_grants_wildcard_s3_actions_or_s3_on_every_resource(
    synthesized: Synthesized,
) -> None:
    for policy in resources(synthesized.template, "AWS::IAM::Policy").values():
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            actions = (
                statement["Action"]
                if isinstance(statement["Action"], list)
                else [statement["Action"]]
            )
            s3_actions = [a for a in actions if a.startswith("s3:")]
            assert not [a for a in s3_actions if "*" in a], statement
            if s3_actions and statement["Action"] != "s3:PutBucketNotification":
                assert statement["Resource"] != "*", statement


@pytest.mark.parametrize("component", EXPECTED_ACCESS)
def test_roles_we_define_carry_no_aws_managed_policies(
    synthesized: Synthesized, component: str
) -> None:
    role_of, _, _ = EXPECTED_ACCESS[component]
    role = resources(synthesized.template, "AWS::IAM::Role")[logical_id(role_of(synthesized.stack))]
    assert "ManagedPolicyArns" not in role["Properties"]


def test_lambda_logs_go_only_to_the_function_own_log_group(synthesized: Synthesized) -> None:
    function = synthesized.stack.ingest.split.handler
    statements = role_statements(synthesized.template, logical_id(function.role))
    assert resources_for_action(statements, "logs:PutLogEvents") == {
        f"<{logical_id(function.log_group)}.Arn>"
    }
