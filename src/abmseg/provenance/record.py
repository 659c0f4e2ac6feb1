"""Build, write and read job records: one JSON per output file, each holding the whole job.

A record says which rule made the file, from which inputs (path, size, SHA-256), with which
params, config values, seed, code, packages and host, and when. It holds no DICOM header value and
no user name: only paths, pseudonymous patient IDs (wildcards) and digests.
"""

from __future__ import annotations

import glob
import json
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from abmseg.atomic import write_json
from abmseg.provenance import environment, jobview, layout
from abmseg.provenance.errors import ProvenanceError
from abmseg.provenance.hashing import digest

SCHEMA = 1
SCHEMA_KEY = "abmseg_provenance"
# Extra files a job writes or reads besides the declared ones: glob pattern(s) or a callable.
FileSource = str | Sequence[str] | Callable[[], Iterable[str | Path]] | None
logger = logging.getLogger(__name__)


def now() -> str:
    """ISO 8601 UTC time, milliseconds."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _patterns(source: FileSource) -> list[str]:
    if isinstance(source, str):
        return [source]
    return [] if source is None or callable(source) else list(source)


def expand_files(source: FileSource) -> list[str]:
    """The files glob pattern(s) (recursive '**' allowed) or a callable name; sorted, files only."""
    if callable(source):
        names: Iterable[str | Path] = source()
    else:
        names = [n for pattern in _patterns(source) for n in glob.glob(pattern, recursive=True)]
    return sorted({str(p) for p in names if Path(p).is_file()})


def build_record(
    job: dict[str, Any],
    inputs: Sequence[dict[str, Any]],
    outputs: Sequence[dict[str, Any]],
    started: str,
    finished: str,
) -> dict[str, Any]:
    """The record of a finished job (``job`` as ``jobview.describe`` gives it)."""
    return {
        SCHEMA_KEY: SCHEMA,
        "rule": job["rule"],
        "wildcards": job["wildcards"],
        "inputs": list(inputs),
        "outputs": list(outputs),
        "logs": job["logs"],
        "params": job["params"],
        "config": job["config"],
        "seed": job["seed"],
        "code": environment.code_version(),
        "software": environment.software_versions(),
        "host": environment.host_info(),
        "started": started,
        "finished": finished,
    }


def write_records(record: dict[str, Any], cwd: Path | None = None) -> list[Path]:
    """Write the job's record once per output under that output's results/provenance/."""
    written = []
    for output in record["outputs"]:
        results = layout.results_dir_of_output(output["path"], cwd)
        if results is None:
            logger.warning(
                "%s is not under a results/ folder: no provenance record", output["path"]
            )
            continue
        target = layout.record_path(results, output["path"], cwd)
        write_json(target, {**record, "target": output["path"]})
        written.append(target)
    return written


def remove_records(paths: Iterable[str], cwd: Path | None = None) -> None:
    """Drop the records of files a job is about to rewrite (Snakemake removed the files already):
    a failed job must not leave an old record that looks like it describes the new file."""
    for path in paths:
        results = layout.results_dir_of_output(path, cwd)
        if results is not None:
            layout.record_path(results, path, cwd).unlink(missing_ok=True)


def _record_glob(pattern: str, cwd: Path | None) -> list[str]:
    """Record files of every output an extra-output glob could have matched before."""
    results = layout.results_dir_of_output(pattern, cwd)
    if results is None:
        return []
    if pattern.endswith("/**"):  # a whole folder: every record below its mirror
        folder = layout.record_path(results, pattern[: -len("/**")], cwd).with_suffix("")
        return glob.glob(f"{folder}/**/*{layout.SUFFIX}", recursive=True)
    return glob.glob(str(layout.record_path(results, pattern, cwd)), recursive=True)


def load_record(path: Path) -> dict[str, Any]:
    """A record file's content; a clear error when it is unreadable or not a record."""
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ProvenanceError(
            f"provenance record {path} is unreadable ({error}); rerun snakemake to rewrite it"
        ) from None
    if not isinstance(record, dict) or record.get(SCHEMA_KEY) != SCHEMA:
        raise ProvenanceError(
            f"{path} is not an abmseg provenance record (schema {SCHEMA}); "
            "rerun snakemake to rewrite it"
        )
    return record


def recorded_inputs(
    output: str | Path, cwd: Path | None = None
) -> tuple[dict[str, str], float] | None:
    """What the job that wrote ``output`` read: ({absolute input path: sha256}, the job's start as a
    POSIX time), or None when ``output`` has no readable record."""
    results = layout.results_dir_of_output(output, cwd)
    if results is None:
        return None
    try:
        record = load_record(layout.record_path(results, output, cwd))
    except ProvenanceError:
        return None
    base = results.parent
    hashes = {
        str(layout.absolute(entry["path"], base)): entry["sha256"]
        for entry in record["inputs"]
        if entry.get("sha256")
    }
    return hashes, datetime.fromisoformat(record["started"]).timestamp()


def project_relative(path: str, cwd: Path | None = None) -> str:
    """An input path as the record keeps it: relative when it lies inside the project (the
    working directory that holds results/), so a copied work folder is audited against its own
    copies of raw data kept inside it; absolute otherwise (``abmseg audit --raw-root`` moves it)."""
    project = layout.absolute(cwd or Path.cwd())
    absolute = layout.absolute(path, project)
    if Path(path).is_absolute() and project in absolute.parents:
        return absolute.relative_to(project).as_posix()
    return path


def _input_digest(path: str) -> dict[str, Any]:
    """Digest of an input; one that is absent (the step will say why) is recorded as missing."""
    if not Path(path).exists():
        logger.warning("input %s is missing", path)
        return {"path": path, "size": None, "sha256": None}
    return digest(path)


class JobRecorder:
    """Records one rule job: hashes its inputs when it starts, its outputs when it succeeds."""

    def __init__(
        self,
        job: Any,
        config_keys: Iterable[str] = (),
        extra_outputs: FileSource = None,
        extra_inputs: FileSource = None,
    ) -> None:
        self.view = jobview.describe(job, config_keys)
        self.extra_outputs = extra_outputs
        self.extra_inputs = extra_inputs
        self.started = now()
        self.seconds = 0.0
        self.hashed_bytes = 0

    def start(self) -> None:
        """Forget the old records of this job's outputs, then hash what it is about to read."""
        begin = time.perf_counter()
        remove_records(self.view["outputs"])
        for pattern in _patterns(self.extra_outputs):
            for stale in _record_glob(pattern, None):
                Path(stale).unlink(missing_ok=True)
        declared = [p for p in self.view["inputs"] if not layout.is_bookkeeping(p)]
        names = declared + [p for p in expand_files(self.extra_inputs) if p not in declared]
        digests = map(_input_digest, names)
        self.inputs = [{**entry, "path": project_relative(entry["path"])} for entry in digests]
        self.hashed_bytes += sum(entry["size"] or 0 for entry in self.inputs)
        self.seconds += time.perf_counter() - begin

    def finish(self) -> list[Path]:
        """Hash the outputs (declared, then extra) and write one record per output."""
        begin = time.perf_counter()
        finished = now()
        declared = self.view["outputs"]
        names = declared + [p for p in expand_files(self.extra_outputs) if p not in declared]
        missing = [p for p in names if not Path(p).exists()]
        for path in missing:  # Snakemake reports a missing declared output itself
            logger.warning("output %s is missing: no provenance record for it", path)
        outputs = [digest(p) for p in names if p not in missing]
        self.hashed_bytes += sum(entry["size"] for entry in outputs)
        record = build_record(self.view, self.inputs, outputs, self.started, finished)
        written = write_records(record)
        self.seconds += time.perf_counter() - begin
        return written
