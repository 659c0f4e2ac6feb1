"""What ran a job: code version, package versions and the machine (no usernames, no PHI).

Everything here is computed once per process (a rule script is one process per job) and never
imports a heavy library itself: GPU facts come from torch only when the job already imported it.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import socket
import subprocess
import sys
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

import abmseg

PACKAGE_DIR = Path(abmseg.__file__).resolve().parent
# Distributions whose versions can change a result (or explain a difference between two runs).
PACKAGES = (
    "snakemake",
    "snakemake-executor-plugin-slurm",
    "torch",
    "SimpleITK",
    "antspyx",
    "numpy",
    "pandas",
    "scipy",
    "scikit-image",
    "pydicom",
    "dcm2niix",
    "pyyaml",
    "matplotlib",
    "prov",
    "abmseg",
)


def repository_root() -> Path | None:
    """The checkout the package was imported from (src layout), or None for an installed copy."""
    root = PACKAGE_DIR.parent.parent
    if PACKAGE_DIR.parent.name == "src" and (root / "workflow" / "Snakefile").is_file():
        return root
    return None


def _source_files(root: Path | None) -> list[tuple[str, Path]]:
    """(relative name, path) of every file that is the pipeline's code."""
    if root is None:
        base = PACKAGE_DIR.parent
        return [(p.relative_to(base).as_posix(), p) for p in PACKAGE_DIR.rglob("*.py")]
    files = [*(root / "src" / "abmseg").rglob("*.py"), *(root / "workflow").rglob("*.smk")]
    files += [p for p in (root / "scripts").glob("*.py") if not p.is_symlink()]
    files.append(root / "workflow" / "Snakefile")
    return [(p.relative_to(root).as_posix(), p) for p in files if p.is_file()]


def source_sha256(root: Path | None) -> str:
    """SHA-256 over the sorted relative paths and contents of the code: catches uncommitted edits
    that the commit alone would hide."""
    digest = hashlib.sha256()
    for name, path in sorted(_source_files(root)):
        data = path.read_bytes()
        digest.update(f"{name}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()


def _git(root: Path, *args: str) -> str | None:
    try:
        result = subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout if result.returncode == 0 else None


@cache
def code_version() -> dict[str, Any]:
    """``{commit, dirty, source_sha256}``; commit None and dirty False outside a git checkout."""
    root = repository_root()
    commit = _git(root, "rev-parse", "HEAD") if root else None
    status = _git(root, "status", "--porcelain", "--untracked-files=no") if commit else None
    return {
        "commit": commit.strip() if commit else None,
        "dirty": bool(status and status.strip()),
        "source_sha256": source_sha256(root),
    }


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


@cache
def software_versions() -> dict[str, str | None]:
    """Python and the key packages' versions (None where a package is not installed)."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    versions.update({name: _version(name) for name in PACKAGES})
    # Conda rule environments import abmseg through the scripts/abmseg link, not an install.
    versions["abmseg"] = versions["abmseg"] or abmseg.__version__
    return versions


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _gpus() -> tuple[list[str], str | None]:
    """GPU names and CUDA version. torch is asked only when the job imported it already (never
    import torch just to describe the host); otherwise nvidia-smi, when present, names the GPUs."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        return names, torch.version.cuda
    if shutil.which("nvidia-smi"):
        try:
            result = subprocess.run(
                ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=30,
            )
        except (OSError, subprocess.SubprocessError):
            return [], None
        if result.returncode == 0:
            return [line.strip() for line in result.stdout.splitlines() if line.strip()], None
    return [], None


def host_info() -> dict[str, Any]:
    """The machine: host name, OS, CPU model and count, visible GPUs and CUDA version."""
    gpus, cuda = _gpus()
    return {
        "hostname": socket.gethostname(),
        "os": platform.platform(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "gpus": gpus,
        "cuda": cuda,
    }
