"""The AWS CDK app that deploys the tessera pipeline (entry point: infra/app.py, via cdk.json)."""
