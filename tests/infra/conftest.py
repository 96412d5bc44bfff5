"""One synthesized stack shared by the infra tests (bundling off: no pip, seconds not minutes)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
os.environ.setdefault("JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION", "1")

from aws_cdk import App  # noqa: E402
from aws_cdk.assertions import Template  # noqa: E402

from infra.app import build_app  # noqa: E402
from infra.stack import TesseraStack  # noqa: E402

ALARM_EMAIL = "ops@example.com"
TEST_CONTEXT = {
    "tessera:bundle": False,
    "tessera:alarm_email": ALARM_EMAIL,
    "tessera:training_schedule": "rate(7 days)",
}


@dataclass(frozen=True)
class Synthesized:
    app: App
    stack: TesseraStack
    template: Template
    outdir: Path


def synthesize(outdir: Path, context: dict[str, object]) -> Synthesized:
    app, stack = build_app(context=context, outdir=str(outdir))
    app.synth()  # runs the cdk-nag plugin: raises on any unacknowledged finding
    return Synthesized(app=app, stack=stack, template=Template.from_stack(stack), outdir=outdir)


@pytest.fixture(scope="session")
def synthesized(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Synthesized]:
    yield synthesize(tmp_path_factory.mktemp("cdk.out"), TEST_CONTEXT)


@pytest.fixture(scope="session")
def template(synthesized: Synthesized) -> Template:
    return synthesized.template
