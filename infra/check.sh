#!/usr/bin/env bash
# Synthesizes the CDK app the way `cdk deploy` would (real Lambda bundles, built with pip, no
# Docker), then checks the cloud assembly: cdk-nag's validation report has no unacknowledged
# finding, and every template passes cfn-lint. Run from anywhere: infra/check.sh
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-.venv/bin/python}"
CFN_LINT="${CFN_LINT:-$(dirname "$PYTHON")/cfn-lint}"
export JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION=1
export CDK_DISABLE_CLI_TELEMETRY=true

if [ ! -x node_modules/.bin/cdk ]; then
  npm ci --no-audit --no-fund
fi

rm -rf cdk.out cdk.out.gpu
# The cdk-nag plugin already fails this step on an unacknowledged finding.
npx --no-install cdk synth --quiet --no-notices --output cdk.out -c tessera:bundle=true
# The GPU queue is off by default: its variant of the stack gets the same checks (bundles are
# the same, so they are not built twice).
npx --no-install cdk synth --quiet --no-notices --output cdk.out.gpu \
  -c tessera:bundle=false -c tessera:gpu=true

CHECKOV_VENV=build/checkov-venv-3.3.30
if [ ! -x "$CHECKOV_VENV/bin/checkov" ]; then
  rm -rf "$CHECKOV_VENV"
  python3 -m venv "$CHECKOV_VENV"
  "$CHECKOV_VENV/bin/pip" install --quiet --disable-pip-version-check checkov==3.3.30
fi

check_assembly() {
  local out=$1
  echo "== $out"
  local report=$out/validation-report.json
  if [ -f "$report" ]; then
    "$PYTHON" - "$report" <<'PY'
import json
import sys

report = json.load(open(sys.argv[1]))
open_findings = [
    (plugin["pluginName"], violation["ruleName"], construct["constructPath"])
    for plugin in report["pluginReports"]
    for violation in plugin["violations"]
    for construct in violation["violatingConstructs"]
]
acknowledged = sum(len(p.get("suppressedViolations", [])) for p in report["pluginReports"])
for finding in open_findings:
    print("unacknowledged:", *finding, file=sys.stderr)
print(f"cdk-nag: {len(open_findings)} unacknowledged, {acknowledged} acknowledged with a reason")
sys.exit(1 if open_findings else 0)
PY
  fi

  # An independent scanner: checkov on the template, in a venv of its own (its dependencies
  # are not the app's). Every skip carries its reason beside the resource (infra/checkov.py).
  "$CHECKOV_VENV/bin/checkov" -f "$out/Tessera.template.json" --framework cloudformation \
    --quiet --compact --skip-download -o json > "$out/checkov.json" 2> "$out/checkov.log" || true
  "$PYTHON" - "$out/checkov.json" <<'PY'
import json
import sys

report = json.load(open(sys.argv[1]))
report = report[0] if isinstance(report, list) else report
summary = report["summary"]
for finding in report.get("results", {}).get("failed_checks", []):
    print("checkov:", finding["check_id"], finding["resource"], finding["check_name"], file=sys.stderr)
print(f"checkov: {summary['passed']} passed, {summary['failed']} failed, "
      f"{summary['skipped']} skipped with a reason")
sys.exit(1 if summary["failed"] or summary["parsing_errors"] else 0)
PY

  # The training workflow as Step Functions receives it, checked by asl-validator.
  "$PYTHON" -m infra.asl "$out/Tessera.template.json" "$out/training.asl.json"
  npx --no-install asl-validator --json-path "$out/training.asl.json"
  echo "asl-validator: the training state machine is valid"

  # W3005: CDK writes DependsOn beside the Ref/GetAtt that already implies it; harmless.
  "$CFN_LINT" --ignore-checks W3005 -- "$out"/*.template.json
  echo "cfn-lint: $(ls "$out"/*.template.json | wc -l) template(s) clean"
}

check_assembly cdk.out
check_assembly cdk.out.gpu

# The training images' Dockerfiles, linted (hadolint ships inside its PyPI wheel).
for dockerfile in training/Dockerfile training/Dockerfile.gpu; do
  "$(dirname "$PYTHON")/hadolint" "$dockerfile"
  echo "hadolint: $dockerfile clean"
done

# Lambda's limit for an unzipped bundle is 250 MB.
for asset in cdk.out/asset.*; do
  if [ -d "$asset/functions" ] && [ -d "$asset/tessera" ]; then
    size_mb=$(du -sm "$asset" | cut -f1)
    echo "bundle $(ls "$asset/functions" | grep -v __init__) ${size_mb} MB"
    if [ "$size_mb" -ge 250 ]; then
      echo "bundle $asset is over Lambda's 250 MB limit" >&2
      exit 1
    fi
  fi
done
