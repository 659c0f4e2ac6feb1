"""config/README.md documents every config key (the snakemake-workflows catalogue shows it).

Which keys: every key path of config/config.yaml and of workflow/schemas/config.schema.yaml, so a
key the schema accepts but config.yaml leaves out (``training.diffusion_lr_scale``,
``inference.bf16``) needs documentation too. A path is dotted and names one mapping key at any
depth, section keys included (``register``, ``register.rigid``, ``register.rigid.metric_bins``).
Lists are values: their items are not keys.

How a key counts as documented: its dotted path appears in the README between backticks, exactly
(```training.epochs_stage1```; ```register.rigid``` does not match inside
```register.rigid.metric_bins```).

Patterns: a mapping whose keys are the workflow's rule names, not settings, is documented as a
pattern. Only ``resources`` is such a mapping: ``resources.<rule>.mem_mb`` stands for the
``mem_mb`` of every rule's entry (likewise ``threads`` and ``runtime``). Each entry must still be
named as ``resources.<name>`` (one table row per rule), so a rule added to ``resources`` needs a
row. Every other mapping is documented key by key. That includes ``regions`` and ``roi_aliases``:
their keys look like data, but the schema fixes them to the three region names (the networks have
exactly four classes), so they are a closed set.

The reverse is checked too: a backticked dotted path in the README that starts with a config
section must name a real key, written out (``resources.register.threads``) or as a pattern, so a
stale or misspelt key fails. File names such as ``qa.json`` are not key paths.

A key added to config.yaml or to the schema without a README entry fails
``test_every_config_key_is_documented``. ``test_an_undocumented_key_is_caught`` shows that failure
on a copy of the config with one invented key, without editing config.yaml.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
CONFIG = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
SCHEMA = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())
README = (REPO / "config" / "README.md").read_text()

# Mappings documented as a pattern: dotted path of the mapping -> placeholder for its keys.
PATTERNS = {"resources": "<rule>"}
# Backticked tokens ending like this are file names, not key paths (``qa.json``, ``study.yaml``).
FILE_SUFFIX = re.compile(r"\.(json|png|tsv|csv|yaml|yml|md|gz|dcm|pt|mat|log)$")
BACKTICKED_PATH = re.compile(r"`([A-Za-z0-9_]+(?:\.[A-Za-z0-9_<>]+)+)`")


def config_paths(node: Mapping[str, Any], prefix: str = "") -> Iterator[str]:
    """Every dotted key path of a config mapping, recursing into nested mappings."""
    for key, value in node.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        yield path
        if isinstance(value, Mapping):
            yield from config_paths(value, path)


def _resolve(node: Mapping[str, Any], schema: Mapping[str, Any]) -> Mapping[str, Any]:
    """Follow a local ``$ref`` (``#/definitions/name``)."""
    while "$ref" in node:
        target: Any = schema
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def schema_paths(
    node: Mapping[str, Any], schema: Mapping[str, Any], prefix: str = ""
) -> Iterator[str]:
    """Every dotted key path the schema allows: its ``properties``, through ``$ref``s."""
    node = _resolve(node, schema)
    for key, child in node.get("properties", {}).items():
        path = f"{prefix}.{key}" if prefix else key
        yield path
        yield from schema_paths(child, schema, path)


def documented_form(path: str) -> str:
    """The path as the README must write it: a pattern mapping's key below an entry becomes the
    placeholder (``resources.convert.mem_mb`` -> ``resources.<rule>.mem_mb``); the entry itself
    (``resources.convert``) stays as it is."""
    parts = path.split(".")
    for mapping, placeholder in PATTERNS.items():
        depth = len(mapping.split("."))
        if parts[:depth] == mapping.split(".") and len(parts) > depth + 1:
            parts[depth] = placeholder
    return ".".join(parts)


def required_paths(config: Mapping[str, Any], schema: Mapping[str, Any]) -> set[str]:
    return {documented_form(p) for p in (*config_paths(config), *schema_paths(schema, schema))}


def undocumented(paths: set[str], readme: str) -> list[str]:
    return sorted(p for p in paths if f"`{p}`" not in readme)


def test_the_schema_walk_finds_every_config_key():
    # The schema refuses unknown keys, so a walk that resolves $refs finds all of config.yaml's.
    assert set(config_paths(CONFIG)) <= set(schema_paths(SCHEMA, SCHEMA))
    assert "training.diffusion_lr_scale" in set(schema_paths(SCHEMA, SCHEMA))


def test_every_config_key_is_documented():
    missing = undocumented(required_paths(CONFIG, SCHEMA), README)
    assert not missing, f"config/README.md lacks these keys (in backticks): {missing}"


def test_every_documented_key_exists():
    known = required_paths(CONFIG, SCHEMA)
    sections = set(CONFIG) | set(SCHEMA["properties"])
    stale = sorted(
        token
        for token in set(BACKTICKED_PATH.findall(README))
        if token.split(".")[0] in sections
        and not FILE_SUFFIX.search(token)
        and documented_form(token) not in known
    )
    assert not stale, f"config/README.md documents keys the config does not have: {stale}"


def test_an_undocumented_key_is_caught():
    config = {**CONFIG, "training": {**CONFIG["training"], "new_knob": 1}}
    config["resources"] = {**CONFIG["resources"], "new_rule": CONFIG["resources"]["crop"]}
    missing = undocumented(required_paths(config, SCHEMA), README)
    assert missing == ["resources.new_rule", "training.new_knob"]
