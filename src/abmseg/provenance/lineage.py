"""Follow records back from a result to the raw files it was made from.

Each job is loaded once (the training model's lineage fans out to every training patient, and a
job's record exists once per output). Inputs under results/ lead to their own records; inputs
outside it (DICOM files, labels, model presets, the cohort sheet) are the raw leaves.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from abmseg.provenance import layout
from abmseg.provenance.errors import ProvenanceError
from abmseg.provenance.record import load_record


@dataclass
class Job:
    """One rule job, as its records describe it."""

    key: str
    record: dict[str, Any]
    record_file: Path

    @property
    def label(self) -> str:
        wildcards = " ".join(f"{k}={v}" for k, v in self.record["wildcards"].items())
        return f"{self.record['rule']} {wildcards}".strip()


class RecordStore:
    """The records of one results/ folder, each file read at most once."""

    def __init__(self, results: Path, raw_root: tuple[Path, Path] | None = None) -> None:
        self.results = layout.absolute(results)
        self.project = self.results.parent
        self.raw_root = raw_root
        self._loaded: dict[Path, dict[str, Any] | None] = {}

    def resolve(self, entry_path: str) -> Path:
        """A recorded path, absolute: relative ones against the project folder, absolute ones
        under ``raw_root``'s old folder moved to its new one (raw data copied or moved)."""
        path = layout.resolve(entry_path, self.project)
        if self.raw_root is not None:
            old, new = self.raw_root
            if path == old or old in path.parents:
                return new / path.relative_to(old)
        return path

    def is_result(self, path: Path) -> bool:
        return layout.result_relative(path, self.results) is not None

    def _load(self, record_file: Path) -> dict[str, Any] | None:
        if record_file not in self._loaded:
            self._loaded[record_file] = load_record(record_file) if record_file.is_file() else None
        return self._loaded[record_file]

    def find(self, path: Path) -> tuple[Path, dict[str, Any]] | None:
        """The record of a result file, or of the folder output that contains it."""
        for candidate in [path, *path.parents]:
            if candidate == self.results or not self.is_result(candidate):
                return None
            record_file = layout.record_path(self.results, candidate)
            record = self._load(record_file)
            if record is not None:
                return record_file, record
        return None

    def record_files(self, under: Path | None = None) -> list[Path]:
        """Every record file (of the whole folder, or of the results below ``under``)."""
        folder = layout.records_dir(self.results)
        if under is not None and under != self.results:
            rel = layout.result_relative(under, self.results)
            # a folder inside results/provenance itself stands for its own records
            folder = under if rel is None else folder / rel
        if folder.is_file():
            return [folder]
        return sorted(p for p in folder.rglob(f"*{layout.SUFFIX}") if p.is_file())


def job_key(record: dict[str, Any], record_file: Path) -> str:
    """A job's identity: its first output (every record of the job lists the same outputs)."""
    outputs = record.get("outputs") or []
    return outputs[0]["path"] if outputs else str(record_file)


@dataclass
class Lineage:
    """The jobs and raw files behind some results."""

    store: RecordStore
    targets: list[Path]
    jobs: dict[str, Job] = field(default_factory=dict)
    producer: dict[Path, str] = field(default_factory=dict)
    unrecorded: list[Path] = field(default_factory=list)
    raw: dict[Path, dict[str, Any]] = field(default_factory=dict)

    def add_record(self, record_file: Path, record: dict[str, Any]) -> Job | None:
        """Add a job (once); return it when it is new."""
        key = job_key(record, record_file)
        if key in self.jobs:
            return None
        job = self.jobs[key] = Job(key, record, record_file)
        for output in record.get("outputs", []):
            self.producer.setdefault(self.store.resolve(output["path"]), key)
        return job

    def to_dict(self) -> dict[str, Any]:
        """JSON form: a flat job graph (inputs name the job that made them) and the raw leaves."""
        jobs = []
        for job in self.jobs.values():
            record = job.record
            inputs = []
            for entry in record.get("inputs", []):
                path = self.store.resolve(entry["path"])
                result = self.store.is_result(path)
                inputs.append(
                    {
                        **entry,
                        "kind": "result" if result else "raw",
                        "made_by": self.producer.get(path) if result else None,
                    }
                )
            jobs.append(
                {
                    "id": job.key,
                    "rule": record["rule"],
                    "wildcards": record["wildcards"],
                    "record": str(job.record_file),
                    "started": record.get("started"),
                    "finished": record.get("finished"),
                    "code": record.get("code"),
                    "outputs": record.get("outputs", []),
                    "inputs": inputs,
                }
            )
        return {
            "targets": [str(t) for t in self.targets],
            "results": str(self.store.results),
            "made_by": [self.producer.get(t) for t in self.targets],
            "jobs": jobs,
            "raw": [{**entry, "path": str(path)} for path, entry in self.raw.items()],
            "unrecorded": [str(p) for p in self.unrecorded],
        }


def trace(store: RecordStore, targets: Iterable[Path], lineage: Lineage | None = None) -> Lineage:
    """Breadth-first from ``targets`` (absolute paths of results) back to the raw files."""
    lineage = lineage or Lineage(store, [])
    known = set(lineage.targets)
    targets = [t for t in dict.fromkeys(targets) if t not in known]
    lineage.targets.extend(targets)
    seen = set(lineage.producer) | set(lineage.unrecorded)
    queue = deque(t for t in targets if t not in seen)
    seen.update(queue)
    while queue:
        path = queue.popleft()
        found = store.find(path)
        if found is None:
            lineage.unrecorded.append(path)
            continue
        job = lineage.add_record(*found)
        lineage.producer.setdefault(path, job_key(found[1], found[0]))
        if job is None:
            continue
        for entry in job.record.get("inputs", []):
            source = store.resolve(entry["path"])
            if not store.is_result(source):
                lineage.raw.setdefault(source, entry)
            elif source not in seen:
                seen.add(source)
                queue.append(source)
    return lineage


def trace_run(results: str | Path) -> tuple[RecordStore, Lineage]:
    """Every job recorded under ``results`` (or a folder in it) and the jobs upstream of them:
    what export-prov and export-crate describe."""
    results_dir, folder = layout.locate(results)
    store = RecordStore(results_dir)
    record_files = store.record_files(under=folder)
    if not record_files:
        raise ProvenanceError(
            f"no provenance records under {layout.records_dir(results_dir)}; "
            "run the pipeline first (records are written by each rule job)"
        )
    outputs = [layout.output_of_record(p)[1] for p in record_files]
    return store, trace(store, outputs)


def _missing(path: str | Path) -> ProvenanceError:
    """The error for a path that does not exist: a typo, or a result removed since its record."""
    try:
        results, target = layout.locate(path)
    except ProvenanceError:
        return ProvenanceError(f"{path}: no such file")
    found = RecordStore(results).find(target)
    if found is None:
        return ProvenanceError(f"{path}: no such file")
    record_file, record = found
    return ProvenanceError(
        f"{path}: no such file; its record ({record_file}) says rule {record['rule']} wrote it "
        f"at {record.get('finished')}, so it was removed since: rerun snakemake to rebuild it"
    )


def trace_file(path: str | Path) -> Lineage:
    """The lineage of one result file; a clear error when it is missing or has no record."""
    if not Path(path).exists():
        raise _missing(path)
    results, target = layout.locate(path)
    store = RecordStore(results)
    if not store.is_result(target):
        raise ProvenanceError(f"{path} is not a result file under {results}")
    lineage = trace(store, [target])
    if target in lineage.unrecorded:
        raise ProvenanceError(
            f"no provenance record for {path} (looked for "
            f"{layout.record_path(results, target)}): it was not written by a pipeline rule, or "
            "before provenance was recorded; rerun snakemake to rebuild it"
        )
    return lineage
