"""Conda environment pins must equal pyproject.toml's."""

import re
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PIN = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*==\s*([^\s;]+)\s*$")
ENV_FILES = sorted((ROOT / "envs").glob("*.yaml"))


def _name(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def _pins(specs):
    pins = {}
    for spec in specs:
        match = PIN.match(spec)
        if match:
            pins[_name(match.group(1))] = match.group(2)
    return pins


def _env_specs(path):
    """Every string under dependencies, including a nested pip: list."""
    specs = []
    for item in yaml.safe_load(path.read_text())["dependencies"]:
        if isinstance(item, str):
            specs.append(item)
        elif isinstance(item, dict):
            for value in item.values():
                specs.extend(value)
    return specs


def _project_pins():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return _pins(project["dependencies"])


def test_pin_parser():
    assert _pins(["SimpleITK==2.5.7", "pip", "python=3.11", "scikit_image == 0.25.2"]) == {
        "simpleitk": "2.5.7",
        "scikit-image": "0.25.2",
    }


def test_project_dependencies_are_all_pinned():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert len(_project_pins()) == len(project["dependencies"]) > 0


def test_there_are_env_files():
    assert ENV_FILES


@pytest.mark.parametrize("env_file", ENV_FILES, ids=lambda p: p.name)
def test_env_pins_equal_pyproject(env_file):
    project = _project_pins()
    env = _pins(_env_specs(env_file))
    assert env, f"{env_file.name} pins nothing"
    missing = sorted(set(env) - set(project))
    assert missing == [], f"{env_file.name} pins packages absent from pyproject: {missing}"
    differing = {n: (v, project[n]) for n, v in env.items() if project[n] != v}
    assert differing == {}, f"{env_file.name} (env, pyproject) pins differ: {differing}"


@pytest.mark.parametrize("env_file", ENV_FILES, ids=lambda p: p.name)
def test_env_has_no_loose_pip_requirements(env_file):
    # A pip requirement without '==' would float; every pip entry must be a pin.
    for item in yaml.safe_load(env_file.read_text())["dependencies"]:
        if isinstance(item, dict):
            for spec in item.get("pip", []):
                assert PIN.match(spec), f"{env_file.name}: unpinned pip requirement {spec!r}"
