"""requirements.lock against pyproject.toml and the installed environment.

The lock is what every install path of ours uses (`make run`, `make test`, `.ci/run`, the
Dockerfile): when a range in pyproject.toml moves past a locked version, or a dependency has no
pin at all, these fail and `make lock` is the fix.
"""

from __future__ import annotations

import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
OWN_NAME = canonicalize_name(PROJECT["name"])


def _locked() -> dict[str, Version]:
    pins: dict[str, Version] = {}
    for line in (ROOT / "requirements.lock").read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name, sep, version = line.partition("==")
        assert sep and ";" not in line and "@" not in line, f"not a plain pin: {line!r}"
        pins[canonicalize_name(name)] = Version(version)
    return pins


def _declared() -> list[Requirement]:
    lists = [PROJECT["dependencies"], *PROJECT["optional-dependencies"].values()]
    requirements = [Requirement(text) for group in lists for text in group]
    return [r for r in requirements if canonicalize_name(r.name) != OWN_NAME]


LOCKED = _locked()


@pytest.mark.parametrize("requirement", _declared(), ids=str)
def test_every_declared_range_admits_its_locked_version(requirement: Requirement) -> None:
    name = canonicalize_name(requirement.name)
    assert name in LOCKED, f"{requirement.name} has no pin in requirements.lock: run `make lock`"
    assert requirement.specifier.contains(LOCKED[name], prereleases=True), (
        f"requirements.lock pins {requirement.name}=={LOCKED[name]}, outside {requirement}: "
        "run `make lock`"
    )


def test_torch_is_locked_by_its_public_version() -> None:
    # A local label (+cpu) would not exist on the package index a GPU image installs from.
    assert LOCKED["torch"].local is None


def test_this_environment_was_installed_from_the_lock() -> None:
    drift = {}
    for name, version in LOCKED.items():
        try:
            installed = Version(metadata.version(name))
        except metadata.PackageNotFoundError:
            continue  # an extra this environment does not have (the demo model's parts)
        if installed.public != version.public:
            drift[name] = f"installed {installed}, locked {version}"
    assert not drift, drift
