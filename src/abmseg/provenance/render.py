"""The lineage of one result as a readable tree, from the result down to the raw DICOM files.

A job already shown is referred to, not repeated (every test patient's inference shares the one
training job); many raw files in one folder (a DICOM series) are shown as one line.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from abmseg.provenance.lineage import Lineage

SHORT = 12
COLLAPSE = 3  # raw files of one folder shown as one line from this many on


def short(sha: str | None) -> str:
    return sha[:SHORT] if sha else "(missing)"


def _job_header(record: dict[str, Any]) -> str:
    wildcards = " ".join(f"{k}={v}" for k, v in record["wildcards"].items())
    code = record.get("code") or {}
    commit = (code.get("commit") or "no-git")[:10] + ("+dirty" if code.get("dirty") else "")
    name = f"rule {record['rule']} {wildcards}".strip()
    return f"{name}  [{record.get('finished')}, {commit}]"


class _Printer:
    def __init__(self, lineage: Lineage) -> None:
        self.lineage = lineage
        self.shown: set[str] = set()
        self.lines: list[str] = []

    def file(self, path: Path, label: str, sha: str | None, prefix: str, last: bool) -> None:
        line = f"{prefix}{'└── ' if last else '├── '}{label}  {short(sha)}"
        key = self.lineage.producer.get(path)
        if key is None:
            self.lines.append(f"{line}  (no provenance record)")
        elif key in self.shown:
            self.lines.append(f"{line}  <- {self.lineage.jobs[key].label} (shown above)")
        else:
            self.lines.append(line)
            self.job(key, prefix + ("    " if last else "│   "))

    def job(self, key: str, prefix: str) -> None:
        job = self.lineage.jobs[key]
        header = _job_header(job.record)
        self.shown.add(key)
        self.lines.append(f"{prefix}└── {header}")
        self.inputs(job.record.get("inputs", []), prefix + "    ")

    def inputs(self, entries: list[dict[str, Any]], prefix: str) -> None:
        store = self.lineage.store
        groups: dict[Path, list[dict[str, Any]]] = defaultdict(list)
        for entry in entries:
            path = store.resolve(entry["path"])
            if not store.is_result(path):
                groups[path.parent].append(entry)
        items: list[tuple[str, Any]] = []
        for entry in entries:
            path = store.resolve(entry["path"])
            if store.is_result(path):
                items.append(("result", (path, entry)))
            elif len(groups[path.parent]) < COLLAPSE:
                items.append(("raw", entry))
            elif groups[path.parent][0] is entry:
                items.append(("series", path.parent))
        for index, (kind, item) in enumerate(items):
            last = index == len(items) - 1
            lead = prefix + ("└── " if last else "├── ")
            if kind == "result":
                self.file(item[0], item[1]["path"], item[1].get("sha256"), prefix, last)
            elif kind == "raw":
                self.lines.append(f"{lead}[raw] {item['path']}  {short(item.get('sha256'))}")
            else:
                self.series(groups[item], item, lead)

    def series(self, entries: list[dict[str, Any]], folder: Path, lead: str) -> None:
        names = sorted(Path(e["path"]).name for e in entries)
        size = sum(e.get("size") or 0 for e in entries)
        self.lines.append(
            f"{lead}[raw] {folder}/  {len(entries)} files, {size / 1e6:.1f} MB "
            f"({names[0]} ... {names[-1]})"
        )


def render_tree(lineage: Lineage) -> str:
    """Text tree of each target's lineage, ending at its raw files."""
    printer = _Printer(lineage)
    for target in lineage.targets:
        key = lineage.producer[target]
        outputs = lineage.jobs[key].record["outputs"]
        matching = [o for o in outputs if lineage.store.resolve(o["path"]) == target]
        entry = matching[0] if matching else {"path": str(target), "sha256": None}
        printer.lines.append(f"{entry['path']}  {short(entry.get('sha256'))}")
        printer.job(key, "")
    raw = len(lineage.raw)
    printer.lines.append(f"{len(lineage.jobs)} jobs, {raw} raw input files")
    return "\n".join(printer.lines)
