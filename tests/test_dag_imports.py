"""Building the DAG imports no torch (issue 17): every Snakemake start, twice per job under the
SLURM executor, would otherwise pay the seconds torch takes to import.

The modules are read from the workflow's own import lines, so a new import is checked too; they
are imported in a fresh interpreter, which then must not hold torch."""

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
IMPORT = re.compile(r"^\s*(?:from\s+(abmseg[\w.]*)\s+import|import\s+(abmseg[\w.]*))", re.M)


def workflow_modules() -> list[str]:
    files = [REPO / "workflow" / "Snakefile", *sorted((REPO / "workflow" / "rules").glob("*.smk"))]
    found = {a or b for path in files for a, b in IMPORT.findall(path.read_text())}
    return sorted(found)


def test_the_workflow_imports_abmseg_modules():
    assert "abmseg.infer.bundle_manifest" in workflow_modules()  # the scan sees the imports


def test_no_module_the_workflow_imports_pulls_in_torch():
    modules = workflow_modules()
    code = f"import sys\nfor m in {modules!r}:\n    __import__(m)\nprint('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False", f"torch is imported by one of {modules}"


def test_the_check_would_see_torch():
    code = "import sys, abmseg.infer.model_bundle\nprint('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "True"  # the bundle loader does need torch
