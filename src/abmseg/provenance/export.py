"""The run as W3C PROV-JSON: files are entities, jobs are activities, abmseg is the agent.

An entity is one version of a file (path + SHA-256), so a result rebuilt from changed input is a
new entity. The document is read back with the prov library and must equal what was written.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from pathlib import Path
from typing import Any

from prov.model import PROV, ProvDocument

from abmseg.atomic import write_atomic
from abmseg.provenance.errors import ProvenanceError
from abmseg.provenance.lineage import Lineage, trace_run

NAMESPACE = ("abmseg", "urn:abmseg:")


def _local(kind: str, *parts: str) -> str:
    """A valid QName local part: paths and wildcards hashed, never pasted in."""
    return f"abmseg:{kind}_{hashlib.sha256(chr(0).join(parts).encode()).hexdigest()[:24]}"


def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _file_entity(document: ProvDocument, entry: dict[str, Any]) -> str:
    identifier = _local("file", entry["path"], entry.get("sha256") or "missing")
    if document.get_record(identifier):
        return identifier
    attributes = {"abmseg:path": entry["path"]}
    if entry.get("sha256"):
        attributes["abmseg:sha256"] = entry["sha256"]
    if entry.get("size") is not None:
        attributes["abmseg:size"] = int(entry["size"])
    document.entity(identifier, attributes)
    return identifier


def _agent(document: ProvDocument, record: dict[str, Any]) -> str:
    code = record.get("code") or {}
    software = record.get("software") or {}
    identifier = _local("abmseg", str(code.get("commit")), str(code.get("source_sha256")))
    if not document.get_record(identifier):
        attributes: dict[str, Any] = {
            "prov:type": PROV["SoftwareAgent"],
            "prov:label": "abmseg",
            "abmseg:dirty": bool(code.get("dirty")),
        }
        for key, value in (
            ("abmseg:version", software.get("abmseg")),
            ("abmseg:commit", code.get("commit")),
            ("abmseg:source_sha256", code.get("source_sha256")),
        ):
            if value:
                attributes[key] = str(value)
        document.agent(identifier, attributes)
    return identifier


def build_document(lineage: Lineage) -> ProvDocument:
    """One activity per job, used/wasGeneratedBy per file, wasAssociatedWith the code version."""
    document = ProvDocument()
    document.add_namespace(*NAMESPACE)
    for job in lineage.jobs.values():
        record = job.record
        activity = document.activity(
            _local("job", job.key),
            _time(record.get("started")),
            _time(record.get("finished")),
            {
                "prov:label": job.label,
                "abmseg:rule": record["rule"],
                "abmseg:wildcards": json.dumps(record["wildcards"], sort_keys=True),
                "abmseg:hostname": str((record.get("host") or {}).get("hostname")),
            },
        )
        for entry in record.get("inputs", []):
            document.used(activity, _file_entity(document, entry))
        for entry in record.get("outputs", []):
            document.wasGeneratedBy(_file_entity(document, entry), activity)
        document.wasAssociatedWith(activity, _agent(document, record))
    return document


def export_prov(results: str | Path, target: str | Path) -> ProvDocument:
    """Write the PROV-JSON of every job recorded under ``results``; verify it on read-back."""
    document = build_document(trace_run(results)[1])
    text = document.serialize(format="json", indent=2)
    write_atomic(target, lambda tmp: tmp.write_text(text))
    back = ProvDocument.deserialize(source=str(target), format="json")
    if back != document:
        raise ProvenanceError(f"{target}: PROV-JSON read back differs from the document written")
    return document
