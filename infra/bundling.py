"""Lambda bundles built on this machine with pip, so `cdk synth` never needs a Docker engine."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, cast

import jsii
from aws_cdk import AssetHashType, BundlingOptions, DockerImage, ILocalBundling
from aws_cdk import aws_lambda as lambda_

REPO_ROOT = Path(__file__).resolve().parent.parent
FUNCTIONS_DIR = REPO_ROOT / "functions"
LIBRARY_DIR = REPO_ROOT / "shared" / "tessera"
DEPS_CACHE_DIR = REPO_ROOT / "build" / "lambda-deps"

LAMBDA_PYTHON_VERSION = "3.12"
# Lambda's python3.12 runs on Amazon Linux 2023 (glibc 2.34); numpy 2.3+ ships manylinux_2_28 only.
LAMBDA_PLATFORMS = ("manylinux2014_x86_64", "manylinux_2_28_x86_64")

_IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache", ".mypy_cache")


def _library_files() -> list[Path]:
    """The runtime library, whole: dev tooling is a package of its own (shared/tessera_dev), so
    nothing needs leaving out."""
    return sorted(path for path in LIBRARY_DIR.rglob("*.py") if "__pycache__" not in path.parts)


def _function_files(function: str) -> list[Path]:
    folder = FUNCTIONS_DIR / function
    return sorted(
        path
        for path in folder.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    )


def _digest(*parts: bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(hashlib.sha256(part).digest())
    return digest.hexdigest()


def _pip_command(requirements: Path, target: Path) -> list[str]:
    platforms = [arg for platform in LAMBDA_PLATFORMS for arg in ("--platform", platform)]
    return [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "--no-compile",
        *platforms,
        "--only-binary=:all:",
        "--python-version",
        LAMBDA_PYTHON_VERSION,
        "--implementation",
        "cp",
        "--requirement",
        str(requirements),
        "--target",
        str(target),
    ]


# What a function never imports, left out of its bundle (Lambda's unzipped limit is 250 MB and
# every MB is cold-start download): boto3 comes with the runtime (a copy pulled in transitively
# only adds weight); numpy's and Pillow's own test suites; onnxruntime's model-conversion,
# quantization and transformer-optimization tooling, which serving does not use.
PRUNED = (
    "boto3",
    "botocore",
    "s3transfer",
    "numpy/tests",
    "numpy/*/tests",
    "numpy/*/*/tests",
    "onnxruntime/tools",
    "onnxruntime/quantization",
    "onnxruntime/transformers",
    "onnxruntime/datasets",
)


def prune_dependencies(site: Path) -> None:
    for pattern in PRUNED:
        for path in site.glob(pattern):
            shutil.rmtree(path, ignore_errors=True)


def installed_dependencies(requirements: Path) -> Path:
    """Third-party packages for `requirements`, installed once per requirements content.

    The cache is keyed by the file's bytes and the target platform; an install goes to a temporary
    folder renamed into place at the end, so an interrupted or concurrent synth never sees half
    an install.
    """
    key = _digest(
        requirements.read_bytes(),
        LAMBDA_PYTHON_VERSION.encode(),
        " ".join(LAMBDA_PLATFORMS).encode(),
        " ".join(PRUNED).encode(),
    )[:16]
    target = DEPS_CACHE_DIR / f"{requirements.stem}-{key}"
    if target.is_dir():
        return target
    DEPS_CACHE_DIR.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f"{target.name}.", dir=DEPS_CACHE_DIR))
    try:
        subprocess.run(_pip_command(requirements, staging), check=True)
        prune_dependencies(staging)
        os.replace(staging, target)
    except OSError:
        if not target.is_dir():
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


@jsii.implements(ILocalBundling)
class FunctionBundler:
    """Lays out one function's bundle: `functions/<name>/`, the `tessera` library, its deps."""

    def __init__(self, *, function: str, requirements: Path | None) -> None:
        self.function = function
        self.requirements = requirements

    def try_bundle(self, output_dir: str, _options: Any = None) -> bool:
        # jsii passes the BundlingOptions struct positionally; nothing in it is needed here.
        out = Path(output_dir)
        if self.requirements is not None:
            shutil.copytree(installed_dependencies(self.requirements), out, dirs_exist_ok=True)
        (out / "functions").mkdir(exist_ok=True)
        shutil.copy2(FUNCTIONS_DIR / "__init__.py", out / "functions" / "__init__.py")
        shutil.copytree(
            FUNCTIONS_DIR / self.function,
            out / "functions" / self.function,
            ignore=_IGNORED,
            dirs_exist_ok=True,
        )
        for source in _library_files():
            destination = out / "tessera" / source.relative_to(LIBRARY_DIR)
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination)
        return True


def bundle_hash(*, function: str, requirements: Path, with_dependencies: bool) -> str:
    """A digest of every input of a bundle: handler folder, library, requirements, platform."""
    inputs = [FUNCTIONS_DIR / "__init__.py", *_function_files(function), *_library_files()]
    return _digest(
        *(str(path.relative_to(REPO_ROOT)).encode() + b"\0" + path.read_bytes() for path in inputs),
        requirements.read_bytes() if with_dependencies else b"no-dependencies",
        LAMBDA_PYTHON_VERSION.encode(),
        " ".join(LAMBDA_PLATFORMS).encode(),
    )


def function_code(*, function: str, requirements: Path, with_dependencies: bool) -> lambda_.Code:
    """The asset for one function.

    The asset hash covers every input of the bundle (handler folder, library, requirements), so a
    change anywhere re-bundles and an unchanged function reuses its staged copy in cdk.out.
    `with_dependencies=False` leaves the third-party packages out: the template differs only in
    asset hashes, the synth takes seconds, and the result must not be deployed (tests use it).
    """
    return lambda_.Code.from_asset(
        str(FUNCTIONS_DIR / function),
        asset_hash=bundle_hash(
            function=function, requirements=requirements, with_dependencies=with_dependencies
        ),
        asset_hash_type=AssetHashType.CUSTOM,
        bundling=BundlingOptions(
            # Never pulled: the local bundler always succeeds, so Docker is never asked for.
            image=DockerImage.from_registry("local-bundling-only"),
            # jsii calls try_bundle(output_dir, options) positionally, unlike the generated
            # keyword-only protocol; hence the cast.
            local=cast(
                ILocalBundling,
                FunctionBundler(
                    function=function, requirements=requirements if with_dependencies else None
                ),
            ),
        ),
    )
