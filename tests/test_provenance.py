"""Provenance records, lineage, audit and PROV export: unit tests on hand-built records and fake
jobs (references computed here with hashlib), then the finished tiny run end to end."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from prov.model import ProvActivity, ProvDocument, ProvEntity, ProvGeneration, ProvUsage

from abmseg.cli import main
from abmseg.errors import ConfigError, DivergedError, PatientDataError, SheetError
from abmseg.provenance import environment, layout
from abmseg.provenance.audit import audit
from abmseg.provenance.export import export_prov
from abmseg.provenance.hashing import digest, sha256_file
from abmseg.provenance.jobview import describe, jsonable
from abmseg.provenance.lineage import trace_file
from abmseg.provenance.record import SCHEMA_KEY
from abmseg.provenance.render import render_tree
from abmseg.settings import RUNTIME_TRAINING_KEYS
from abmseg.step import rule_step

REPO = Path(__file__).resolve().parents[1]
ABC_SHA256 = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"  # FIPS 180-2


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(autouse=True)
def keep_logging():
    """rule_step reconfigures the root logger (as in a rule job); put it back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    for handler in root.handlers:
        if handler not in handlers:
            handler.close()
    root.handlers[:] = handlers
    root.setLevel(level)


# --- hashing --------------------------------------------------------------------------------


def test_sha256_of_abc_is_the_published_digest(tmp_path):
    path = tmp_path / "abc"
    path.write_bytes(b"abc")
    assert sha256_file(path) == ABC_SHA256
    assert digest(path) == {"path": str(path), "size": 3, "sha256": ABC_SHA256}


def test_sha256_of_a_multi_chunk_file_equals_hashlib(tmp_path):
    data = np.random.default_rng(0).bytes(3 * (1 << 20) + 17)
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()


def test_folder_digest_is_its_sorted_listing(tmp_path):
    folder = tmp_path / "series"
    (folder / "sub").mkdir(parents=True)
    (folder / "b.dcm").write_bytes(b"bb")
    (folder / "sub" / "a.dcm").write_bytes(b"a")
    listing = f"b.dcm\0{sha(b'bb')}\nsub/a.dcm\0{sha(b'a')}\n".encode()
    assert digest(folder) == {
        "path": str(folder),
        "size": 3,
        "sha256": sha(listing),
        "directory": True,
    }


# --- records of a fake job ------------------------------------------------------------------


def fake_job(project: Path, rule: str = "crop", **overrides) -> SimpleNamespace:
    """A stand-in for a rule script's `snakemake` object, paths relative to ``project``."""
    raw = project.parent / "raw" / "P1"
    raw.mkdir(parents=True, exist_ok=True)
    (raw / "1.dcm").write_bytes(b"dicom-1")
    (project / "results" / "converted" / "P1").mkdir(parents=True, exist_ok=True)
    (project / "results" / "converted" / "P1" / "ct.nii.gz").write_bytes(b"converted ct")
    job = SimpleNamespace(
        rule=rule,
        wildcards={"patient": "P1"},
        input={"ct": "results/converted/P1/ct.nii.gz", "dicom": [str(raw / "1.dcm")]},
        output={"ct": "results/cropped/P1/ct.nii.gz", "roi": "results/cropped/P1/roi.json"},
        log=["logs/crop/P1.log"],
        params={"settings": {"margin_mm": (10.0, 10.0, 0.0)}, "path": Path("x/y")},
        config={"seed": 42, "training": {"workers": 3}},
    )
    for key, value in overrides.items():
        setattr(job, key, value)
    return job


def write_outputs(job: SimpleNamespace) -> dict[str, bytes]:
    contents = {}
    for name, path in job.output.items():
        contents[path] = f"{name} made by {job.rule}".encode()
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_bytes(contents[path])
    return contents


def test_rule_step_writes_one_complete_record_per_output(tmp_path, monkeypatch):
    project = tmp_path / "work"
    project.mkdir()
    monkeypatch.chdir(project)
    job = fake_job(project)
    with rule_step(job, config_keys=("training.workers",)) as log:
        log.info("working")
        contents = write_outputs(job)
    raw = project.parent / "raw" / "P1" / "1.dcm"
    records = {}
    for output in job.output.values():
        record_file = project / "results" / "provenance" / (output[len("results/") :] + ".json")
        records[output] = json.loads(record_file.read_text())
        assert oct(record_file.stat().st_mode & 0o777) != oct(0o600)  # an ordinary mode
    record = records["results/cropped/P1/ct.nii.gz"]
    assert record[SCHEMA_KEY] == 1
    assert record["target"] == "results/cropped/P1/ct.nii.gz"
    assert record["rule"] == "crop"
    assert record["wildcards"] == {"patient": "P1"}
    assert record["inputs"] == [
        {"path": "results/converted/P1/ct.nii.gz", "size": 12, "sha256": sha(b"converted ct")},
        {"path": str(raw), "size": 7, "sha256": sha(b"dicom-1")},
    ]
    assert record["outputs"] == [
        {"path": path, "size": len(data), "sha256": sha(data)} for path, data in contents.items()
    ]
    assert record["logs"] == ["logs/crop/P1.log"]
    assert record["params"] == {"settings": {"margin_mm": [10.0, 10.0, 0.0]}, "path": "x/y"}
    assert record["config"] == {"training.workers": 3}
    assert record["seed"] == 42
    assert set(record["code"]) == {"commit", "dirty", "source_sha256"}
    assert len(record["code"]["source_sha256"]) == 64
    assert record["software"]["python"] == ".".join(map(str, sys.version_info[:3]))
    assert record["software"]["numpy"] == np.__version__
    for key in ("snakemake", "torch", "SimpleITK", "antspyx", "pydicom", "prov", "abmseg"):
        assert key in record["software"]
    assert {"hostname", "os", "cpu", "gpus", "cuda", "cuda_visible_devices"} <= set(record["host"])
    assert record["started"] <= record["finished"]
    assert record["started"].endswith("+00:00")
    # Both records describe the same job; only the target differs.
    other = records["results/cropped/P1/roi.json"]
    assert {k: v for k, v in other.items() if k != "target"} == {
        k: v for k, v in record.items() if k != "target"
    }
    assert "working" in (project / "logs" / "crop" / "P1.log").read_text()


def test_extra_outputs_and_inputs_are_recorded(tmp_path, monkeypatch):
    project = tmp_path / "work"
    project.mkdir()
    monkeypatch.chdir(project)
    (project / "results" / "models" / "stage1" / "checkpoints").mkdir(parents=True)
    (project / "results" / "models" / "stage1" / "checkpoints" / "last.pt").write_bytes(b"s1")
    stale = project / "results" / "provenance" / "models" / "tb" / "old" / "events.json"
    stale.parent.mkdir(parents=True)
    stale.write_text("{}")  # the record of a file an earlier run wrote there
    job = fake_job(project, rule="train_stage2", output={"model": "results/models/m.pt"})
    with rule_step(
        job,
        extra_outputs=["results/models/checkpoints/*", "results/models/tb/**"],
        extra_inputs="results/models/stage1/checkpoints/*",
    ):
        write_outputs(job)
        (project / "results" / "models" / "checkpoints").mkdir()
        (project / "results" / "models" / "checkpoints" / "last.pt").write_bytes(b"ckpt")
        (project / "results" / "models" / "tb" / "run").mkdir(parents=True)
        (project / "results" / "models" / "tb" / "run" / "events").write_bytes(b"e")
    assert not stale.exists()
    record_file = project / "results" / "provenance" / "models" / "checkpoints" / "last.pt.json"
    record = json.loads(record_file.read_text())
    assert [o["path"] for o in record["outputs"]] == [
        "results/models/m.pt",
        "results/models/checkpoints/last.pt",
        "results/models/tb/run/events",
    ]
    assert (record_file.parents[1] / "tb" / "run" / "events.json").is_file()
    assert record["inputs"][-1] == {
        "path": "results/models/stage1/checkpoints/last.pt",
        "size": 2,
        "sha256": sha(b"s1"),
    }


@pytest.mark.parametrize("error", [PatientDataError("P1", "x", "bad", "fix"), RuntimeError("x")])
def test_a_failed_step_writes_no_record_and_drops_the_old_one(tmp_path, monkeypatch, error):
    project = tmp_path / "work"
    project.mkdir()
    monkeypatch.chdir(project)
    job = fake_job(project)
    old = project / "results" / "provenance" / "cropped" / "P1" / "ct.nii.gz.json"
    old.parent.mkdir(parents=True)
    old.write_text("{}")  # a record of an earlier run of this job
    with pytest.raises((SystemExit, RuntimeError)), rule_step(job):
        write_outputs(job)
        raise error
    assert list((project / "results" / "provenance").rglob("*.json")) == []


@pytest.mark.parametrize(
    "error",
    [
        PatientDataError("P1", "x.nii.gz", "unreadable", "rerun convert"),
        ConfigError("config 'crop' has unknown key(s) ['margn_mm']", "fix the spelling"),
        SheetError("patient sheet x.tsv: row 3 has 2 columns"),
        DivergedError("non-finite losses ['seg'] in stage 1 epoch 3. Fix: lower lr"),
    ],
    ids=["patient-data", "config", "sheet", "diverged"],
)
def test_any_user_error_ends_the_job_in_one_line_without_a_record(
    error, tmp_path, monkeypatch, capsys
):
    """Whatever stage raised it, a user error is one log line and exit 1: no traceback, no
    provenance record of a job that did not finish."""
    project = tmp_path / "work"
    project.mkdir()
    monkeypatch.chdir(project)
    job = fake_job(project)
    with pytest.raises(SystemExit) as ended, rule_step(job):
        raise error
    assert ended.value.code == 1
    log = (project / "logs" / "crop" / "P1.log").read_text()
    failure = [line for line in log.splitlines() if " ERROR " in line]
    assert len(failure) == 1 and str(error) in failure[0]
    assert "Traceback" not in log + capsys.readouterr().err
    assert not (project / "results" / "provenance").exists()


def test_rule_step_reads_snakemakes_own_containers(tmp_path, monkeypatch):
    from snakemake.iocontainers import InputFiles, Log, OutputFiles, Params, Wildcards

    project = tmp_path / "work"
    project.mkdir()
    monkeypatch.chdir(project)
    (project / "in.txt").write_text("x")
    inputs = InputFiles(["in.txt"])
    inputs._set_name("text", 0)
    params = Params([{"a": 1}, 5])
    params._set_name("settings", 0)
    job = SimpleNamespace(
        rule="split",
        wildcards=Wildcards(fromdict={"patient": "P7"}),
        input=inputs,
        output=OutputFiles(["results/split.tsv"]),
        log=Log(["logs/split.log"]),
        params=params,
        config={"seed": 1},
    )
    view = describe(job)
    assert view["wildcards"] == {"patient": "P7"}
    assert view["params"] == {"settings": {"a": 1}, "_positional": [5]}
    with rule_step(job):
        Path("results").mkdir()
        Path("results/split.tsv").write_text("patient_id\tsubset\n")
    assert (project / "results" / "provenance" / "split.tsv.json").is_file()


def test_jsonable_makes_params_json_safe():
    value = {
        "n": np.int64(3),
        "f": np.float32(0.5),
        "a": np.arange(2),
        "p": Path("a/b"),
        "s": {2, 1},
        "nan": float("nan"),
        "fn": len,
        1: (1, "x"),
    }
    assert jsonable(value) == {
        "n": 3,
        "f": 0.5,
        "a": [0, 1],
        "p": "a/b",
        "s": [1, 2],
        "nan": "nan",
        "fn": "<callable len>",
        "1": [1, "x"],
    }
    json.dumps(jsonable(value), allow_nan=False)


def test_code_version_matches_git_and_changes_with_the_code(tmp_path):
    code = environment.code_version()
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True)
    if head.returncode == 0:
        assert code["commit"] == head.stdout.decode().strip()
    assert isinstance(code["dirty"], bool)
    # The source hash covers the scripts and the workflow: a copy with one changed rule differs.
    copy = tmp_path / "repo"
    for name in ("src/abmseg/__init__.py", "scripts/split.py", "workflow/Snakefile"):
        (copy / name).parent.mkdir(parents=True, exist_ok=True)
        (copy / name).write_bytes((REPO / name).read_bytes())
    before = environment.source_sha256(copy)
    (copy / "workflow" / "rules").mkdir(parents=True)
    (copy / "workflow" / "rules" / "x.smk").write_text("rule x:\n")
    assert environment.source_sha256(copy) != before


# --- a hand-built chain: raw DICOM -> convert -> normalise -> metrics -------------------------


def write_record(project: Path, rule: str, patient: str, inputs: list, outputs: list) -> None:
    """A record written here by hand (not by the code under test); paths as Snakemake gives."""

    def entries(paths):
        result = []
        for path in paths:
            data = (project / path).read_bytes()
            result.append({"path": path, "size": len(data), "sha256": sha(data)})
        return result

    record = {
        SCHEMA_KEY: 1,
        "rule": rule,
        "wildcards": {"patient": patient},
        "inputs": entries(inputs),
        "outputs": entries(outputs),
        "logs": [],
        "params": {},
        "config": {},
        "seed": 1,
        "code": {"commit": "c0ffee", "dirty": False, "source_sha256": "ab" * 32},
        "software": {"abmseg": "0.1.0"},
        "host": {"hostname": "node1"},
        "started": "2025-01-01T00:00:00.000+00:00",
        "finished": "2025-01-01T00:00:01.000+00:00",
    }
    for output in outputs:
        target = project / "results" / "provenance" / f"{output[len('results/') :]}.json"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps({**record, "target": output}))


@pytest.fixture
def chain(tmp_path) -> dict:
    project = tmp_path / "work"
    series = tmp_path / "raw" / "P1" / "CT"
    series.mkdir(parents=True)
    dicom = [series / f"{k}.dcm" for k in range(3)]
    for k, path in enumerate(dicom):
        path.write_bytes(b"slice %d" % k)
    files = {
        "converted": "results/converted/P1/ct.nii.gz",
        "meta": "results/converted/P1/meta.json",
        "normalized": "results/normalized/P1/ct.nii.gz",
        "metrics": "results/metrics/P1.json",
    }
    for name, path in files.items():
        (project / path).parent.mkdir(parents=True, exist_ok=True)
        (project / path).write_bytes(name.encode() * 3)
    write_record(
        project, "convert", "P1", [str(p) for p in dicom], [files["converted"], files["meta"]]
    )
    write_record(project, "normalise", "P1", [files["converted"]], [files["normalized"]])
    write_record(project, "metrics", "P1", [files["normalized"]], [files["metrics"]])
    return {"project": project, "results": project / "results", "dicom": dicom, **files}


def test_lineage_reaches_the_raw_dicom_files(chain):
    lineage = trace_file(chain["results"] / "metrics" / "P1.json")
    rules = [job.record["rule"] for job in lineage.jobs.values()]
    assert rules == ["metrics", "normalise", "convert"]
    assert sorted(lineage.raw) == chain["dicom"]
    data = lineage.to_dict()
    normalise = next(j for j in data["jobs"] if j["rule"] == "normalise")
    assert normalise["inputs"][0]["kind"] == "result"
    assert normalise["inputs"][0]["made_by"] == chain["converted"]
    assert {r["path"] for r in data["raw"]} == {str(p) for p in chain["dicom"]}
    text = render_tree(lineage)
    assert "rule metrics patient=P1" in text and "rule convert patient=P1" in text
    assert f"[raw] {chain['dicom'][0].parent}/  3 files" in text
    assert text.endswith("3 jobs, 3 raw input files")


def test_lineage_of_a_record_file_is_that_of_its_output(chain):
    record = chain["results"] / "provenance" / "metrics" / "P1.json.json"
    assert len(trace_file(record).jobs) == 3


def test_audit_passes_on_an_intact_chain(chain):
    report = audit([chain["results"] / "metrics" / "P1.json"])
    assert report.ok, report.problems
    assert report.files_checked == 3 + 4  # raw slices + every recorded output
    assert audit([chain["results"]]).ok


@contextmanager
def tampered(path: Path, change) -> Iterator[Path]:
    """Let ``change`` alter ``path``; put back its exact bytes and times afterwards."""
    data, stat = path.read_bytes(), path.stat()
    try:
        change(path)
        yield path
    finally:
        path.write_bytes(data)
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def append_byte(path: Path) -> None:
    with open(path, "ab") as handle:
        handle.write(b"\0")


def flip_last_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


def problems_of(*paths) -> list[str]:
    return [problem.line() for problem in audit(paths).problems]


def test_audit_names_a_tampered_intermediate(chain):
    target = chain["project"] / chain["normalized"]
    with tampered(target, append_byte):
        lines = problems_of(chain["results"] / "metrics" / "P1.json")
        assert len(lines) == 1
        assert lines[0].startswith(f"changed: {target}: recorded sha256 ")
        assert "rerun snakemake" in lines[0]
    assert audit([chain["results"]]).ok


def test_audit_names_a_tampered_raw_file(chain):
    with tampered(chain["dicom"][1], flip_last_byte):
        lines = problems_of(chain["results"] / "metrics" / "P1.json")
    assert len(lines) == 1
    assert lines[0].startswith(f"changed: {chain['dicom'][1]}: ")
    assert "raw input of convert patient=P1" in lines[0] and "restore" in lines[0]


def test_audit_names_a_removed_raw_file_and_a_deleted_output(chain):
    chain["dicom"][0].unlink()
    (chain["project"] / chain["meta"]).unlink()
    lines = problems_of(chain["results"] / "metrics" / "P1.json")
    assert sorted(line.split(":")[0] + ":" + line.split(":")[1] for line in lines) == sorted(
        [f"missing: {chain['dicom'][0]}", f"missing: {chain['project'] / chain['meta']}"]
    )


def test_audit_of_the_folder_reports_a_file_without_record(chain):
    stray = chain["results"] / "normalized" / "P1" / "extra.nii.gz"
    stray.write_bytes(b"who made me?")
    lines = problems_of(chain["results"])
    assert len(lines) == 1
    assert lines[0].startswith(
        f"no record: {stray}: written under results/ but has no provenance record. Fix: delete "
    )


def test_audit_reports_a_result_made_from_an_older_upstream(chain):
    """The intermediate was rebuilt (new content, new record) but the metrics were not."""
    (chain["project"] / chain["normalized"]).write_bytes(b"rebuilt")
    write_record(chain["project"], "normalise", "P1", [chain["converted"]], [chain["normalized"]])
    lines = problems_of(chain["results"] / "metrics" / "P1.json")
    assert len(lines) == 1
    assert lines[0].startswith(f"stale: {chain['project'] / chain['metrics']}: made by metrics")


def test_audit_reports_a_missing_record_in_the_lineage(chain):
    (chain["results"] / "provenance" / "converted" / "P1" / "ct.nii.gz.json").unlink()
    lines = problems_of(chain["results"] / "metrics" / "P1.json")
    assert lines and lines[0].startswith(f"no record: {chain['project'] / chain['converted']}")


def test_cli_audit_exit_codes_and_messages(chain, capsys):
    metrics = str(chain["results"] / "metrics" / "P1.json")
    assert main(["audit", metrics]) == 0
    assert capsys.readouterr().out.startswith("audit ok: 7 files checked (3 jobs, 3 raw files)")
    with tampered(chain["project"] / chain["converted"], append_byte):
        assert main(["audit", metrics]) == 1
    captured = capsys.readouterr()
    assert f"changed: {chain['project'] / chain['converted']}" in captured.out
    assert "audit FAILED: 1 problem(s)" in captured.err


def test_cli_provenance_of_an_unrecorded_file_is_one_clean_error(tmp_path, capsys):
    stray = tmp_path / "work" / "results" / "x.nii.gz"
    stray.parent.mkdir(parents=True)
    stray.write_bytes(b"x")
    assert main(["provenance", str(stray)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"abmseg: error: no provenance record for {stray}")
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    outside = tmp_path / "elsewhere.txt"
    outside.write_text("not a result")
    assert main(["provenance", str(outside)]) == 1
    assert "is not inside a results/ folder" in capsys.readouterr().err


def test_cli_provenance_of_a_path_that_does_not_exist_says_so(chain, tmp_path, capsys):
    """A typo is 'no such file' (not 'not written by a pipeline rule'); a result removed after
    its record was written says which rule wrote it and how to get it back."""
    typo = chain["results"] / "metrics" / "P9.json"
    assert main(["provenance", str(typo)]) == 1
    assert capsys.readouterr().err.strip() == f"abmseg: error: {typo}: no such file"
    assert main(["provenance", str(tmp_path / "nowhere" / "x.txt")]) == 1
    assert capsys.readouterr().err.strip().endswith("x.txt: no such file")
    removed = chain["results"] / "metrics" / "P1.json"
    removed.unlink()
    assert main(["provenance", str(removed)]) == 1
    err = capsys.readouterr().err
    assert f"{removed}: no such file; its record" in err
    assert "rule metrics wrote it" in err and "rerun snakemake" in err


def test_cli_provenance_prints_tree_and_json(chain, capsys):
    metrics = str(chain["results"] / "metrics" / "P1.json")
    assert main(["provenance", metrics]) == 0
    assert "rule normalise patient=P1" in capsys.readouterr().out
    assert main(["provenance", metrics, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [job["rule"] for job in data["jobs"]] == ["metrics", "normalise", "convert"]


def test_prov_export_round_trips(chain, tmp_path):
    target = tmp_path / "run.prov.json"
    written = export_prov(chain["results"], target)
    back = ProvDocument.deserialize(source=str(target), format="json")
    assert back == written
    activities = list(back.get_records(ProvActivity))
    assert sorted(str(a.get_attribute("abmseg:rule").pop()) for a in activities) == [
        "convert",
        "metrics",
        "normalise",
    ]
    entities = list(back.get_records(ProvEntity))
    paths = {str(next(iter(e.get_attribute("abmseg:path")))) for e in entities}
    assert paths == {str(p) for p in chain["dicom"]} | {
        chain[k] for k in ("converted", "meta", "normalized", "metrics")
    }
    assert len(list(back.get_records(ProvUsage))) == 3 + 1 + 1
    assert len(list(back.get_records(ProvGeneration))) == 2 + 1 + 1
    assert layout.records_dir(chain["results"]).is_dir()


def test_prov_export_without_records_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "results").mkdir()
    assert main(["export-prov", str(tmp_path / "results"), "-o", str(tmp_path / "x.json")]) == 1
    assert "no provenance records under" in capsys.readouterr().err


# --- the finished tiny run ------------------------------------------------------------------


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "abmseg.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=600,
    )


def split_of(pipeline) -> dict[str, str]:
    rows = (pipeline["work"] / "results" / "split.tsv").read_text().splitlines()[1:]
    return dict(row.split("\t") for row in rows)


@pytest.mark.slow
def test_every_result_file_has_a_record(pipeline):
    results = pipeline["work"] / "results"
    files = [p for p in results.rglob("*") if p.is_file()]
    unrecorded = [
        p
        for p in files
        if layout.result_relative(p, results) and not layout.record_path(results, p).is_file()
    ]
    assert len(files) > 50 and unrecorded == []
    checkpoints = [p for p in files if p.parent.name == "checkpoints"]
    assert checkpoints, "training checkpoints are recorded as extra outputs"


@pytest.mark.slow
def test_audit_of_the_finished_run_is_clean(pipeline):
    result = cli("audit", pipeline["work"] / "results")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("audit ok: ")


@pytest.mark.slow
def test_lineage_of_the_summary_reaches_raw_dicom_and_the_model(pipeline):
    raw = pipeline["sheet"].parent
    result = cli("provenance", pipeline["work"] / "results" / "metrics" / "summary.md", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    rules = {job["rule"] for job in data["jobs"]}
    assert {"aggregate", "metrics", "infer", "train_stage1", "convert"} <= rules
    dicom = [Path(r["path"]) for r in data["raw"] if r["path"].endswith(".dcm")]
    assert dicom and all(raw in p.parents for p in dicom)
    patients = split_of(pipeline)
    converted = {job["wildcards"]["patient"] for job in data["jobs"] if job["rule"] == "convert"}
    assert converted == set(patients)  # test patients directly, training ones via the model
    infer = next(job for job in data["jobs"] if job["rule"] == "infer")
    model = next(i for i in infer["inputs"] if i["path"].endswith("model.pt"))
    assert model["kind"] == "result" and model["made_by"].startswith("results/models/")
    text = cli("provenance", pipeline["work"] / "results" / "metrics" / "summary.md")
    assert text.returncode == 0
    assert "rule train_stage1" in text.stdout and "[raw] " in text.stdout
    assert ".dcm ... " in text.stdout and "(shown above)" in text.stdout


@pytest.mark.slow
def test_records_of_the_run_have_code_software_and_host(pipeline):
    results = pipeline["work"] / "results"
    model = next(results.glob("models/*/stage1/model.pt"))
    record = json.loads(layout.record_path(results, model).read_text())
    assert record["rule"] == "train_stage1"
    code = record["code"]
    assert len(code["source_sha256"]) == 64 and isinstance(code["dirty"], bool)
    assert code["commit"] is None or len(code["commit"]) == 40
    assert record["software"]["torch"] and record["software"]["snakemake"]
    assert record["host"]["hostname"] and record["host"]["cpu"]
    assert set(record["config"]) == set(RUNTIME_TRAINING_KEYS)
    assert record["seed"] is not None and record["params"]["stage"] == 1
    assert any("/checkpoints/" in o["path"] for o in record["outputs"])
    assert all(i["sha256"] for i in record["inputs"])


@pytest.mark.slow
def test_audit_names_a_tampered_intermediate_of_the_run(pipeline):
    results = pipeline["work"] / "results"
    patient = next(iter(split_of(pipeline)))
    target = results / "normalized" / patient / "ct.nii.gz"
    with tampered(target, append_byte):
        result = cli("audit", results)
    assert result.returncode == 1
    assert f"changed: {target}: recorded sha256" in result.stdout, result.stdout
    assert cli("audit", target).returncode == 0


@pytest.mark.slow
def test_audit_names_a_tampered_raw_dicom_file(pipeline):
    results = pipeline["work"] / "results"
    patient = next(p for p, subset in split_of(pipeline).items() if subset == "test")
    metrics = next(results.glob(f"metrics/*/{patient}.json"))
    dicom = sorted((pipeline["sheet"].parent / patient / "CT").rglob("*.dcm"))[0]
    with tampered(dicom, flip_last_byte):
        result = cli("audit", metrics)
    assert result.returncode == 1
    assert f"changed: {dicom}: " in result.stdout and "raw input of convert" in result.stdout
    assert cli("audit", metrics).returncode == 0


@pytest.mark.slow
def test_prov_export_of_the_run_validates(pipeline, tmp_path):
    target = tmp_path / "run.prov.json"
    result = cli("export-prov", pipeline["work"] / "results", "-o", target)
    assert result.returncode == 0, result.stderr
    document = ProvDocument.deserialize(source=str(target), format="json")
    results = pipeline["work"] / "results"
    jobs = {
        json.loads(p.read_text())["outputs"][0]["path"]
        for p in (results / "provenance").rglob("*.json")
    }
    assert len(list(document.get_records(ProvActivity))) == len(jobs)


# --- a copied or moved work folder is audited where it lies (issue 20) ----------------------


def test_raw_inputs_inside_the_work_folder_are_recorded_relative_to_it(tmp_path, monkeypatch):
    project = tmp_path / "work"
    (project / "raw" / "P1").mkdir(parents=True)
    monkeypatch.chdir(project)
    inside = project / "raw" / "P1" / "2.dcm"
    inside.write_bytes(b"dicom-2")
    job = fake_job(project)
    outside = str(project.parent / "raw" / "P1" / "1.dcm")
    job.input = {**job.input, "dicom": [outside, str(inside)]}
    with rule_step(job):
        write_outputs(job)
    record = json.loads(
        (project / "results" / "provenance" / "cropped" / "P1" / "ct.nii.gz.json").read_text()
    )
    paths = [entry["path"] for entry in record["inputs"]]
    assert paths == ["results/converted/P1/ct.nii.gz", outside, "raw/P1/2.dcm"]


def _copied_chain(chain, tmp_path, raw_inside: bool) -> tuple[Path, Path]:
    """The chain's project copied; raw DICOM kept inside it (relative records) or beside it."""
    project = chain["project"]
    raw = chain["dicom"][0].parent.parent.parent
    if raw_inside:  # as JobRecorder records raw data kept in the work folder: relative
        shutil.move(raw, project / "raw")
        dicom = [project / "raw" / "P1" / "CT" / p.name for p in chain["dicom"]]
        for path in (project / "results" / "provenance").rglob("*.json"):
            path.write_text(path.read_text().replace(f'"{raw}/', '"raw/'))
    copy = tmp_path / "copy"
    shutil.copytree(project, copy)
    if raw_inside:
        return copy, copy / "raw" / "P1" / "CT" / dicom[0].name
    raw_copy = tmp_path / "raw-copy"
    shutil.copytree(raw, raw_copy)
    return copy, raw_copy / "P1" / "CT" / chain["dicom"][0].name


def test_audit_of_a_copied_work_folder_checks_the_copys_raw_data(chain, tmp_path, capsys):
    copy, copied_dicom = _copied_chain(chain, tmp_path, raw_inside=True)
    assert main(["audit", str(copy / "results")]) == 0
    capsys.readouterr()
    copied_dicom.write_bytes(b"tampered in the copy")
    assert main(["audit", str(copy / "results")]) == 1
    assert f"changed: {copied_dicom}" in capsys.readouterr().out


def test_audit_raw_root_moves_raw_data_kept_outside(chain, tmp_path, capsys):
    copy, copied_dicom = _copied_chain(chain, tmp_path, raw_inside=False)
    old = str(chain["dicom"][0].parent.parent.parent)
    new = str(copied_dicom.parent.parent.parent)
    copied_dicom.write_bytes(b"tampered in the copy")
    # without --raw-root the records point at the original raw data, which is intact
    assert main(["audit", str(copy / "results")]) == 0
    capsys.readouterr()
    assert main(["audit", str(copy / "results"), "--raw-root", f"{old}={new}"]) == 1
    assert f"changed: {copied_dicom}" in capsys.readouterr().out
    assert main(["audit", str(copy / "results"), "--raw-root", old]) == 2
    assert "OLD=NEW" in capsys.readouterr().err
    assert main(["audit", str(copy / "results"), "--raw-root", f"{old}={tmp_path}/none"]) == 1
    assert "is not a folder" in capsys.readouterr().err
