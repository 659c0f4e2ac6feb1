"""Conda environment pins must equal pyproject.toml's, and each rule's env must pin every
third-party module its script imports (directly or through abmseg)."""

import re
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from import_scan import runnable_imports

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


# ---- every rule's conda env holds every module its script imports -------------------------------
#
# Each rule of workflow/rules/*.smk is mapped to its `conda:` env file and its `script:`. The
# script's imports are read statically (ast) and `abmseg.*` imports are followed through
# src/abmseg transitively, package __init__ modules included. Imports inside functions count like
# module-level ones (the function may run in the rule); only imports under `if TYPE_CHECKING:`
# are skipped, as they never run. Every third-party top-level module found must be pinned, under
# its distribution name (DISTRIBUTIONS), in the rule's env file.

SRC = ROOT / "src"
RULE_FILES = sorted((ROOT / "workflow" / "rules").glob("*.smk"))
# Top-level import name -> distribution name as pinned in pyproject.toml and envs/*.yaml.
DISTRIBUTIONS = {
    "SimpleITK": "SimpleITK",
    "ants": "antspyx",
    "highdicom": "highdicom",
    "matplotlib": "matplotlib",
    "numpy": "numpy",
    "pandas": "pandas",
    "prov": "prov",
    "pydicom": "pydicom",
    "scipy": "scipy",
    "skimage": "scikit-image",
    "torch": "torch",
    "yaml": "pyyaml",
}
# In every rule's job without a pin in its env: Snakemake itself runs the script.
PROVIDED = {"snakemake"}
RULE = re.compile(r"^(?:rule|checkpoint)\s+(\w+)\s*:[ \t]*\n((?:[ \t]+\S.*\n|[ \t]*\n)*)", re.M)


def _directive(body, name):
    """The string literal of a rule body's ``name:`` directive (same or next line), or None."""
    literal = r"(?:\"([^\"\n]+)\"|'([^'\n]+)')"
    match = re.search(rf"^[ \t]+{name}:[ \t]*(?:\n[ \t]+)?{literal}[ \t]*,?[ \t]*$", body, re.M)
    if match:
        return match.group(1) or match.group(2)
    if re.search(rf"^[ \t]+{name}:", body, re.M):
        raise AssertionError(f"the {name}: directive is not one string literal in:\n{body}")
    return None


def _rules(rule_files=RULE_FILES):
    """{rule: (rule file, env file or None, script or None)}, paths resolved as Snakemake does:
    relative to the rule file's folder."""
    rules = {}
    for smk in rule_files:
        for match in RULE.finditer(smk.read_text()):
            env, script = (_directive(match.group(2), key) for key in ("conda", "script"))
            rules[match.group(1)] = (
                smk,
                (smk.parent / env).resolve() if env else None,
                (smk.parent / script).resolve() if script else None,
            )
    return rules


def _module_file(name, src):
    """The file of the dotted module ``name`` under ``src`` (a package's __init__.py), or None."""
    path = src.joinpath(*name.split("."))
    for candidate in (path / "__init__.py", path.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def _third_party_imports(script, src=SRC, package="abmseg"):
    """{top-level module: import chain} of every non-stdlib module ``script`` may import, itself
    or through ``package``'s modules under ``src``. Breadth first: each chain is a shortest one."""
    start = script.relative_to(ROOT) if script.is_relative_to(ROOT) else script
    queue = [(script, None, (str(start),))]
    seen = {script}
    found = {}
    while queue:
        path, module, chain = queue.pop(0)
        for name, line, is_module in runnable_imports(path, module):
            top = name.split(".")[0]
            if top != package:
                if top not in sys.stdlib_module_names and top not in found:
                    found[top] = (*chain, f"{name} (line {line})")
                continue
            parts = name.split(".")
            for i in range(1, len(parts) + 1):
                dotted = ".".join(parts[:i])
                file = _module_file(dotted, src)
                if file is None:
                    assert i == len(parts) and not is_module, (
                        f"{' -> '.join(chain)} imports {name} (line {line}): no module {dotted} "
                        f"under {src}"
                    )
                elif file not in seen:
                    seen.add(file)
                    queue.append((file, dotted, (*chain, dotted)))
    return found


def _missing_pins(rule, smk, env, script):
    """One line per third-party module the rule's script imports that its env does not pin."""
    pinned = set(_pins(_env_specs(env)))
    problems = []
    for top, chain in sorted(_third_party_imports(script).items()):
        if top in PROVIDED:
            continue
        where = f"rule {rule} ({smk.relative_to(ROOT)}), env {env.relative_to(ROOT)}"
        if top not in DISTRIBUTIONS:
            problems.append(
                f"{where}: module {top!r} has no distribution in tests/test_envs.py "
                f"DISTRIBUTIONS (add it, and its pin to pyproject.toml and the env); "
                f"import chain: {' -> '.join(chain)}"
            )
        elif _name(DISTRIBUTIONS[top]) not in pinned:
            problems.append(
                f"{where} does not pin {DISTRIBUTIONS[top]} (module {top!r}); "
                f"import chain: {' -> '.join(chain)}"
            )
    return problems


RULES = _rules()
SCRIPT_RULES = sorted(rule for rule, (_, _, script) in RULES.items() if script)


def test_rule_parser_finds_the_script_rules():
    # A parser that silently matched nothing would make the next test vacuous.
    assert len(SCRIPT_RULES) >= 10, sorted(RULES)
    assert {"convert", "register", "train_stage1", "infer", "metrics", "figure"} <= set(RULES)
    smk, env, script = RULES["figure"]
    assert smk.name == "evaluate.smk"
    assert env == ROOT / "envs" / "preprocess.yaml"
    assert script == ROOT / "scripts" / "figure.py"


@pytest.mark.parametrize("rule", SCRIPT_RULES)
def test_rule_env_holds_every_module_its_script_imports(rule):
    smk, env, script = RULES[rule]
    assert env is not None, f"rule {rule} ({smk.relative_to(ROOT)}) has a script but no conda env"
    assert env.is_file(), f"rule {rule}: conda env {env} does not exist"
    assert script.is_file(), f"rule {rule}: script {script} does not exist"
    problems = _missing_pins(rule, smk, env, script)
    assert problems == [], "\n".join(problems)


def test_import_scan_follows_the_package(tmp_path):
    """Function-level and transitive imports count, TYPE_CHECKING ones and stdlib do not."""
    pkg = tmp_path / "src" / "abmseg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("import json\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "plot.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    import torch\n"
        "def draw():\n    import matplotlib.pyplot as plt\n"
    )
    (pkg / "sub" / "core.py").write_text("import numpy as np\nfrom .plot import draw\n")
    script = tmp_path / "script.py"
    script.write_text("import os\nfrom abmseg.sub.core import np\n")
    found = _third_party_imports(script, src=tmp_path / "src")
    assert sorted(found) == ["matplotlib", "numpy"]
    assert found["matplotlib"][1:] == (
        "abmseg.sub.core",
        "abmseg.sub.plot",
        "matplotlib.pyplot (line 5)",
    )
