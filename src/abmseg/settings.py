"""Stage settings from the workflow config: one frozen dataclass per stage holds the defaults.

Every stage (convert, register, crop, normalise, split, train, infer, evaluate, bundle, export)
has one settings type whose field defaults are the only place a default lives; its
``from_config(config)`` reads the workflow's whole config dict (config/config.yaml's format), takes
the default for any key the config leaves out and refuses a key it does not know, so a typo never
falls back to a default unnoticed. config/config.yaml repeats the defaults as documentation;
tests/test_settings.py proves the two agree. The rule scripts, the ``abmseg`` subcommands and
CT-only prediction all build their settings this way (docs/architecture.md).
"""

from __future__ import annotations

import copy
import dataclasses
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml

from abmseg.errors import ConfigError

T = TypeVar("T")

# The config keys each stage's settings type reads (dotted: one key inside a section). Rules pass
# exactly these as params, so Snakemake reruns a stage when one of them changes and only then.
# The worker count is left out of training's on purpose: it changes no result.
STAGE_CONFIG_KEYS: dict[str, tuple[str, ...]] = {
    "convert": ("regions", "roi_aliases"),
    "register": ("seed", "register"),
    "crop": ("crop",),
    "normalise": ("normalise",),
    "split": ("split",),
    "train": ("seed", "model_preset", "training"),
    "infer": ("seed", "inference", "training.body_threshold", "normalise.suv_ceiling"),
    "qa": ("regions", "qa"),
    "evaluate": ("regions", "metrics", "normalise.suv_ceiling"),
    "bundle": (
        "seed",
        "regions",
        "crop",
        "normalise",
        "inference",
        "qa",
        "training.body_threshold",
    ),
    "training_profile": ("regions",),
    "export": ("regions",),
    # Stage 1 does not depend on equal_budget (only whether a stage 2 follows does).
    "train_stage1": ("seed", "model_preset", "training"),
    # The study's rules: each only what it reads, so changing the bootstrap reruns no sampler.
    "study_fit": ("seed",),
    "study_sampler": (
        "seed",
        "regions",
        "inference",
        "metrics",
        "training.body_threshold",
        "normalise.suv_ceiling",
        "study.start_candidates",
        "study.start_selection_patients",
    ),
    "study_leakage": ("regions",),
    "study_summary": ("study",),
}
# Training settings that change how fast, not what: read from the config by the train script
# (not its params), so changing one reruns nothing.
RUNTIME_TRAINING_KEYS = ("training.workers", "training.augment_on_device")
RESULT_FREE_KEYS = {
    "train": RUNTIME_TRAINING_KEYS,
    "train_stage1": (
        *RUNTIME_TRAINING_KEYS,
        "training.equal_budget",
        "training.diffusion_lr_scale",
        "training.spet_warmup_epochs",
        "training.seg_grad_into_denoiser",
    ),
}


def _is_tuple(annotation: Any) -> bool:
    return typing.get_origin(annotation) is tuple or annotation is tuple


def _field_default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def _value(annotation: Any, default: Any, value: Any, where: str) -> Any:
    """A config value as the field's type: lists become tuples (hashable, as ANTsPy expects); a
    mapping for a nested settings type updates that field's own default (the affine stage's
    defaults are not the rigid stage's)."""
    if value is None:
        return None
    options = [annotation]
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        options = [a for a in typing.get_args(annotation) if a is not type(None)]
    for option in options:
        if dataclasses.is_dataclass(option) and isinstance(value, Mapping):
            base = default if dataclasses.is_dataclass(default) else option()
            return dataclasses.replace(base, **_values(option, value, where))
        if _is_tuple(option) and isinstance(value, list | tuple):
            return tuple(value)
        if option is float and isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    return value


def _values(cls: type, section: Mapping[str, Any], where: str) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(section) - set(known))
    if unknown:
        raise ConfigError(
            f"config '{where}' has unknown key(s) {unknown}; known: {sorted(known)}",
            "fix the spelling or remove the key (workflow/schemas/config.schema.yaml lists them)",
        )
    return {
        name: _value(hints[name], _field_default(known[name]), value, f"{where}.{name}")
        for name, value in section.items()
    }


def from_section(cls: type[T], section: Mapping[str, Any] | None, where: str, **fixed: Any) -> T:
    """``cls`` built from one config section: missing keys keep the dataclass defaults, unknown
    keys raise ConfigError naming ``where`` (the section's config path). ``fixed``: fields that
    come from elsewhere in the config (the seed) or from the job (threads)."""
    try:
        return cls(**_values(cls, dict(section or {}), where), **fixed)
    except (TypeError, ValueError) as error:
        if isinstance(error, ConfigError):
            raise
        raise ConfigError(f"config '{where}': {error}", "correct the value") from None


def to_section(settings: Any) -> dict[str, Any]:
    """A settings object back in config form (tuples as lists): what a model bundle records."""

    def plain(value: Any) -> Any:
        if isinstance(value, tuple | list):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return {k: plain(v) for k, v in dataclasses.asdict(settings).items()}


def pick(config: Mapping[str, Any], *keys: str) -> dict[str, Any]:
    """The part of ``config`` under the given keys ("a" or dotted "a.b"), nested as in config:
    what a rule passes as params, so only a change of these keys reruns it. Absent keys are left
    out (the settings types' defaults then apply)."""
    out: dict[str, Any] = {}
    for key in keys:
        *parents, leaf = key.split(".")
        source: Any = config
        target = out
        for part in parents:
            source = source.get(part) if isinstance(source, Mapping) else None
            target = target.setdefault(part, {})
        if isinstance(source, Mapping) and leaf in source:
            target[leaf] = copy.deepcopy(source[leaf])
    return out


def stage_config(config: Mapping[str, Any], stage: str) -> dict[str, Any]:
    """The part of the config that ``stage`` reads (STAGE_CONFIG_KEYS), as a rule's params."""
    picked = pick(config, *STAGE_CONFIG_KEYS[stage])
    for key in RESULT_FREE_KEYS.get(stage, ()):
        section, leaf = key.split(".")
        picked.get(section, {}).pop(leaf, None)
    return picked


def read_config(path: str | Path) -> dict[str, Any]:
    """A workflow config file (YAML or JSON, config/config.yaml's format) as a dict."""
    path = Path(path)
    try:
        config = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise ConfigError(
            f"cannot read config {path}: {error}", "pass a readable YAML file"
        ) from None
    if config is None:
        return {}
    if not isinstance(config, dict):
        raise ConfigError(
            f"config {path} is not a mapping of sections",
            "write it in config/config.yaml's format (section: {key: value})",
        )
    return config
