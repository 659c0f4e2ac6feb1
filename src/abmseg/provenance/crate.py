"""``abmseg export-crate``: a finished run as a Workflow Run RO-Crate, folder or zip.

The crate holds the workflow source that ran (it must be the code the records name: the same
source SHA-256), every result file the records list (each checked against its recorded SHA-256
on the way in) and ro-crate-metadata.json (crate_graph). Raw inputs are described, not copied.
A folder crate hard-links results where the file system allows (no second copy of a cohort's
volumes); a zip crate copies them. Nothing half-written is left: the folder is staged, the zip
written beside its target and renamed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

from abmseg.atomic import atomic_path, staged_folder
from abmseg.provenance import environment
from abmseg.provenance.crate_graph import (
    MAIN_WORKFLOW,
    METADATA,
    RunGraph,
    build_graph,
    metadata_document,
)
from abmseg.provenance.errors import ProvenanceError
from abmseg.provenance.lineage import Job, trace_run

# The workflow as shipped: what a reader needs to see (and rerun) what ran.
WORKFLOW_GLOBS = (
    "workflow/Snakefile",
    "workflow/rules/*.smk",
    "workflow/schemas/*.yaml",
    "workflow/report/*.rst",
    "scripts/*.py",
    "envs/*.yaml",
    "profiles/default/config.yaml",
    "config/config.yaml",
    "pyproject.toml",
    "src/abmseg/**/*.py",
    "src/abmseg/**/*.yaml",
)
# Already compressed: stored, not deflated again (saves minutes on a cohort's volumes).
STORED_SUFFIXES = (".gz", ".pt", ".png", ".zip", ".dcm")
CHUNK = 1 << 20


@dataclass(frozen=True)
class CrateSummary:
    """What export-crate wrote."""

    out: Path
    jobs: int
    rules: int
    results: int
    raw_inputs: int
    payload_bytes: int


def workflow_files(root: Path) -> list[str]:
    """The workflow's files under ``root`` (a checkout), relative, sorted."""
    if not (root / MAIN_WORKFLOW).is_file():
        raise ProvenanceError(
            f"{root} holds no {MAIN_WORKFLOW}: pass --workflow with the abmseg checkout that ran "
            "the pipeline"
        )
    found = {
        path.relative_to(root).as_posix()
        for pattern in WORKFLOW_GLOBS
        for path in root.glob(pattern)
        if path.is_file() and not path.is_symlink() and "__pycache__" not in path.parts
    }
    return sorted(found)


def check_source(jobs: list[Job], root: Path) -> None:
    """Refuse a workflow folder whose code is not the code the records say ran."""
    recorded = {(j.record.get("code") or {}).get("source_sha256") for j in jobs} - {None}
    current = environment.source_sha256(root)
    if recorded and recorded != {current}:
        commits = sorted({str((j.record.get("code") or {}).get("commit")) for j in jobs})
        raise ProvenanceError(
            f"the workflow at {root} (source SHA-256 {current[:12]}) is not the code that ran "
            f"these jobs (source SHA-256 {', '.join(sorted(s[:12] for s in recorded))}; "
            f"commit {', '.join(commits)}): check out that code and export again, or pass "
            "--workflow with a checkout of it"
        )


def _hash_copy(source: Path, target: Path | None) -> str:
    """SHA-256 of ``source``, copied to ``target`` on the way when given."""
    digest = hashlib.sha256()
    with source.open("rb") as reader:
        writer = target.open("wb") if target else None
        try:
            while chunk := reader.read(CHUNK):
                digest.update(chunk)
                if writer:
                    writer.write(chunk)
        finally:
            if writer:
                writer.close()
    return digest.hexdigest()


def _check(identifier: str, path: Path, recorded: str | None, actual: str) -> None:
    if recorded and actual != recorded:
        raise ProvenanceError(
            f"{path}: changed since its record (SHA-256 {actual[:12]}, recorded "
            f"{recorded[:12]}); rerun the pipeline (abmseg audit lists every such file) before "
            f"exporting {identifier}"
        )


def _write_folder(graph: RunGraph, files: list[str], root: Path, staging: Path) -> int:
    payload = 0
    for name in files:
        (staging / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(root / name, staging / name)
    for crate_file in graph.files.values():
        if not crate_file.in_payload:
            continue
        target = staging / unquote(crate_file.identifier)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(crate_file.path, target)
            actual = _hash_copy(crate_file.path, None)
        except OSError:  # another file system: copy
            actual = _hash_copy(crate_file.path, target)
        _check(crate_file.identifier, crate_file.path, crate_file.sha256, actual)
        payload += target.stat().st_size
    return payload


def _write_zip(graph: RunGraph, files: list[str], root: Path, archive: zipfile.ZipFile) -> int:
    payload = 0
    for name in files:
        archive.write(root / name, name)
    for crate_file in graph.files.values():
        if not crate_file.in_payload:
            continue
        name = unquote(crate_file.identifier)
        stored = name.endswith(STORED_SUFFIXES)
        compression = zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED
        digest = hashlib.sha256()
        info = zipfile.ZipInfo.from_file(crate_file.path, name)
        info.compress_type = compression
        with (
            crate_file.path.open("rb") as reader,
            archive.open(info, "w", force_zip64=True) as writer,
        ):
            while chunk := reader.read(CHUNK):
                digest.update(chunk)
                writer.write(chunk)
        _check(crate_file.identifier, crate_file.path, crate_file.sha256, digest.hexdigest())
        payload += crate_file.path.stat().st_size
    return payload


def export_crate(
    results: str | Path,
    out: str | Path,
    *,
    workflow: str | Path | None = None,
    agent: dict[str, str] | None = None,
    name: str | None = None,
) -> CrateSummary:
    """Write the crate of the run recorded under ``results`` to ``out`` (a folder, or a .zip)."""
    out = Path(out)
    if out.exists() and (out.is_file() or any(out.iterdir())):
        raise ProvenanceError(f"{out} already exists: name a new folder or .zip for the crate")
    root = Path(workflow) if workflow else environment.repository_root()
    if root is None:
        raise ProvenanceError(
            "this abmseg is not a checkout with its workflow: pass --workflow with the abmseg "
            "checkout that ran the pipeline"
        )
    store, lineage = trace_run(results)
    jobs = list(lineage.jobs.values())
    check_source(jobs, root)
    files = workflow_files(root)
    graph = build_graph(
        jobs, store, files, name=name or f"abmseg run in {store.project.name}", agent=agent
    )
    text = json.dumps(metadata_document(graph), indent=1)
    if out.suffix == ".zip":
        with atomic_path(out) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive:
            payload = _write_zip(graph, files, root, archive)
            archive.writestr(METADATA, text)
    else:
        with staged_folder(out) as staging:
            payload = _write_folder(graph, files, root, staging)
            (staging / METADATA).write_text(text)
    in_payload = sum(f.in_payload for f in graph.files.values())
    return CrateSummary(
        out=out,
        jobs=len(jobs),
        rules=len({j.record["rule"] for j in jobs}),
        results=in_payload,
        raw_inputs=len(graph.files) - in_payload,
        payload_bytes=payload,
    )
