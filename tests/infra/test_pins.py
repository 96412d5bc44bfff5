"""The deployed bundles and the training image install exactly the versions the tests ran with."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PIN = re.compile(r"^([A-Za-z0-9_.\-\[\]]+)==([^\s;#]+)")


def pins(lines: list[str]) -> dict[str, str]:
    found = {}
    for line in lines:
        match = PIN.match(line.strip())
        if match:
            found[match.group(1).split("[")[0].lower().replace("_", "-")] = match.group(2)
    return found


def project_pins() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    listed = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        listed += extra
    return pins(listed)


@pytest.mark.parametrize(
    "requirements",
    ["functions/requirements.txt", "functions/requirements-image.txt", "training/requirements.txt"],
)
def test_every_pin_matches_pyproject(requirements: str) -> None:
    declared = project_pins()
    pinned = pins((ROOT / requirements).read_text().splitlines())
    assert pinned, f"{requirements} pins nothing"
    mismatched = {
        name: (version, declared.get(name))
        for name, version in pinned.items()
        if declared.get(name) != version
    }
    assert mismatched == {}


def test_the_lock_agrees_with_pyproject() -> None:
    declared = project_pins()
    locked = pins((ROOT / "requirements.lock").read_text().splitlines())
    assert {name: locked.get(name) for name in declared} == declared
