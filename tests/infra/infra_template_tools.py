"""Reading a synthesized template: intrinsics rendered as text, resources and policies by role."""

from __future__ import annotations

import json
from typing import Any

from aws_cdk.assertions import Template

from infra import asl


def render(value: Any) -> str:
    """An intrinsic as text: Fn::Join joined, GetAtt as <Id.Attr>, Ref as <Id>; anything else
    (a plain value, another intrinsic) as its JSON."""
    try:
        return asl.render(
            value, ref=lambda name: f"<{name}>", get_att=lambda res, att: f"<{res}.{att}>"
        )
    except ValueError:
        return json.dumps(value, sort_keys=True)


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def resources(template: Template, resource_type: str) -> dict[str, dict[str, Any]]:
    return {key: dict(value) for key, value in template.find_resources(resource_type).items()}


def only(template: Template, resource_type: str, **properties: Any) -> tuple[str, dict[str, Any]]:
    """The one resource of `resource_type` whose properties include `properties`."""
    matches = [
        (logical_id, resource)
        for logical_id, resource in resources(template, resource_type).items()
        if all(resource.get("Properties", {}).get(k) == v for k, v in properties.items())
    ]
    assert len(matches) == 1, f"{len(matches)} {resource_type} match {properties}"
    return matches[0]


def role_statements(template: Template, role_id: str) -> list[dict[str, Any]]:
    """Every statement of the inline policies attached to `role_id`."""
    statements: list[dict[str, Any]] = []
    for policy in resources(template, "AWS::IAM::Policy").values():
        props = policy["Properties"]
        if {"Ref": role_id} in props.get("Roles", []):
            statements.extend(props["PolicyDocument"]["Statement"])
    role = resources(template, "AWS::IAM::Role")[role_id]
    for inline in role["Properties"].get("Policies", []):
        statements.extend(inline["PolicyDocument"]["Statement"])
    return statements


def resources_for_action(statements: list[dict[str, Any]], action: str) -> set[str]:
    return {
        render(resource)
        for statement in statements
        if statement["Effect"] == "Allow" and action in as_list(statement["Action"])
        for resource in as_list(statement["Resource"])
    }


def state_machine_definition(template: Template) -> dict[str, Any]:
    (machine,) = resources(template, "AWS::StepFunctions::StateMachine").values()
    definition: dict[str, Any] = json.loads(render(machine["Properties"]["DefinitionString"]))
    return definition


def logical_id(construct: Any) -> str:
    """The logical id of a construct's CloudFormation resource (an L2's default child)."""
    from aws_cdk import CfnElement, Stack

    element = construct if isinstance(construct, CfnElement) else construct.node.default_child
    stack = Stack.of(element)
    return str(stack.resolve(stack.get_logical_id(element)))
