"""cdk-nag (AwsSolutions) leaves nothing unacknowledged, checkov skips carry reasons, and the
template passes cfn-lint."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from aws_cdk import Validations
from cfnlint.api import ManualArgs, lint_file

from tests.infra.conftest import Synthesized
from tests.infra.infra_template_tools import logical_id as logical_id_of

# CDK adds explicit DependsOn next to the GetAtt/Ref that already implies them; harmless.
CFN_LINT_IGNORED = ["W3005"]


@pytest.fixture(scope="module")
def nag_report(synthesized: Synthesized) -> dict[str, Any]:
    report = json.loads((synthesized.outdir / "validation-report.json").read_text())
    (plugin,) = [p for p in report["pluginReports"] if p["pluginName"] == "AwsSolutions"]
    return plugin  # type: ignore[no-any-return]


def test_cdk_nag_reports_no_unacknowledged_finding(nag_report: dict[str, Any]) -> None:
    assert nag_report["conclusion"] == "success"
    assert nag_report["violations"] == []


def test_every_acknowledged_finding_says_why(nag_report: dict[str, Any]) -> None:
    suppressed = nag_report["suppressedViolations"]
    assert suppressed
    for finding in suppressed:
        assert len(finding["reason"].split()) >= 5, finding["acknowledgedId"]


def test_every_acknowledgement_matches_a_finding(
    synthesized: Synthesized, nag_report: dict[str, Any]
) -> None:
    # GIVEN every AwsSolutions acknowledgement the app declares, with where it was declared
    declared = {
        (construct.node.path, rule)
        for construct in synthesized.stack.node.find_all()
        for entry in construct.node.metadata
        if entry.type == Validations.ACKNOWLEDGED_RULES_METADATA_KEY
        for rule in entry.data
        if rule.startswith("AwsSolutions::")
    }
    # WHEN compared with the acknowledgements cdk-nag actually used
    used = {(f["acknowledgedAt"], f["acknowledgedId"]) for f in nag_report["suppressedViolations"]}
    # THEN none is stale: a fixed finding takes its acknowledgement with it
    assert declared - used == set()


def test_the_synthesized_template_passes_cfn_lint(synthesized: Synthesized) -> None:
    template = Path(synthesized.outdir / "Tessera.template.json")
    matches = lint_file(template, config=ManualArgs(ignore_checks=CFN_LINT_IGNORED))
    assert [str(m) for m in matches] == []


def test_every_checkov_skip_carries_its_reason(synthesized: Synthesized) -> None:
    # GIVEN the checkov skips the template carries beside its resources
    template = synthesized.template.to_json()
    skips = {
        logical_id: resource["Metadata"]["checkov"]["skip"]
        for logical_id, resource in template["Resources"].items()
        if "checkov" in resource.get("Metadata", {})
    }
    assert skips
    # THEN each names a check and says why it does not apply
    for entries in skips.values():
        for entry in entries:
            assert entry["id"].startswith("CKV_") and len(entry["comment"]) > 40
    # AND the API's function, which has reserved concurrency, needs no concurrency skip
    inference = logical_id_of(synthesized.stack.serving.inference.function)
    assert "CKV_AWS_115" not in {entry["id"] for entry in skips[inference]}
    assert "CKV_AWS_116" in {entry["id"] for entry in skips[inference]}
