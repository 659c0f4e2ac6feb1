"""Time to build the Workflow Run RO-Crate of a run (issue 19).

1. A finished run (``--work``, e.g. the demo's repository root): ``export_crate`` to a folder
   (results hard-linked and re-hashed) and to a zip (results copied), with the code that ran
   (``--workflow``, default: this checkout).
2. A 253-patient run made of that run's records: every patient-level record is copied once per
   made-up patient (its patient ID replaced in paths and wildcards, so file names and the job
   graph scale as a real cohort's would); run-level records (split, training, aggregate) stay
   single. Only the metadata is built here (records -> graph -> JSON), since those result files
   do not exist: this is the part that grows with the cohort beside the copying.

Usage: python bench/crate_build.py --work . [--workflow DIR] [--patients 253]
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import shutil
import tempfile
import time
from pathlib import Path

from abmseg.provenance import layout
from abmseg.provenance.crate import export_crate, workflow_files
from abmseg.provenance.crate_graph import build_graph, metadata_document
from abmseg.provenance.environment import repository_root
from abmseg.provenance.lineage import trace_run


def _timed(label: str, action):
    start = time.perf_counter()
    value = action()
    print(f"{label}: {time.perf_counter() - start:.2f} s")
    return value


def scaled_records(work: Path, target: Path, patients: int) -> int:
    """Copy ``work``'s records into ``target``, patient-level ones once per made-up patient."""
    records = layout.records_dir(work / "results")
    written = 0
    for record_file in sorted(records.rglob("*.json")):
        text = record_file.read_text()
        record = json.loads(text)
        patient = (record.get("wildcards") or {}).get("patient")
        rel = record_file.relative_to(records).as_posix()
        copies = (
            [
                (f"P{i:04d}", re.sub(rf"\b{re.escape(patient)}\b", f"P{i:04d}", text))
                for i in range(patients)
            ]
            if patient
            else [(None, text)]
        )
        for new_id, body in copies:
            name = re.sub(rf"\b{re.escape(patient)}\b", new_id, rel) if patient else rel
            out = target / "results" / "provenance" / name
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(body)
            written += 1
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("."), help="folder holding results/")
    parser.add_argument("--workflow", type=Path, default=None)
    parser.add_argument("--patients", type=int, default=253)
    args = parser.parse_args()
    workflow = args.workflow or repository_root()
    print(f"{platform.node()} {platform.processor() or platform.machine()}")
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        tmp = Path(tmp)
        for suffix in ("", ".zip"):
            summary = _timed(
                f"demo run -> crate{suffix or ' folder'}",
                lambda s=suffix: export_crate(
                    args.work / "results", tmp / f"crate{s}", workflow=workflow
                ),
            )
        print(
            f"  {summary.jobs} jobs, {summary.results} results "
            f"({summary.payload_bytes / 2**20:.0f} MiB), {summary.raw_inputs} raw inputs"
        )
        zipped = (tmp / "crate.zip").stat().st_size
        print(f"  zip {zipped / 2**20:.0f} MiB")
        scaled = tmp / "scaled"
        count = _timed(
            f"write {args.patients}-patient records",
            lambda: scaled_records(args.work, scaled, args.patients),
        )
        store, lineage = _timed("read records and trace", lambda: trace_run(scaled / "results"))
        jobs = list(lineage.jobs.values())
        files = workflow_files(workflow)
        graph = _timed(
            "build graph", lambda: build_graph(jobs, store, files, name="bench", agent=None)
        )
        text = _timed("serialise JSON", lambda: json.dumps(metadata_document(graph), indent=1))
        print(
            f"  {count} records, {len(jobs)} jobs, {len(graph.entities)} entities, "
            f"{len(graph.files)} files, metadata {len(text) / 2**20:.1f} MiB"
        )
        shutil.rmtree(scaled)


if __name__ == "__main__":
    main()
