"""CDK entry point: `npx cdk synth` / `npx cdk deploy` from the repository root (cdk.json runs
`python -m infra.app`; infra is an installed package like the rest)."""

from __future__ import annotations

import os
from typing import Any

from aws_cdk import App, Environment, Validations
from cdk_nag import AwsSolutionsChecks

from infra.stack import DeploySettings, TesseraStack

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
