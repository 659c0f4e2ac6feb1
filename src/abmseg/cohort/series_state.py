"""One small state file per DICOM series stands in for its files as a rule input.

Snakemake spends tens of microseconds of DAG building per input file (BENCHMARKS.md): with a real
cohort's 150 to 300 files per series, the file list, not the patient count, set the cost of every
`snakemake` start. The state file ``.abmseg/series/<patient>/<column>.tsv`` lists each file's name
digest, size and modification time. It is rewritten only when that listing changes, so its own
modification time moves exactly when the series does, and Snakemake's usual rules do the rest: an
edited, added or removed DICOM file reruns its patient.

A file whose bytes are unchanged but whose time moved (touched, or edited and put back) must not
rerun anything, as Snakemake's checksums of small inputs guarantee for plain file inputs. When the
listing changed, the bytes are compared with the SHA-256 the consuming job recorded in its
provenance: when every file matches, the state file takes the new listing but is dated no later
than that job's start, so Snakemake does not see an input newer than the job's outputs.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from abmseg.atomic import write_atomic
from abmseg.io.dicom_series import IGNORED_NAMES, list_dicom_files
from abmseg.provenance.hashing import sha256_file
from abmseg.provenance.layout import BOOKKEEPING
from abmseg.provenance.record import recorded_inputs

STATE_ROOT = Path(BOOKKEEPING) / "series"
HEADER = "name_sha256\tsize\tmtime_ns"
# What the consuming job read, from its provenance record: ({absolute path: sha256}, the job's
# start as a POSIX time, which precedes all its outputs), or None before it ever ran.
RecordedInputs = Callable[[], tuple[Mapping[str, str], float] | None]
Row = tuple[str, int, int]


def state_path(patient: str, column: str, root: Path = STATE_ROOT) -> Path:
    """Where the state file of a patient's series (sheet column 'ct' or 'pet') lives."""
    return root / patient / f"{column}.tsv"


def name_digest(name: str) -> str:
    """File names are often SOP Instance UIDs: the state file keeps a digest, never the name."""
    return hashlib.sha256(name.encode()).hexdigest()[:16]


def scan_series(folder: Path) -> list[tuple[Path, int, int]]:
    """(path, size, mtime in ns) of the files ``list_dicom_files`` lists, sorted the same way,
    with one ``stat`` per file (``os.scandir`` knows the file type without one)."""
    found = []
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.name.startswith(".") or entry.name in IGNORED_NAMES or not entry.is_file():
                continue
            stat = entry.stat()
            found.append((Path(entry.path), stat.st_size, stat.st_mtime_ns))
    return sorted(found)


def listing(scanned: list[tuple[Path, int, int]]) -> list[Row]:
    """(name digest, size, mtime in ns) of each scanned file."""
    return [(name_digest(path.name), size, mtime) for path, size, mtime in scanned]


def render(rows: list[Row]) -> str:
    return "\n".join([HEADER, *(f"{n}\t{s}\t{m}" for n, s, m in rows)]) + "\n"


def same_bytes_as_recorded(files: list[Path], hashes: Mapping[str, str]) -> bool:
    """Whether ``files`` are exactly the files of their folder that the consuming job read, byte
    for byte. Hashes every file: it runs only when the listing changed, for that series alone."""
    if not files:
        return False
    folder = os.path.abspath(files[0].parent)
    current = {os.path.abspath(path): path for path in files}
    recorded = {key for key in hashes if os.path.dirname(key) == folder}
    return recorded == set(current) and all(
        sha256_file(path) == hashes[key] for key, path in current.items()
    )


def refresh_series_state(
    scanned: list[tuple[Path, int, int]], state: Path, recorded: RecordedInputs
) -> Path:
    """Bring the state file of a series (``scan_series``) up to date (see the module docstring).

    Reads only the file metadata and one small file when nothing changed.
    """
    text = render(listing(scanned))
    files = [path for path, _, _ in scanned]
    old = state.read_text() if state.is_file() else None
    if text == old:
        return state
    # No state file yet but a record: a run finished before state files existed (or its
    # .abmseg/ was deleted); the same check then keeps its results.
    found = recorded()
    unchanged = found is not None and same_bytes_as_recorded(files, found[0])
    previous_mtime = state.stat().st_mtime if old is not None else None
    state.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(state, lambda tmp: tmp.write_text(text))
    if unchanged:
        stamp = min(t for t in (previous_mtime, found[1]) if t is not None)
        os.utime(state, (stamp, stamp))
    return state


def series_input(folder: str | Path, patient: str, column: str, consumers: Sequence[str]) -> str:
    """The rule input for a patient's series: its state file, kept up to date against the
    provenance of the first of ``consumers`` (outputs of jobs that read the series) that has a
    record. An empty or missing folder is returned itself, so the job that reads it reports it."""
    folder = Path(folder)
    scanned = scan_series(folder) if folder.is_dir() else []
    if not scanned:
        return str(folder)

    def recorded() -> tuple[Mapping[str, str], float] | None:
        return next(filter(None, (recorded_inputs(output) for output in consumers)), None)

    return str(refresh_series_state(scanned, state_path(patient, column), recorded))


def series_files(*folders: str | Path) -> list[Path]:
    """Every file of the given series folders: what a job reading them records as its inputs."""
    return [path for folder in folders for path in list_dicom_files(folder)]
