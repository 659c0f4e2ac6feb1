"""Run this repository's Snakemake workflow on a cohort in another folder (tests, benchmarks).

Results go to ``workdir``; the workflow's own config/config.yaml is always the base, further
config files and ``key=value`` overrides are merged over it, as `snakemake --configfile` does.
A work folder deployed with snakedeploy (it has its own workflow/Snakefile, which loads this
workflow as a module) runs through that Snakefile.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def snakemake_command(
    workdir: str | Path,
    sheet: str | Path,
    *args: str,
    configfiles: Sequence[str | Path] = (),
    config: Sequence[str] = (),
) -> list[str]:
    """The command line: this interpreter's snakemake on REPO/workflow/Snakefile (or the work
    folder's own, where it is a deployment), results in workdir."""
    deployed = Path(workdir) / "workflow" / "Snakefile"
    snakefile = deployed if deployed.is_file() else REPO / "workflow" / "Snakefile"
    return [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(snakefile),
        "--directory",
        str(workdir),
        "--configfile",
        str(REPO / "config" / "config.yaml"),
        *map(str, configfiles),
        "--config",
        f"patients={sheet}",
        *config,
        *args,
    ]


def run_snakemake(
    workdir: str | Path,
    sheet: str | Path,
    *args: str,
    configfiles: Sequence[str | Path] = (),
    config: Sequence[str] = (),
    timeout: float = 1800,
) -> subprocess.CompletedProcess:
    """Run it with this interpreter's bin folder first on PATH (rule jobs use the same venv)."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    command = snakemake_command(workdir, sheet, *args, configfiles=configfiles, config=config)
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout)
