"""Lambda bundles laid out locally (no Docker): handler, library, and only the needed packages."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from infra import bundling
from infra.function import IMAGE_REQUIREMENTS, REQUIREMENTS_BY_FUNCTION, SERVING_REQUIREMENTS
from tests.infra.conftest import Synthesized


def test_a_bundle_holds_the_handler_package_and_the_library_without_dev_tools(
    tmp_path: Path,
) -> None:
    # WHEN the split function is bundled without third-party packages
    assert bundling.FunctionBundler(function="split", requirements=None).try_bundle(str(tmp_path))

    # THEN it imports as functions.split.handler with tessera beside it
    assert (tmp_path / "functions" / "__init__.py").is_file()
    assert (tmp_path / "functions" / "split" / "handler.py").is_file()
    assert (tmp_path / "tessera" / "config.py").is_file()
    # AND carries neither the other functions nor the dev-only parts of the library
    assert sorted(p.name for p in (tmp_path / "functions").iterdir()) == ["__init__.py", "split"]
    assert not (tmp_path / "tessera_dev").exists()
    bundled = sorted(
        str(p.relative_to(tmp_path / "tessera")) for p in (tmp_path / "tessera").rglob("*.py")
    )
    library = sorted(
        str(p.relative_to(bundling.LIBRARY_DIR))
        for p in bundling.LIBRARY_DIR.rglob("*.py")
        if "__pycache__" not in p.parts
    )
    assert bundled == library
    assert not list(tmp_path.rglob("__pycache__"))


def test_image_functions_do_not_carry_onnxruntime() -> None:
    assert REQUIREMENTS_BY_FUNCTION["split"] == IMAGE_REQUIREMENTS
    assert REQUIREMENTS_BY_FUNCTION["vectorize"] == IMAGE_REQUIREMENTS
    assert "onnxruntime" not in IMAGE_REQUIREMENTS.read_text()
    assert "onnxruntime" in SERVING_REQUIREMENTS.read_text()
    for requirements in (IMAGE_REQUIREMENTS, SERVING_REQUIREMENTS):
        assert "boto3" not in requirements.read_text()  # the Lambda runtime provides it


def test_the_bundle_hash_changes_with_the_library(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a copy of the library under the repo's layout
    library = tmp_path / "shared" / "tessera"
    shutil.copytree(bundling.LIBRARY_DIR, library, ignore=shutil.ignore_patterns("__pycache__"))
    dev = tmp_path / "shared" / "tessera_dev"
    shutil.copytree(
        bundling.LIBRARY_DIR.parent / "tessera_dev",
        dev,
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    shutil.copytree(
        bundling.FUNCTIONS_DIR, tmp_path / "functions", ignore=shutil.ignore_patterns("__pycache__")
    )
    monkeypatch.setattr(bundling, "REPO_ROOT", tmp_path)
    monkeypatch.setattr(bundling, "LIBRARY_DIR", library)
    monkeypatch.setattr(bundling, "FUNCTIONS_DIR", tmp_path / "functions")
    requirements = tmp_path / "functions" / "requirements-image.txt"

    def digest() -> str:
        return bundling.bundle_hash(
            function="split", requirements=requirements, with_dependencies=True
        )

    before = digest()
    # WHEN a dev-only file changes, THEN the bundle is the same
    (dev / "local" / "__init__.py").write_text("# changed\n")
    assert digest() == before
    # WHEN a library module changes, THEN the bundle hash changes
    (library / "config.py").write_text((library / "config.py").read_text() + "\n# changed\n")
    assert digest() != before


@pytest.mark.slow
def test_pip_installs_linux_wheels_for_the_lambda_runtime() -> None:
    # Real pip (network or cache): what a deploy bundles for split and vectorize.
    installed = bundling.installed_dependencies(IMAGE_REQUIREMENTS)
    for package in ("numpy", "PIL", "aws_lambda_powertools"):
        assert (installed / package).is_dir()
    assert list((installed / "numpy" / "_core").glob("*cpython-312-x86_64-linux-gnu.so"))
    assert not (installed / "boto3").exists()


def test_pruning_drops_what_functions_never_import_and_keeps_the_rest(tmp_path: Path) -> None:
    # GIVEN an installed tree with the runtime's own boto3, test suites and ORT tooling
    for folder in (
        "boto3",
        "numpy/_core/tests",
        "numpy/_core",
        "numpy/linalg",
        "onnxruntime/capi",
        "onnxruntime/transformers",
        "onnxruntime/quantization",
        "PIL",
    ):
        (tmp_path / folder).mkdir(parents=True, exist_ok=True)
        (tmp_path / folder / "__init__.py").write_text("")
    # WHEN it is pruned
    bundling.prune_dependencies(tmp_path)
    # THEN only what serving imports is left
    left = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_dir())
    assert left == [
        "PIL",
        "numpy",
        "numpy/_core",
        "numpy/linalg",
        "onnxruntime",
        "onnxruntime/capi",
    ]


def test_the_synthesized_bundles_carry_no_dev_tooling(synthesized: Synthesized) -> None:
    # GIVEN the asset directories `cdk synth` staged for the four functions
    bundles = [path for path in synthesized.outdir.glob("asset.*") if (path / "tessera").is_dir()]
    assert len(bundles) == 5  # split, vectorize, inference, batch predict, console
    for bundle in bundles:
        # THEN each holds its handler and the runtime library, and nothing of the dev package
        assert (bundle / "tessera" / "config.py").is_file()
        assert not (bundle / "tessera_dev").exists()
        modules = [path.relative_to(bundle) for path in bundle.rglob("*.py")]
        assert not [
            m for m in modules if m.parts[0] in ("tessera_dev", "training", "infra", "tests")
        ]
        # AND no bundled module imports dev tooling, moto or the training stack
        for module in bundle.joinpath("tessera").rglob("*.py"):
            text = module.read_text()
            for banned in ("tessera_dev", "import moto", "from moto", "tensorflow", "sklearn"):
                assert banned not in text, f"{module.relative_to(bundle)} mentions {banned}"
