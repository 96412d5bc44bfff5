"""The GPU training image's requirements resolve to wheels for its platform (Linux x86_64,
CPython 3.11, the base image's), CUDA libraries included: what `docker build -f
training/Dockerfile.gpu` will install, checked without a Docker engine or a GPU.

Run with the other deployed checks: `pytest -m deployed tests/deployed`.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.infra.test_pins import pins

pytestmark = [pytest.mark.deployed, pytest.mark.slow]

REPO_ROOT = Path(__file__).resolve().parents[2]
REQUIREMENTS = REPO_ROOT / "training" / "requirements-gpu.txt"
PLATFORMS = ("manylinux2014_x86_64", "manylinux_2_27_x86_64", "manylinux_2_28_x86_64")


def test_the_gpu_requirements_resolve_to_linux_wheels_with_cuda(tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    subprocess.run(
        [
            *(sys.executable, "-m", "pip", "install", "--dry-run", "--quiet"),
            *("--ignore-installed", "--only-binary=:all:", "--python-version", "3.11"),
            *(arg for platform in PLATFORMS for arg in ("--platform", platform)),
            *("--target", str(tmp_path / "target"), "--report", str(report)),
            *("-r", str(REQUIREMENTS)),
        ],
        check=True,
        capture_output=True,
    )
    installed = {
        item["metadata"]["name"].lower(): item["metadata"]["version"]
        for item in json.loads(report.read_text())["install"]
    }
    pinned = pins((REPO_ROOT / "training" / "requirements.txt").read_text().splitlines())
    assert installed["tensorflow"] == pinned["tensorflow-cpu"]
    assert "tensorflow-cpu" not in installed
    # TensorFlow loads these at start-up to find the GPU: without them it trains on the CPU
    for library in ("nvidia-cudnn-cu12", "nvidia-cublas-cu12", "nvidia-cuda-runtime-cu12"):
        assert library in installed, library
