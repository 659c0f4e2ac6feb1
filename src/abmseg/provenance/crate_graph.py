"""A finished run's provenance records as a Workflow Run RO-Crate (Provenance Run Crate 0.5).

Built from the per-file records the rules already write, no other bookkeeping:

- the workflow (``workflow/Snakefile``) is the crate's mainEntity, a ComputationalWorkflow whose
  ``step`` lists one HowToStep per rule and whose ``hasPart`` lists each rule as a tool
  (SoftwareApplication) with FormalParameters for its file patterns and parameters;
- each job is a CreateAction (instrument: its rule's tool; object: input files and parameter
  values; result: output files) with a ControlAction tying it to its step;
- the run is a CreateAction with the workflow as instrument, and an OrganizeAction (instrument:
  Snakemake) gathers the ControlActions with the run as result;
- files are File entities with ``sha256`` and ``contentSize`` as recorded; results are relative
  paths inside the crate, anything else (raw DICOM, labels, the sheet, model presets) stays
  outside it as a ``file://`` URI: no raw patient file is copied into a crate.

Profiles: https://w3id.org/ro/wfrun/provenance/0.5 (Leo et al., "Recording provenance of
workflow runs with RO-Crate", PLoS ONE 2024) on RO-Crate 1.1.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from abmseg.provenance.lineage import Job, RecordStore

RO_CRATE = "https://w3id.org/ro/crate/1.1"
# The 1.1 context lacks a checksum term; Workflow Run RO-Crate defines sha256 for this.
CONTEXT = [f"{RO_CRATE}/context", {"sha256": "https://w3id.org/ro/terms/workflow-run#sha256"}]
PROFILES = {
    "https://w3id.org/ro/wfrun/process/0.5": ("Process Run Crate", "0.5"),
    "https://w3id.org/ro/wfrun/workflow/0.5": ("Workflow Run Crate", "0.5"),
    "https://w3id.org/ro/wfrun/provenance/0.5": ("Provenance Run Crate", "0.5"),
    "https://w3id.org/workflowhub/workflow-ro-crate/1.0": ("Workflow RO-Crate", "1.0"),
}
SNAKEMAKE_LANGUAGE = "https://w3id.org/workflowhub/workflow-ro-crate#snakemake"
SNAKEMAKE_URL = "https://snakemake.readthedocs.io"
MAIN_WORKFLOW = "workflow/Snakefile"
METADATA = "ro-crate-metadata.json"
COMPLETED = "http://schema.org/CompletedActionStatus"


# Media types by file ending (NIfTI and model weights have none registered: gzip / bytes).
MEDIA_TYPES = {
    ".nii.gz": "application/gzip",
    ".json": "application/json",
    ".tsv": "text/tab-separated-values",
    ".csv": "text/csv",
    ".md": "text/markdown",
    ".png": "image/png",
    ".dcm": "application/dicom",
    ".py": "text/x-python",
    ".yaml": "application/yaml",
    ".rst": "text/x-rst",
    ".toml": "application/toml",
}


def encoding_format(name: str) -> str:
    """The media type of a file name; application/octet-stream when none is known."""
    for ending, media_type in MEDIA_TYPES.items():
        if name.endswith(ending):
            return media_type
    return (
        "text/plain" if name.endswith((".smk", "Snakefile", ".log")) else "application/octet-stream"
    )


def _id(kind: str, *parts: str) -> str:
    """A stable local identifier: the parts hashed, never pasted into the id."""
    return f"#{kind}-{hashlib.sha256(chr(0).join(parts).encode()).hexdigest()[:20]}"


# RFC 3986: fragment = *( pchar / "/" / "?" ), pchar = unreserved / pct-encoded / sub-delims /
# ":" / "@". quote() keeps the unreserved set itself; everything else is percent-encoded.
FRAGMENT_SAFE = "!$&'()*+,;=:@/?"


def person_agent(name: str, identifier: str | None = None) -> dict[str, str]:
    """The person who ran the workflow (``--agent``): ``identifier`` (e.g. an ORCID URL) or a
    local id from the name, percent-encoded so that "Jane Doe" still gives a valid URI
    reference (a JSON-LD @id must be one)."""
    return {"name": name, "id": identifier or f"#agent-{quote(name, safe=FRAGMENT_SAFE)}"}


def _ref(identifier: str) -> dict[str, str]:
    return {"@id": identifier}


def _refs(identifiers: Iterable[str]) -> list[dict[str, str]]:
    return [_ref(i) for i in dict.fromkeys(identifiers)]


def flatten_params(params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested rule params as dotted leaves (``config.qa.hu_tolerance``)."""
    flat: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten_params(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def _value(value: Any) -> str | int | float | bool:
    """A PropertyValue's value: scalars as they are, anything else as JSON text."""
    if isinstance(value, bool | int | float | str):
        return value
    return json.dumps(value, sort_keys=True)


def _data_type(value: Any) -> str:
    if isinstance(value, bool):
        return "Boolean"
    if isinstance(value, int):
        return "Integer"
    if isinstance(value, float):
        return "Float"
    return "Text"


def path_pattern(path: str, wildcards: Mapping[str, str]) -> str:
    """A job's file path as its rule's pattern: wildcard values put back as ``{name}``."""
    parts = Path(path).parts
    values = {str(v): k for k, v in wildcards.items()}
    return "/".join(f"{{{values[p]}}}" if p in values else p for p in parts).replace("//", "/")


def raw_pattern(path: str, wildcards: Mapping[str, str]) -> str:
    """A raw input's pattern: files of a folder (a DICOM series) share one, by suffix."""
    pattern = path_pattern(path, wildcards)
    folder, _, name = pattern.rpartition("/")
    suffix = "".join(Path(name).suffixes)
    return f"{folder}/*{suffix}" if suffix in {".dcm", ""} else pattern


@dataclass
class CrateFile:
    """A file the crate describes: in the payload (a result) or outside it (a raw input)."""

    identifier: str
    path: Path
    sha256: str | None
    size: int | None
    in_payload: bool
    example_of: set[str] = field(default_factory=set)


@dataclass
class RunGraph:
    """The entities of the crate, keyed by @id, and the files to put in its payload."""

    entities: dict[str, dict[str, Any]] = field(default_factory=dict)
    files: dict[str, CrateFile] = field(default_factory=dict)

    def add(self, entity: dict[str, Any]) -> str:
        self.entities.setdefault(entity["@id"], entity)
        return entity["@id"]


def _file(graph: RunGraph, entry: Mapping[str, Any], store: RecordStore) -> CrateFile:
    """The File of a record entry: results go in the payload, anything else stays outside."""
    path = store.resolve(entry["path"])
    in_payload = store.is_result(path)
    # a result by its place in the crate; a raw input by its absolute file:// URI
    relative = quote(path.relative_to(store.project).as_posix()) if in_payload else None
    identifier = relative or path.as_uri()
    known = graph.files.get(identifier)
    if known is None:
        known = graph.files[identifier] = CrateFile(
            identifier, path, entry.get("sha256"), entry.get("size"), in_payload
        )
    return known


def _tool(graph: RunGraph, rule: str) -> dict[str, Any]:
    identifier = f"#rule-{rule}"
    if identifier not in graph.entities:
        graph.add(
            {
                "@id": identifier,
                "@type": "SoftwareApplication",
                "name": f"rule {rule}",
                "description": f"Snakemake rule {rule} of the abmseg workflow (scripts/{rule}.py)",
                "input": [],
                "output": [],
            }
        )
    return graph.entities[identifier]


def _formal(graph: RunGraph, tool: dict[str, Any], side: str, name: str, kind: str) -> str:
    """A FormalParameter of a tool (created once), listed in its input or output."""
    identifier = _id("param", tool["@id"], side, name)
    if identifier not in graph.entities:
        graph.add(
            {
                "@id": identifier,
                "@type": "FormalParameter",
                "additionalType": kind,
                "name": name,
                "conformsTo": _ref("https://bioschemas.org/profiles/FormalParameter/1.0-RELEASE"),
            }
        )
        tool[side].append(_ref(identifier))
    return identifier


def _property_value(graph: RunGraph, formal: str, name: str, value: Any) -> str:
    rendered = _value(value)
    identifier = _id("pv", formal, json.dumps(rendered))
    graph.add(
        {
            "@id": identifier,
            "@type": "PropertyValue",
            "name": name,
            "value": rendered,
            "exampleOfWork": _ref(formal),
        }
    )
    return identifier


def _job_action(
    graph: RunGraph, job: Job, store: RecordStore
) -> tuple[str, str, list[str], list[str]]:
    """The job's CreateAction and its ControlAction: (action id, control id, input ids, output
    ids)."""
    record = job.record
    rule, wildcards = record["rule"], record.get("wildcards") or {}
    tool = _tool(graph, rule)
    inputs: list[str] = []
    for entry in record.get("inputs", []):
        crate_file = _file(graph, entry, store)
        pattern = (path_pattern if crate_file.in_payload else raw_pattern)(entry["path"], wildcards)
        crate_file.example_of.add(_formal(graph, tool, "input", pattern, "File"))
        inputs.append(crate_file.identifier)
    objects = list(inputs)
    for name, value in flatten_params(record.get("params") or {}).items():
        formal = _formal(graph, tool, "input", f"params.{name}", _data_type(value))
        objects.append(_property_value(graph, formal, f"params.{name}", value))
    results: list[str] = []
    for entry in record.get("outputs", []):
        crate_file = _file(graph, entry, store)
        pattern = path_pattern(entry["path"], wildcards)
        crate_file.example_of.add(_formal(graph, tool, "output", pattern, "File"))
        results.append(crate_file.identifier)
    label = " ".join([rule, *(f"{k}={v}" for k, v in wildcards.items())])
    code = record.get("code") or {}
    action = graph.add(
        {
            "@id": _id("job", job.key),
            "@type": "CreateAction",
            "name": f"job {label}",
            "description": f"Snakemake job of rule {rule}"
            + (f" ({', '.join(f'{k}={v}' for k, v in wildcards.items())})" if wildcards else ""),
            "instrument": _ref(tool["@id"]),
            "object": _refs(objects),
            "result": _refs(results),
            "startTime": record.get("started"),
            "endTime": record.get("finished"),
            "actionStatus": _ref(COMPLETED),
            "identifier": f"abmseg source {code.get('source_sha256')}",
        }
    )
    control = graph.add(
        {
            "@id": _id("control", job.key),
            "@type": "ControlAction",
            "name": f"orchestrate {label}",
            "instrument": _ref(f"#step-{rule}"),
            "object": _ref(action),
        }
    )
    return action, control, inputs, results


def _software_id(name: str, version: str) -> str:
    """A package version's URI (PyPI release page; python.org for the interpreter)."""
    if name == "python":
        return f"https://www.python.org/downloads/release/python-{version.replace('.', '')}/"
    return f"https://pypi.org/project/{name}/{version}/"


def _software(graph: RunGraph, jobs: list[Job]) -> dict[str, str]:
    """SoftwareApplication entities for every package version the jobs recorded: {id: name}."""
    found: dict[str, str] = {}
    for job in jobs:
        for name, version in sorted((job.record.get("software") or {}).items()):
            if version:
                identifier = _software_id(name, str(version))
                graph.add(
                    {
                        "@id": identifier,
                        "@type": "SoftwareApplication",
                        "name": name,
                        "version": version,
                    }
                )
                found[identifier] = name
    return found


def build_graph(
    jobs: list[Job],
    store: RecordStore,
    workflow_files: list[str],
    *,
    name: str,
    agent: Mapping[str, str] | None = None,
    license_id: str = "https://spdx.org/licenses/MIT",
) -> RunGraph:
    """Every entity of the crate for ``jobs`` (records of one finished run)."""
    graph = RunGraph()
    jobs = sorted(jobs, key=lambda j: (j.record.get("started") or "", j.key))
    actions: list[str] = []
    controls: list[str] = []
    produced: set[str] = set()
    consumed: set[str] = set()
    for job in jobs:
        action, control, inputs, results = _job_action(graph, job, store)
        actions.append(action)
        controls.append(control)
        consumed.update(inputs)
        produced.update(results)
    rules = list(dict.fromkeys(job.record["rule"] for job in jobs))
    for position, rule in enumerate(rules, start=1):
        graph.add(
            {
                "@id": f"#step-{rule}",
                "@type": "HowToStep",
                "name": f"rule {rule}",
                "position": position,
                "workExample": _ref(f"#rule-{rule}"),
            }
        )
    software = _software(graph, jobs)
    versions = {name: graph.entities[i]["version"] for i, name in software.items()}
    snakemake_version = versions.get("snakemake")
    raw_inputs = [i for i, f in graph.files.items() if not f.in_payload]
    final_results = [i for i in produced if i not in consumed]
    workflow_inputs = sorted({p for i in raw_inputs for p in graph.files[i].example_of})
    workflow_outputs = sorted({p for i in final_results for p in graph.files[i].example_of})
    graph.add(
        {
            "@id": MAIN_WORKFLOW,
            "@type": ["File", "SoftwareSourceCode", "ComputationalWorkflow", "HowTo"],
            "name": "abmseg",
            "description": "Snakemake workflow for pelvic active bone marrow segmentation on CT",
            "programmingLanguage": _ref(SNAKEMAKE_LANGUAGE),
            "version": versions.get("abmseg"),
            "hasPart": _refs(f"#rule-{rule}" for rule in rules),
            "step": _refs(f"#step-{rule}" for rule in rules),
            "input": _refs(workflow_inputs),
            "output": _refs(workflow_outputs),
            "softwareRequirements": _refs(software),
        }
    )
    graph.add(
        {
            "@id": SNAKEMAKE_LANGUAGE,
            "@type": "ComputerLanguage",
            "name": "Snakemake",
            "identifier": _ref(SNAKEMAKE_URL),
            "url": _ref(SNAKEMAKE_URL),
            "version": snakemake_version,
        }
    )
    engine = graph.add(  # the same entity as snakemake's in softwareRequirements
        {
            "@id": _software_id("snakemake", str(snakemake_version)),
            "@type": "SoftwareApplication",
            "name": "snakemake",
            "version": snakemake_version,
            "url": _ref(SNAKEMAKE_URL),
        }
    )
    started = [j.record["started"] for j in jobs if j.record.get("started")]
    finished = [j.record["finished"] for j in jobs if j.record.get("finished")]
    agent_ref = None
    if agent:
        agent_ref = graph.add({"@id": agent["id"], "@type": "Person", "name": agent["name"]})
    run = graph.add(
        {
            "@id": "#run",
            "@type": "CreateAction",
            "name": f"run of abmseg: {name}",
            "description": f"{len(jobs)} Snakemake jobs of {len(rules)} rules",
            "instrument": _ref(MAIN_WORKFLOW),
            "object": _refs(raw_inputs),
            "result": _refs(sorted(final_results)),
            "startTime": min(started) if started else None,
            "endTime": max(finished) if finished else None,
            "actionStatus": _ref(COMPLETED),
        }
    )
    graph.add(
        {
            "@id": "#engine-run",
            "@type": "OrganizeAction",
            "name": "Snakemake orchestration of the run",
            "instrument": _ref(engine),
            "object": _refs(controls),
            "result": _ref(run),
            "startTime": graph.entities[run]["startTime"],
            "endTime": graph.entities[run]["endTime"],
        }
    )
    if agent_ref:
        for entity in graph.entities.values():
            if entity["@type"] in ("CreateAction", "OrganizeAction"):
                entity["agent"] = _ref(agent_ref)
    for identifier in workflow_files:
        if identifier != MAIN_WORKFLOW:
            graph.add(
                {
                    "@id": identifier,
                    "@type": ["File", "SoftwareSourceCode"],
                    "encodingFormat": encoding_format(identifier),
                    "version": versions.get("abmseg"),
                }
            )
    for crate_file in graph.files.values():
        entity = {
            "@id": crate_file.identifier,
            "@type": "File",
            "encodingFormat": encoding_format(crate_file.path.name),
        }
        if crate_file.sha256:
            entity["sha256"] = crate_file.sha256
        if crate_file.size is not None:
            entity["contentSize"] = str(crate_file.size)
        if crate_file.example_of:
            entity["exampleOfWork"] = _refs(sorted(crate_file.example_of))
        if not crate_file.in_payload:
            entity["name"] = crate_file.path.name
        graph.add(entity)
    for uri, (profile, profile_version) in PROFILES.items():
        graph.add(
            {"@id": uri, "@type": "CreativeWork", "name": profile, "version": profile_version}
        )
    payload = [i for i, f in graph.files.items() if f.in_payload]
    graph.add(
        {
            "@id": "./",
            "@type": "Dataset",
            "name": name,
            "description": "A finished abmseg run: its results, the workflow that made them and "
            "the provenance of every job (Provenance Run Crate)",
            "license": _ref(license_id),
            "datePublished": datetime.now(UTC).isoformat(timespec="seconds"),
            "conformsTo": _refs(PROFILES),
            "mainEntity": _ref(MAIN_WORKFLOW),
            "hasPart": _refs([MAIN_WORKFLOW, *workflow_files, *sorted(payload), *raw_inputs]),
            "mentions": _refs([run, *actions]),
            "author": _ref(agent_ref) if agent_ref else None,
        }
    )
    graph.add({"@id": license_id, "@type": "CreativeWork", "name": license_id.rsplit("/", 1)[-1]})
    graph.add(
        {
            "@id": METADATA,
            "@type": "CreativeWork",
            "conformsTo": _refs([RO_CRATE, "https://w3id.org/workflowhub/workflow-ro-crate/1.0"]),
            "about": _ref("./"),
        }
    )
    return graph


def metadata_document(graph: RunGraph) -> dict[str, Any]:
    """The JSON-LD document: None-valued properties left out, one-element lists written as
    the single value (as RO-Crate 1.1 recommends)."""
    entities = [
        {
            k: v[0] if isinstance(v, list) and len(v) == 1 and k != "@type" else v
            for k, v in entity.items()
            if v is not None and v != []
        }
        for entity in graph.entities.values()
    ]
    order = {METADATA: 0, "./": 1}
    entities.sort(key=lambda e: order.get(e["@id"], 2))
    return {"@context": CONTEXT, "@graph": entities}
