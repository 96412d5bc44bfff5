"""The synthesized training workflow is valid Amazon States Language (asl-validator, from npm),
rendered as Step Functions would receive it. Run after `make synth`."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from infra.asl import state_machine_definitions

pytestmark = [pytest.mark.deployed]

REPO_ROOT = Path(__file__).resolve().parents[2]
VALIDATOR = REPO_ROOT / "node_modules" / ".bin" / "asl-validator"


def validate(definition: dict[str, Any], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "definition.asl.json"
    path.write_text(json.dumps(definition))
    return subprocess.run(
        [str(VALIDATOR), "--json-path", str(path)], capture_output=True, text=True, check=False
    )


@pytest.fixture(scope="module")
def definition() -> dict[str, Any]:
    template = REPO_ROOT / "cdk.out" / "Tessera.template.json"
    if not template.is_file() or not VALIDATOR.is_file():
        pytest.fail("run `make synth` first (it synthesizes cdk.out and installs asl-validator)")
    (found,) = state_machine_definitions(json.loads(template.read_text())).values()
    return found


def test_the_training_workflow_is_valid_asl(definition: dict[str, Any], tmp_path: Path) -> None:
    checked = validate(definition, tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # The Batch task is the .sync integration, on the rendered partition.
    resources = {s.get("Resource") for s in definition["States"].values()}
    assert "arn:aws:states:::batch:submitJob.sync" in resources


def test_the_validator_refuses_a_broken_workflow(
    definition: dict[str, Any], tmp_path: Path
) -> None:
    # GIVEN the same workflow with a transition to a state that does not exist
    broken = json.loads(json.dumps(definition))
    task = next(s for s in broken["States"].values() if s.get("Next"))
    task["Next"] = "NoSuchState"
    # THEN asl-validator says so: the check above can fail
    assert validate(broken, tmp_path).returncode != 0
