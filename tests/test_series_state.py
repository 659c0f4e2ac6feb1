"""The series state file: its time moves when, and only when, the bytes of its series change.

Each case builds a series folder, the state file and (where the case needs one) the provenance
record of a job that read the series, written by the real JobRecorder, then changes the series the
way a user would. The end-to-end counterpart is tests/test_rerun.py on a finished run.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from abmseg.cohort.series_state import (
    HEADER,
    same_bytes_as_recorded,
    scan_series,
    series_files,
    series_input,
    state_path,
)
from abmseg.io.dicom_series import list_dicom_files
from abmseg.provenance.record import JobRecorder, recorded_inputs

UID_NAME = "1.2.826.0.1.3680043.8.498.123456789.dcm"
CONSUMER = "results/converted/P1/meta.json"


@pytest.fixture
def project(tmp_path, monkeypatch) -> Path:
    """A working directory (cwd, as under Snakemake) and a raw CT series of three files."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    series = tmp_path / "raw" / "P1" / "CT"
    series.mkdir(parents=True)
    for name in (UID_NAME, "2.dcm", "3.dcm"):
        (series / name).write_bytes(f"pixels of {name}".encode())
    return series


def state_input(series: Path) -> Path:
    return Path(series_input(series, "P1", "ct", consumers=[CONSUMER]))


def run_consumer(series: Path) -> float:
    """A job that reads the series and writes CONSUMER, recorded as rule scripts record it;
    returns the time of its output, which its recorded start precedes."""
    job = SimpleNamespace(
        rule="convert",
        wildcards={"patient": "P1"},
        input={"ct": str(state_path("P1", "ct"))},
        output={"meta": CONSUMER},
        log=[],
        params={},
        config={},
    )
    recorder = JobRecorder(job, extra_inputs=lambda: series_files(series))
    recorder.start()
    Path(CONSUMER).parent.mkdir(parents=True, exist_ok=True)
    Path(CONSUMER).write_text("{}")
    recorder.finish()
    return Path(CONSUMER).stat().st_mtime


def age(path: Path, seconds: float = 100) -> None:
    """Date ``path`` back, so that a rewrite shows as a newer time."""
    stamp = path.stat().st_mtime - seconds
    os.utime(path, (stamp, stamp))


def finished_run(series: Path) -> tuple[Path, float]:
    """State file written at DAG build, then the job run: the state of a finished patient."""
    state = state_input(series)
    age(state)
    return state, run_consumer(series)


def test_the_state_file_lists_name_digests_sizes_and_times_never_names(project):
    state = state_input(project)
    assert state == state_path("P1", "ct") and state.is_file()
    lines = state.read_text().splitlines()
    assert lines[0] == HEADER and len(lines) == 4
    assert UID_NAME not in state.read_text() and "1.2.826" not in state.read_text()
    sizes = sorted(int(line.split("\t")[1]) for line in lines[1:])
    assert sizes == sorted(p.stat().st_size for p in project.iterdir())


def test_nothing_changed_leaves_the_state_file_alone(project):
    state, _ = finished_run(project)
    before = (state.read_text(), state.stat().st_mtime_ns)
    assert state_input(project) == state
    assert (state.read_text(), state.stat().st_mtime_ns) == before


@pytest.mark.parametrize(
    "change",
    ["edit", "add", "remove", "rename"],
)
def test_a_changed_series_makes_the_state_newer_than_the_job_output(project, change):
    state, output_time = finished_run(project)
    target = project / "2.dcm"
    if change == "edit":
        target.write_bytes(b"pixels of 2.dcm, one voxel changed")
    elif change == "add":
        (project / "4.dcm").write_bytes(b"a new slice")
    elif change == "remove":
        target.unlink()
    else:
        target.rename(project / "2b.dcm")
    state_input(project)
    assert state.stat().st_mtime > output_time


def test_a_touched_series_with_the_same_bytes_stays_older_than_the_job_output(project):
    state, output_time = finished_run(project)
    for path in project.iterdir():
        os.utime(path)
    old_text = state.read_text()
    state_input(project)
    assert state.read_text() != old_text  # the new times are listed...
    assert state.stat().st_mtime <= output_time  # ...but the file is not newer than the output


def test_an_edit_put_back_after_a_dry_run_is_no_change(project):
    """The dry run during the edit dated the state file after the job; putting the bytes back
    must date it before the job's outputs again."""
    state, output_time = finished_run(project)
    target = project / "2.dcm"
    original = target.read_bytes()
    target.write_bytes(b"edited")
    state_input(project)
    assert state.stat().st_mtime > output_time
    target.write_bytes(original)
    state_input(project)
    assert state.stat().st_mtime <= output_time


def test_putting_one_of_two_edits_back_is_still_a_change(project):
    state, output_time = finished_run(project)
    first, second = project / "2.dcm", project / "3.dcm"
    original = first.read_bytes()
    first.write_bytes(b"edited")
    second.write_bytes(b"edited too")
    state_input(project)
    first.write_bytes(original)
    state_input(project)
    assert state.stat().st_mtime > output_time


def test_a_run_finished_before_state_files_keeps_its_results(project):
    """A record but no state file (an older abmseg's run, or .abmseg/ deleted): the new state
    file is dated at the job's start when the bytes match, and after it when they do not."""
    output_time = run_consumer(project)
    state = state_input(project)
    assert state.stat().st_mtime <= output_time
    state.unlink()
    (project / "3.dcm").write_bytes(b"changed since the job ran")
    assert state_input(project).stat().st_mtime > output_time


def test_without_a_record_any_listing_change_counts(project):
    state = state_input(project)
    age(state)
    before = state.stat().st_mtime
    os.utime(project / "2.dcm")
    state_input(project)
    assert state.stat().st_mtime > before


def test_an_empty_or_missing_folder_is_the_input_itself(project, tmp_path):
    empty = tmp_path / "raw" / "P2" / "CT"
    empty.mkdir(parents=True)
    assert series_input(empty, "P2", "ct", [CONSUMER]) == str(empty)
    missing = tmp_path / "raw" / "P3" / "CT"
    assert series_input(missing, "P3", "ct", [CONSUMER]) == str(missing)
    assert not state_path("P2", "ct").exists() and not state_path("P3", "ct").exists()


def test_the_record_names_the_dicom_files_and_not_the_state_file(project):
    finished_run(project)
    hashes, started = recorded_inputs(CONSUMER)
    assert set(hashes) == {os.path.abspath(p) for p in project.iterdir()}
    assert started <= Path(CONSUMER).stat().st_mtime
    assert same_bytes_as_recorded(series_files(project), hashes)
    (project / "3.dcm").write_bytes(b"other")
    assert not same_bytes_as_recorded(series_files(project), hashes)


def test_no_record_reads_as_none(project):
    assert recorded_inputs(CONSUMER) is None
    assert recorded_inputs("elsewhere/meta.json") is None


def test_the_scan_lists_what_list_dicom_files_lists(project):
    """The DAG-time scan and the jobs' own listing must agree on which files a series has."""
    (project / ".hidden.dcm").write_bytes(b"x")
    (project / "DICOMDIR").write_bytes(b"x")
    (project / "subfolder").mkdir()
    (project / "link.dcm").symlink_to(project / "2.dcm")
    (project / "dangling.dcm").symlink_to(project / "gone.dcm")
    scanned = scan_series(project)
    assert [path for path, _, _ in scanned] == list_dicom_files(project)
    assert [(size, mtime) for _, size, mtime in scanned] == [
        (p.stat().st_size, p.stat().st_mtime_ns) for p in list_dicom_files(project)
    ]
