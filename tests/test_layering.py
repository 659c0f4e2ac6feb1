"""The package's layering (docs/architecture.md, "Layering"), read from the import statements.

A layer that imports a layer above it (or a sibling it must not know) makes a cycle sooner or
later: io/ <-> rt/ and infer/ -> train/ were both found in a review and removed.
"""

from pathlib import Path

import pytest
from import_scan import runnable_imports

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "abmseg"

# package folder -> abmseg sub-packages it must never import (at any depth, even inside functions)
FORBIDDEN = {
    "io": ("rt", "preprocess", "models", "train", "infer", "evaluate", "cohort", "synth"),
    "rt": ("preprocess", "models", "train", "infer", "evaluate", "cohort"),
    "models": ("train", "infer", "preprocess", "evaluate", "cohort"),
    "train": ("infer", "evaluate"),
    "infer": ("train",),
    "qa": ("train", "infer", "models", "cohort", "synth", "study"),
}


def imported_abmseg_packages(path: Path, package: Path = PACKAGE) -> set[str]:
    """The part after ``abmseg.`` of every import in ``path`` that can run, relative ones
    resolved."""
    parts = path.relative_to(package).with_suffix("").parts
    module = ".".join(["abmseg", *(parts[:-1] if parts[-1] == "__init__" else parts)])
    names = {name for name, _, _ in runnable_imports(path, module)}
    return {n.split(".")[1] for n in names if n.startswith("abmseg.")}


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layer_imports_nothing_it_must_not(layer):
    offenders = []
    for path in sorted((PACKAGE / layer).rglob("*.py")):
        bad = imported_abmseg_packages(path) & set(FORBIDDEN[layer])
        if bad:
            offenders.append(
                f"{path.relative_to(PACKAGE)} imports abmseg.{', abmseg.'.join(sorted(bad))}"
            )
    assert offenders == []


def test_the_scan_sees_relative_and_function_level_imports(tmp_path):
    fake = tmp_path / "abmseg"
    (fake / "infer").mkdir(parents=True)
    module = fake / "infer" / "thing.py"
    module.write_text("def f():\n    from ..train import engine\nimport abmseg.models.mpfpsn\n")
    assert imported_abmseg_packages(module, fake) == {"train", "models"}
