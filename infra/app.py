"""CDK entry point: `npx cdk synth` / `npx cdk deploy` from the repository root (see cdk.json)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

INFRA_DIR = Path(__file__).resolve().parent
REPO_ROOT = INFRA_DIR.parent
# Run as a script, Python puts infra/ first on sys.path, where ingest.py, stack.py & co. would
# shadow top-level names; the app imports `infra.*` from the repo root and `tessera` from shared/.
if sys.path and Path(sys.path[0] or ".").resolve() == INFRA_DIR:
    del sys.path[0]
for _path in (str(REPO_ROOT / "shared"), str(REPO_ROOT)):
    if _path not in sys.path:
        sys.path.insert(0, _path)

from aws_cdk import App, Environment, Validations  # noqa: E402
from cdk_nag import AwsSolutionsChecks  # noqa: E402

from infra.stack import DeploySettings, TesseraStack  # noqa: E402

STACK_NAME = "Tessera"
# Feature flags the stack relies on, set here so tests and `cdk synth` build the same template.
FEATURE_FLAGS: dict[str, Any] = {
    # Grant log delivery through the bucket policy, not the legacy LogDeliveryWrite ACL (ACLs
    # stay disabled: BucketOwnerEnforced).
    "@aws-cdk/aws-s3:serverAccessLogsUseBucketPolicy": True,
}


def build_app(
    *, context: dict[str, Any] | None = None, outdir: str | None = None, nag: bool = True
) -> tuple[App, TesseraStack]:
    app = App(context={**FEATURE_FLAGS, **(context or {})}, outdir=outdir)
    account = os.environ.get("CDK_DEFAULT_ACCOUNT")
    region = os.environ.get("CDK_DEFAULT_REGION")
    stack = TesseraStack(
        app,
        STACK_NAME,
        settings=DeploySettings.from_context(app),
        env=Environment(account=account, region=region) if account and region else None,
        description="Tessera: sheets of handwritten symbols to datasets, models and predictions",
    )
    if nag:
        # cdk-nag 3 is a policy-validation plugin: synth fails on any unacknowledged finding
        # and writes every finding, acknowledged or not, to cdk.out/validation-report.json.
        Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    return app, stack


def main() -> None:
    app, _ = build_app()
    app.synth()


if __name__ == "__main__":
    main()
