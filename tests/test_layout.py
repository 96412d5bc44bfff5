"""The deploy boundary and the import rule, held by the tools that enforce them: ruff refuses an
import that crosses the boundary, and no dev tooling reaches a synthesized Lambda bundle."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
RUFF = Path(sys.executable).with_name("ruff")


def banned(path: str, source: str) -> list[str]:
    """The TID251 (banned import) findings ruff reports for `source` placed at `path`."""
    completed = subprocess.run(
        [
            str(RUFF),
            "check",
            "--select",
            "TID251",
            "--output-format",
            "concise",
            "--stdin-filename",
            path,
            "-",
        ],
        input=source,
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        check=False,
    )
    return [line for line in completed.stdout.splitlines() if "TID251" in line]


@pytest.mark.parametrize(
    ("path", "source"),
    [
        ("shared/tessera/pipeline/x.py", "from training.data import read_idx\n"),
        ("shared/tessera/pipeline/x.py", "import functions.split.handler\n"),
        ("shared/tessera/pipeline/x.py", "from infra.stack import TesseraStack\n"),
        ("shared/tessera/pipeline/x.py", "from tessera_dev.samples import render_sheet\n"),
        ("shared/tessera/registry_x.py", "from botocore.exceptions import ClientError\n"),
        ("shared/tessera/serving/x.py", "import boto3\n"),
        ("training/x.py", "from botocore.exceptions import ClientError\n"),
        ("training/x.py", "from tessera_dev.synthetic import make_sheet\n"),
        ("functions/split/x.py", "from tessera_dev.local.pump import lambda_context\n"),
        ("infra/x.py", "import tessera_dev\n"),
    ],
)
def test_an_import_across_the_boundary_is_refused_by_the_linter(path: str, source: str) -> None:
    assert banned(path, source), f"ruff let {source.strip()!r} through in {path}"


@pytest.mark.parametrize(
    ("path", "source"),
    [
        ("shared/tessera/storage/s3.py", "from botocore.exceptions import ClientError\n"),
        ("shared/tessera_dev/local/x.py", "from functions.split.handler import lambda_handler\n"),
        ("training/x.py", "from tessera.storage.s3 import S3ObjectStore\n"),
        ("tests/x.py", "from botocore.exceptions import ClientError\n"),
    ],
)
def test_imports_along_the_rule_are_allowed(path: str, source: str) -> None:
    assert banned(path, source) == []


def test_the_library_has_no_module_over_400_lines() -> None:
    long = {
        str(path.relative_to(REPO_ROOT)): count
        for folder in ("shared/tessera", "training")
        for path in (REPO_ROOT / folder).rglob("*.py")
        if (count := len(path.read_text().splitlines())) > 400
    }
    assert long == {}
