"""The training container's contents run, without a Docker engine: a fresh Python 3.11 venv from
training/requirements.txt alone (what the Dockerfile installs), the files the Dockerfile copies
and nothing else, its environment (PYTHONPATH, MPLBACKEND, a non-root user with its own home),
and the image's entry point against moto on a small dataset.

Run after `make synth` with the other deployed checks: `pytest -m deployed tests/deployed`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tessera.dataset import Row, write_row
from tessera.imaging.normalize import normalize_tile, to_vector
from tessera.storage.s3 import S3ObjectStore
from tessera_dev.samples import sklearn_digits
from tests.deployed.conftest import CREDENTIALS, moto_server, s3_client

pytestmark = [pytest.mark.deployed, pytest.mark.slow]

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO_ROOT / "training" / "Dockerfile"
REQUIREMENTS = REPO_ROOT / "training" / "requirements.txt"
BUILD = REPO_ROOT / "build"
BUCKET = "tessera-training-image"
NOBODY = 65534


def dockerfile_environment() -> dict[str, str]:
    """The ENV block of the Dockerfile, as the container would have it."""
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    environment = {}
    for line in text.splitlines():
        if line.startswith("ENV "):
            for pair in line.removeprefix("ENV ").split():
                name, value = pair.split("=", 1)
                environment[name] = value
    return environment


def dockerfile_copies() -> list[tuple[str, str]]:
    return [
        (source, target)
        for line in DOCKERFILE.read_text().splitlines()
        if line.startswith("COPY ")
        for source, target in [line.removeprefix("COPY ").split()]
    ]


def python311_for(uid: int) -> str:
    """A CPython 3.11 the container's non-root user may run (pyenv's lives under /root)."""
    for candidate in ("/usr/bin/python3.11", getattr(sys, "_base_executable", sys.executable)):
        check = "import sys, venv; assert sys.version_info[:2] == (3, 11)"
        runs = subprocess.run(
            [
                *("setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups"),
                *(candidate, "-c", check),
            ],
            capture_output=True,
            check=False,
        )
        if runs.returncode == 0 and Path(candidate).is_file():
            return candidate
    pytest.fail("no Python 3.11 that a non-root user can run (apt-get install python3.11-venv)")


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """/app and its interpreter as the image lays them out (the venv cached by requirements)."""
    digest = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()[:12]
    venv = BUILD / f"training-image-venv-{digest}"
    if not (venv / ".complete").exists():
        shutil.rmtree(venv, ignore_errors=True)
        # The Dockerfile's base image is Python 3.11; so is the interpreter this venv starts from.
        subprocess.run([python311_for(NOBODY), "-m", "venv", str(venv)], check=True)
        subprocess.run(
            [str(venv / "bin" / "pip"), "install", "--quiet", "-r", str(REQUIREMENTS)], check=True
        )
        (venv / ".complete").touch()
    app = BUILD / "training-image-app"
    shutil.rmtree(app, ignore_errors=True)
    for source, target in dockerfile_copies():
        if source.endswith("requirements.txt"):
            continue
        shutil.copytree(
            REPO_ROOT / source,
            app / target,
            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
        )
    for path in [app, *app.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    (app / ".venv").symlink_to(venv)
    return app


@pytest.fixture(scope="module")
def bucket_with_rows() -> Iterator[str]:
    with moto_server() as endpoint:
        client = s3_client(endpoint)
        client.create_bucket(Bucket=BUCKET)
        store = S3ObjectStore(bucket=BUCKET, client=client)
        digits = sklearn_digits()
        # 40 rows per class: enough for the stratified split and the CV folds.
        for label in [str(d) for d in range(10)]:
            for index, ink in enumerate(digits.ink[digits.labels == label][:40]):
                tile = (1.0 - np.kron(ink, np.ones((4, 4)))).astype(np.float32)
                normalized = normalize_tile(tile)
                assert normalized is not None
                key = f"tiles/digits/s{label}/r{index // 10:03d}-c{index % 10:03d}.png"
                write_row(store, Row(to_vector(normalized), label, key, f"e{label}{index}"))
        yield endpoint


def test_the_entry_point_trains_and_exports_every_family_as_the_container_would(
    image: Path, bucket_with_rows: str, tmp_path: Path
) -> None:
    # GIVEN the image's files, interpreter and environment, and a non-root user with a home
    home = BUILD / "training-image-home"
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    os.chown(home, NOBODY, NOBODY)
    environment = {
        **{k: v.replace("/app", str(image)) for k, v in dockerfile_environment().items()},
        "HOME": str(home),
        "PATH": f"{image / '.venv' / 'bin'}:/usr/bin:/bin",
        "AWS_ENDPOINT_URL": bucket_with_rows,
        **CREDENTIALS,
        "TESSERA_BUCKET": BUCKET,
        "TESSERA_RUN_ID": "image-run",
    }
    assert environment["PYTHONPATH"] == f"{image}/shared:{image}"
    entrypoint = json.loads(
        next(
            line.removeprefix("ENTRYPOINT")
            for line in DOCKERFILE.read_text().splitlines()
            if line.startswith("ENTRYPOINT")
        )
    )
    # WHEN the entry point runs as that user, from the image's working directory
    completed = subprocess.run(
        [
            "setpriv",
            f"--reuid={NOBODY}",
            f"--regid={NOBODY}",
            "--clear-groups",
            "env",
            "-i",
            *(f"{k}={v}" for k, v in environment.items()),
            *entrypoint,
            "--dataset",
            "digits",
            "--family",
            "all",
            "--epochs",
            "2",
        ],
        cwd=image,
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    # THEN every family trained, exported through its parity gate and registered
    assert completed.returncode == 0, completed.stderr[-4000:]
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    assert result["status"] == "succeeded"
    assert {f["family"] for f in result["families"]} == {"mlp", "dense", "cnn", "cnn-strong"}
    client = s3_client(bucket_with_rows)
    status = json.loads(
        client.get_object(Bucket=BUCKET, Key="runs/image-run/status.json")["Body"].read()
    )
    assert status["status"] == "succeeded"
    assert client.head_object(Bucket=BUCKET, Key="models/digits/champion.json")
    # AND nothing outside what the Dockerfile copies was needed (no dev tooling, no functions)
    assert sorted(p.name for p in image.iterdir() if not p.name.startswith(".")) == [
        "shared",
        "training",
    ]
    assert sorted(p.name for p in (image / "shared").iterdir()) == ["tessera"]
