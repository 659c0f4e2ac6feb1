"""Version numbers: the package's semantic version is one number in two places, and
CHANGELOG.md has its entry; the bundle format's version is MAJOR.MINOR (CHANGELOG.md's policy)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import abmseg
from abmseg.infer.bundle_manifest import FORMAT_MAJOR, FORMAT_VERSION

REPO = Path(__file__).resolve().parents[1]
SEMVER = re.compile(r"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-[0-9A-Za-z.-]+)?")


def test_pyproject_and_the_package_give_one_semantic_version():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["version"] == abmseg.__version__
    assert SEMVER.fullmatch(abmseg.__version__), abmseg.__version__


def test_the_changelog_has_an_entry_for_this_version():
    changelog = (REPO / "CHANGELOG.md").read_text()
    headings = re.findall(r"^## \[?([^\]\s]+)\]?", changelog, flags=re.MULTILINE)
    assert abmseg.__version__ in headings, headings


def test_the_bundle_format_version_is_major_dot_minor():
    assert re.fullmatch(r"\d+\.\d+", FORMAT_VERSION)
    assert int(FORMAT_VERSION.split(".")[0]) == FORMAT_MAJOR
