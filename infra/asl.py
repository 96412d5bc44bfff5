"""The synthesized state machine as plain Amazon States Language, for asl-validator.

CloudFormation builds the definition with Fn::Join over Refs and GetAtts; this renders it with
placeholder values of the right shape (a partition, a region, an account, names for resources),
so the validator sees the document Step Functions would receive.

    python -m infra.asl cdk.out/Tessera.template.json cdk.out/training.asl.json
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

PSEUDO_PARAMETERS = {
    "AWS::Partition": "aws",
    "AWS::Region": "us-east-1",
    "AWS::AccountId": "123456789012",
    "AWS::URLSuffix": "amazonaws.com",
}


def render(
    value: Any,
    *,
    ref: Callable[[str], str],
    get_att: Callable[[str, str], str],
) -> str:
    """A CloudFormation string built of Fn::Join, Ref and Fn::GetAtt, as text: `ref` and
    `get_att` say what a reference becomes (placeholders of the right shape, or readable tags)."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and len(value) == 1:
        ((function, argument),) = value.items()
        if function == "Fn::Join":
            separator, parts = argument
            return str(separator).join(render(p, ref=ref, get_att=get_att) for p in parts)
        if function == "Ref":
            return ref(str(argument))
        if function == "Fn::GetAtt":
            return get_att(str(argument[0]), str(argument[1]))
    raise ValueError(f"cannot render {json.dumps(value)[:200]}")


def _placeholder_ref(name: str) -> str:
    return PSEUDO_PARAMETERS.get(name, f"placeholder-{name}")


def _placeholder_get_att(resource: str, attribute: str) -> str:
    return f"arn:aws:placeholder:us-east-1:123456789012:{resource}/{attribute}"


def state_machine_definitions(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Logical id -> the rendered definition of every state machine in a template."""
    return {
        logical_id: json.loads(
            render(
                resource["Properties"]["DefinitionString"],
                ref=_placeholder_ref,
                get_att=_placeholder_get_att,
            )
        )
        for logical_id, resource in template["Resources"].items()
        if resource["Type"] == "AWS::StepFunctions::StateMachine"
    }


def main(argv: list[str]) -> int:
    template_path, out_path = Path(argv[0]), Path(argv[1])
    definitions = state_machine_definitions(json.loads(template_path.read_text()))
    if len(definitions) != 1:
        print(f"expected one state machine, found {len(definitions)}", file=sys.stderr)
        return 1
    (definition,) = definitions.values()
    out_path.write_text(json.dumps(definition, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
