"""Re-hash the lineage of results and name every file that no longer matches its record.

Catches a changed or replaced intermediate, a tampered or removed raw DICOM file, a deleted
output, a result without a record, and a stale result whose upstream was rebuilt after it was
made (its recorded input hash differs from what that input's own record now says).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from abmseg.provenance import layout
from abmseg.provenance.errors import ProvenanceError
from abmseg.provenance.hashing import current_digest
from abmseg.provenance.lineage import Job, Lineage, RecordStore, trace
from abmseg.provenance.render import short

REBUILD = "delete it and rerun snakemake, which rebuilds it and everything made from it"
RESTORE = (
    "restore the original raw file; if the change is intended, rerun snakemake with "
    "--forceall (or delete the affected results) to rebuild from it"
)


@dataclass(frozen=True)
class Problem:
    kind: str  # changed | missing | no record | stale
    path: str
    detail: str
    fix: str

    def line(self) -> str:
        return f"{self.kind}: {self.path}: {self.detail}. Fix: {self.fix}"


@dataclass
class AuditReport:
    problems: list[Problem] = field(default_factory=list)
    files_checked: int = 0
    jobs: int = 0
    raw_files: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        counts = (
            f"{self.files_checked} files checked ({self.jobs} jobs, {self.raw_files} raw files)"
        )
        if self.ok:
            return f"audit ok: {counts}"
        return f"audit FAILED: {len(self.problems)} problem(s); {counts}"


class Auditor:
    """Audits any number of paths; each file is hashed once, each problem reported once."""

    def __init__(self, raw_root: tuple[Path, Path] | None = None) -> None:
        self.raw_root = raw_root
        self.lineages: dict[Path, Lineage] = {}
        self.current: dict[Path, tuple[str, int] | None] = {}
        self.problems: dict[tuple[str, str], Problem] = {}

    def add(self, path: str | Path) -> None:
        """Add a result file, a results folder (or a folder in it) or a record to the audit."""
        results, target = layout.locate(path)
        lineage = self.lineages.get(results)
        store = lineage.store if lineage else RecordStore(results, self.raw_root)
        if target.is_dir():
            targets = sorted(p for p in target.rglob("*") if p.is_file() and store.is_result(p))
            for record_file in store.record_files(under=target):
                targets.append(layout.output_of_record(record_file)[1])
        else:
            targets = [target]
        self.lineages[results] = trace(store, targets, lineage)

    def _digest(self, path: Path, directory: bool = False) -> tuple[str, int] | None:
        if path not in self.current:
            self.current[path] = current_digest(path, directory)
        return self.current[path]

    def _problem(self, key: str, kind: str, path: Path, detail: str, fix: str) -> None:
        self.problems.setdefault((key, kind), Problem(kind, str(path), detail, fix))

    def _check_output(self, job: Job, store: RecordStore, entry: dict[str, Any]) -> None:
        path = store.resolve(entry["path"])
        now = self._digest(path, bool(entry.get("directory")))
        if now is None:
            detail = f"output of {job.label} is gone"
            self._problem(str(path), "missing", path, detail, "rerun snakemake to rebuild it")
        elif now[0] != entry["sha256"]:
            detail = (
                f"recorded sha256 {short(entry['sha256'])}, now {short(now[0])} "
                f"(output of {job.label})"
            )
            self._problem(str(path), "changed", path, detail, REBUILD)

    def _check_input(self, job: Job, lineage: Lineage, entry: dict[str, Any]) -> None:
        store = lineage.store
        path = store.resolve(entry["path"])
        now = self._digest(path, bool(entry.get("directory")))
        recorded = entry.get("sha256")
        if now is None and recorded is None:
            return  # absent when the job ran, still absent
        raw = not store.is_result(path)
        role = f"{'raw ' if raw else ''}input of {job.label}"
        if now is None:
            fix = RESTORE if raw else "rerun snakemake to rebuild it"
            self._problem(str(path), "missing", path, f"{role} is gone", fix)
            return
        if now[0] == recorded:
            return
        change = f"recorded sha256 {short(recorded)}, now {short(now[0])}"
        if raw:
            self._problem(str(path), "changed", path, f"{change} ({role})", RESTORE)
            return
        producer = lineage.jobs.get(lineage.producer.get(path, ""))
        remade = producer and any(
            store.resolve(o["path"]) == path and o["sha256"] == now[0]
            for o in producer.record.get("outputs", [])
        )
        if remade:  # the input was rebuilt after this job used it
            first = job.record["outputs"][0]["path"] if job.record.get("outputs") else job.key
            detail = f"made by {job.label} from an older {entry['path']} ({change})"
            self._problem(job.key, "stale", store.resolve(first), detail, "rerun snakemake")
        else:
            self._problem(str(path), "changed", path, f"{change} ({role})", REBUILD)

    def run(self) -> AuditReport:
        report = AuditReport()
        for lineage in self.lineages.values():
            for path in lineage.unrecorded:
                if path.exists():
                    detail = "written under results/ but has no provenance record"
                    fix = "delete it if it is not a pipeline result, else rerun snakemake"
                    self._problem(str(path), "no record", path, detail, fix)
                else:
                    detail = "no such file and no provenance record"
                    self._problem(str(path), "missing", path, detail, "rerun snakemake")
            for job in lineage.jobs.values():
                for entry in job.record.get("outputs", []):
                    self._check_output(job, lineage.store, entry)
                for entry in job.record.get("inputs", []):
                    self._check_input(job, lineage, entry)
            report.jobs += len(lineage.jobs)
            report.raw_files += len(lineage.raw)
        report.problems = list(self.problems.values())
        report.files_checked = sum(1 for digest in self.current.values() if digest is not None)
        return report


def audit(
    paths: Iterable[str | Path], raw_root: tuple[str | Path, str | Path] | None = None
) -> AuditReport:
    """Audit result files and/or results folders; ``raw_root`` (old folder, new folder) checks
    raw inputs recorded under the old folder at the new one (raw data moved or copied)."""
    moved = None
    if raw_root is not None:
        moved = (layout.absolute(raw_root[0]), layout.absolute(raw_root[1]))
        if not moved[1].is_dir():
            raise ProvenanceError(f"--raw-root: {raw_root[1]} is not a folder")
    auditor = Auditor(moved)
    for path in paths:
        auditor.add(path)
    return auditor.run()
