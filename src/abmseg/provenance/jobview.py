"""Read a Snakemake job object (the ``snakemake`` of a rule script) into plain, JSON-safe data.

Works on Snakemake's Namedlist containers and on plain dicts/lists/namespaces, so tests can pass a
tiny fake job.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from pathlib import PurePath
from types import SimpleNamespace
from typing import Any

SCALARS = (str, int, bool, type(None))


def jsonable(value: Any) -> Any:
    """``value`` as JSON data: containers recursively, paths and unknown objects as strings."""
    if isinstance(value, SCALARS):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, PurePath):
        return str(value)
    if callable(getattr(value, "tolist", None)):  # numpy scalars and arrays
        return jsonable(value.tolist())
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, SimpleNamespace):
        return jsonable(vars(value))
    if isinstance(value, list) and hasattr(value, "_names") and getattr(value, "_names", None):
        return named(value)
    if isinstance(value, set | frozenset):
        return sorted((jsonable(v) for v in value), key=repr)
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if callable(value):
        return f"<callable {getattr(value, '__qualname__', type(value).__name__)}>"
    return str(value)


def named(container: Any) -> dict[str, Any]:
    """A Namedlist / dict / namespace as a dict; unnamed Namedlist items go under '_positional'."""
    if container is None:
        return {}
    if isinstance(container, Mapping):
        return jsonable(container)
    if isinstance(container, SimpleNamespace):
        return jsonable(vars(container))
    allitems = getattr(container, "_allitems", None)
    if callable(allitems):  # Snakemake Namedlist: keep unnamed items too
        result: dict[str, Any] = {}
        positional = []
        for name, value in allitems():
            if name is None:
                positional.append(jsonable(value))
            else:
                result[name] = jsonable(value)
        if positional:
            result["_positional"] = positional
        return result
    if hasattr(container, "items"):
        return {str(k): jsonable(v) for k, v in container.items()}
    return {"_positional": jsonable(list(container))}


def paths(container: Any) -> list[str]:
    """Every path in an input/output/log container, flattened, in order, without repeats."""
    if container is None:
        return []
    if isinstance(container, str | PurePath):
        return [str(container)]
    if isinstance(container, Mapping):
        items: Iterable[Any] = container.values()
    elif isinstance(container, SimpleNamespace):
        items = vars(container).values()
    else:
        items = container
    result: list[str] = []
    for item in items:
        for path in paths(item):
            if path not in result:
                result.append(path)
    return result


def wildcards(job: Any) -> dict[str, str]:
    return {k: str(v) for k, v in named(getattr(job, "wildcards", None)).items() if k[:1] != "_"}


def config_values(config: Mapping[str, Any] | None, keys: Iterable[str]) -> dict[str, Any]:
    """Config values a script reads itself, by dotted key ('training.workers'); None if absent."""
    values: dict[str, Any] = {}
    for key in keys:
        value: Any = config or {}
        for part in key.split("."):
            value = value.get(part) if isinstance(value, Mapping) else None
        values[key] = jsonable(value)
    return values


def describe(job: Any, config_keys: Iterable[str] = ()) -> dict[str, Any]:
    """Rule, wildcards, file lists, params, the declared config values and the seed of a job."""
    config = getattr(job, "config", None) or {}
    return {
        "rule": str(job.rule),
        "wildcards": wildcards(job),
        "inputs": paths(getattr(job, "input", None)),
        "outputs": paths(getattr(job, "output", None)),
        "logs": paths(getattr(job, "log", None)),
        "params": named(getattr(job, "params", None)),
        "config": config_values(config, config_keys),
        "seed": jsonable(config.get("seed")) if isinstance(config, Mapping) else None,
    }
