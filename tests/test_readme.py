"""README.md lists every pin of pyproject.toml (runtime and dev) as "name version"."""

import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _pins() -> list[tuple[str, str]]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = [*project["dependencies"], *project["optional-dependencies"]["dev"]]
    pins = []
    for requirement in requirements:
        match = re.fullmatch(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*==\s*([^\s;,]+)\s*", requirement)
        assert match, f"pyproject.toml: {requirement!r} is not pinned as name==version"
        pins.append((match[1], match[2]))
    return pins


def test_pyproject_has_pins():
    names = {name for name, _ in _pins()}
    assert {"torch", "snakemake", "highdicom", "prov", "pytest", "rocrate"} <= names


@pytest.mark.parametrize(("name", "version"), _pins(), ids=lambda value: str(value))
def test_readme_lists_pin(name, version):
    # The list lives in "Quick start"; its lines wrap anywhere, so compare with whitespace
    # collapsed.
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Quick start", 1)[1].split("\n## ", 1)[0]
    assert f"{name} {version}" in " ".join(section.split()), (
        f'README.md, "Quick start": the pin list lacks "{name} {version}" (pyproject.toml)'
    )
