"""Where records live: ``results/provenance/<output path relative to results/>.json``.

One record per output file makes any file's record an O(1) lookup. Paths inside records are kept
as Snakemake gave them (``results/...`` relative to the working directory); a relative path is
resolved against the project folder, the parent of the ``results`` folder that holds the record,
so a copied work folder can still be audited.
"""

from __future__ import annotations

import os
from pathlib import Path

from abmseg.provenance.errors import ProvenanceError

RESULTS = "results"
RECORDS = "provenance"
SUFFIX = ".json"
# The workflow's own bookkeeping in the working directory (series state files): rule inputs that
# stand for data recorded elsewhere, so records leave them out.
BOOKKEEPING = ".abmseg"


def is_bookkeeping(path: str | Path) -> bool:
    """A path inside the working directory's bookkeeping folder, as a rule names it."""
    return Path(path).parts[:1] == (BOOKKEEPING,)


def absolute(path: str | Path, base: Path | None = None) -> Path:
    """``path`` made absolute against ``base`` (default: cwd), '..' collapsed, links kept."""
    path = Path(path)
    if not path.is_absolute():
        path = (base or Path.cwd()) / path
    return Path(os.path.abspath(path))


def _is_within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def results_dir_of_output(path: str | Path, cwd: Path | None = None) -> Path | None:
    """The results/ folder of an output as a rule names it, or None when it is not in one."""
    relative = Path(path)
    if not relative.is_absolute() and relative.parts[:1] == (RESULTS,) and len(relative.parts) > 1:
        return absolute(RESULTS, cwd)
    return next((p for p in absolute(path, cwd).parents if p.name == RESULTS), None)


def record_path(results: Path, output: str | Path, cwd: Path | None = None) -> Path:
    """The record of ``output`` (a path the rule used) inside ``results``."""
    rel = absolute(output, cwd).relative_to(absolute(results))
    return results / RECORDS / f"{rel.as_posix()}{SUFFIX}"


def records_dir(results: Path) -> Path:
    return results / RECORDS


def is_record_file(path: Path) -> bool:
    """A JSON file inside some results/provenance/ folder."""
    return path.name.endswith(SUFFIX) and any(
        p.name == RECORDS and p.parent.name == RESULTS for p in path.parents
    )


def output_of_record(record: Path) -> tuple[Path, Path]:
    """(results folder, output file) that a record file describes."""
    record = absolute(record)
    folder = next(p for p in record.parents if p.name == RECORDS and p.parent.name == RESULTS)
    rel = record.relative_to(folder).as_posix()[: -len(SUFFIX)]
    return folder.parent, folder.parent / rel


def locate(path: str | Path) -> tuple[Path, Path]:
    """(results folder, absolute path) for a file or folder a user names on the command line.

    The nearest ``results`` ancestor that holds this file's record wins (a wildcard value may also
    be called 'results'); a record file itself stands for the output it describes.
    """
    target = absolute(path)
    if is_record_file(target):
        return output_of_record(target)
    candidates = [p for p in [target, *target.parents] if p.name == RESULTS]
    for results in candidates:
        if target != results and record_path(results, target).is_file():
            return results, target
    for results in candidates:
        if records_dir(results).is_dir():
            return results, target
    if candidates:
        return candidates[0], target
    raise ProvenanceError(
        f"{path} is not inside a results/ folder; name a file the pipeline wrote under results/"
    )


def resolve(entry_path: str, project: Path) -> Path:
    """A path from a record, absolute: relative ones against the project folder."""
    return absolute(entry_path, project)


def result_relative(path: Path, results: Path) -> Path | None:
    """``path`` relative to ``results`` when it is a pipeline result (not a record), else None."""
    if not _is_within(path, results) or path == results:
        return None
    rel = path.relative_to(results)
    return None if rel.parts[:1] == (RECORDS,) else rel
