"""abmseg export-crate: the shared finished run as a Workflow Run RO-Crate, checked by the
community's validator (roc-validator, Provenance Run Crate 0.5, REQUIRED level), read back with
the rocrate library, and compared file by file with the run's results."""

from __future__ import annotations

import hashlib
import json
import shutil
import zipfile
from pathlib import Path
from urllib.parse import unquote

import pytest
from crate_validation import offline_cache, validate
from deploy import REPO

from abmseg.cli import main as cli_main
from abmseg.provenance import layout
from abmseg.provenance.crate import export_crate
from abmseg.provenance.crate_graph import flatten_params, path_pattern, raw_pattern
from abmseg.provenance.errors import ProvenanceError


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _release(pipeline) -> Path:
    """The code that ran the shared run (its deployment's release tree)."""
    return pipeline["root"] / "release"


def _result_files(work: Path) -> list[Path]:
    """Every file the run wrote under results/ (records excluded: they describe the results)."""
    results = work / "results"
    records = layout.records_dir(results)
    return sorted(p for p in results.rglob("*") if p.is_file() and records not in p.parents)


def _many(value) -> list:
    """A property as a list (RO-Crate writes a one-element list as the single value)."""
    return value if isinstance(value, list) else [value]


def _entities(crate: Path) -> dict[str, dict]:
    document = json.loads((crate / "ro-crate-metadata.json").read_text())
    return {entity["@id"]: entity for entity in document["@graph"]}


@pytest.fixture(scope="module")
def crate(pipeline, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("crate") / "run-crate"
    code = cli_main(
        [
            "export-crate",
            str(pipeline["work"] / "results"),
            str(out),
            "--workflow",
            str(_release(pipeline)),
            "--agent",
            "A. Tester",
            "--agent-id",
            "https://orcid.org/0000-0002-1825-0097",
        ]
    )
    assert code == 0
    return out


def test_path_patterns_put_wildcards_back():
    wildcards = {"variant": "full", "patient": "SYN002"}
    assert (
        path_pattern("results/inference/full/SYN002/abm.nii.gz", wildcards)
        == "results/inference/{variant}/{patient}/abm.nii.gz"
    )
    # a raw DICOM series is one parameter, not one per slice file
    assert raw_pattern("/data/raw/SYN002/CT/1a2b.dcm", wildcards) == "/data/raw/{patient}/CT/*.dcm"
    assert raw_pattern("/data/raw/SYN002/label.nii.gz", wildcards) == (
        "/data/raw/{patient}/label.nii.gz"
    )


def test_params_flatten_to_dotted_leaves():
    params = {"config": {"qa": {"hu_tolerance": 50.0}, "regions": {}}, "with_spet": True}
    assert flatten_params(params) == {
        "config.qa.hu_tolerance": 50.0,
        "config.regions": {},
        "with_spet": True,
    }


@pytest.mark.slow
def test_the_crate_is_valid_under_the_provenance_run_crate_profile(crate, tmp_path):
    issues = validate(crate, offline_cache(tmp_path))
    assert issues == []


@pytest.mark.slow
def test_the_validator_catches_a_broken_crate(crate, tmp_path):
    """Control: without its mainEntity and the run's instrument the same crate fails."""
    broken = tmp_path / "broken"
    shutil.copytree(crate, broken)
    document = json.loads((broken / "ro-crate-metadata.json").read_text())
    for entity in document["@graph"]:
        if entity["@id"] == "./":
            del entity["mainEntity"]
    (broken / "ro-crate-metadata.json").write_text(json.dumps(document))
    issues = validate(broken, offline_cache(tmp_path))
    assert any("mainEntity" in issue for issue in issues), issues


@pytest.mark.slow
def test_every_result_file_is_in_the_crate_with_its_sha256(pipeline, crate):
    entities = _entities(crate)
    work = pipeline["work"]
    files = _result_files(work)
    assert len(files) > 50
    for path in files:
        identifier = path.relative_to(work).as_posix()
        entity = entities.get(identifier)
        assert entity is not None, f"{identifier} missing from the crate"
        digest = _sha256(path)
        assert entity["sha256"] == digest, identifier
        assert _sha256(crate / identifier) == digest, identifier
        assert int(entity["contentSize"]) == path.stat().st_size
    in_payload = [i for i, e in entities.items() if e.get("@type") == "File" and "sha256" in e]
    results = {i for i in in_payload if i.startswith("results/")}
    assert results == {p.relative_to(work).as_posix() for p in files}


@pytest.mark.slow
def test_jobs_rules_and_the_run_are_linked(pipeline, crate):
    entities = _entities(crate)
    root = entities["./"]
    workflow = entities[root["mainEntity"]["@id"]]
    assert workflow["@id"] == "workflow/Snakefile"
    assert (crate / "workflow" / "Snakefile").read_bytes() == (
        _release(pipeline) / "workflow" / "Snakefile"
    ).read_bytes()
    steps = [entities[s["@id"]] for s in _many(workflow["step"])]
    tools = {t["@id"] for t in _many(workflow["hasPart"])}
    assert {s["workExample"]["@id"] for s in steps} == tools
    rules = {entities[t]["name"].removeprefix("rule ") for t in tools}
    assert {"convert", "register", "train_stage1", "train_stage2", "infer", "aggregate"} <= rules
    jobs = [e for e in entities.values() if e["@type"] == "CreateAction" and e["@id"] != "#run"]
    records = {
        json.loads(p.read_text())["outputs"][0]["path"]
        for p in layout.records_dir(pipeline["work"] / "results").rglob("*.json")
    }
    assert len(jobs) == len(records)
    for job in jobs:
        assert job["instrument"]["@id"] in tools
        assert job["agent"]["@id"] == "https://orcid.org/0000-0002-1825-0097"
        assert job["startTime"] <= job["endTime"]
    # every job's result is a File listed by the run's hasPart, every job has its ControlAction
    controls = [e for e in entities.values() if e["@type"] == "ControlAction"]
    assert {c["object"]["@id"] for c in controls} == {j["@id"] for j in jobs}
    organize = next(e for e in entities.values() if e["@type"] == "OrganizeAction")
    assert organize["result"]["@id"] == "#run"
    assert entities["#run"]["instrument"]["@id"] == "workflow/Snakefile"
    # the run's results are what no job read: the results page, not the summary it shows
    final = {r["@id"] for r in _many(entities["#run"]["result"])}
    assert "results/report/results.html" in final
    assert "results/metrics/summary.tsv" not in final
    # parameters are PropertyValues of the tools' FormalParameters
    infer = next(j for j in jobs if j["name"].startswith("job infer "))
    values = [entities[o["@id"]] for o in _many(infer["object"]) if o["@id"].startswith("#pv-")]
    assert any(v["name"] == "params.config.seed" for v in values)
    for value in values:
        formal = entities[value["exampleOfWork"]["@id"]]
        assert formal["@type"] == "FormalParameter"
        assert {"@id": formal["@id"]} in _many(entities[infer["instrument"]["@id"]]["input"])
    # every action is mentioned by the root, as the profile recommends
    mentioned = {m["@id"] for m in _many(entities["./"]["mentions"])}
    assert mentioned == {"#run", *(j["@id"] for j in jobs)}


@pytest.mark.slow
def test_raw_inputs_are_described_not_copied(pipeline, crate):
    entities = _entities(crate)
    raw = [e for e in entities.values() if e["@id"].startswith("file://")]
    dicom = [e for e in raw if e["@id"].endswith(".dcm")]
    assert dicom and all(len(e["sha256"]) == 64 for e in dicom)
    assert not list(crate.rglob("*.dcm")) or all(
        "results/dicom" in p.as_posix() for p in crate.rglob("*.dcm")
    )
    sheet = [e for e in raw if e["@id"].endswith("patients.tsv")]
    assert sheet and unquote(sheet[0]["@id"]).endswith(str(pipeline["sheet"]))


@pytest.mark.slow
def test_the_crate_reads_back_with_the_rocrate_library(crate):
    from rocrate.rocrate import ROCrate

    back = ROCrate(crate)
    assert back.mainEntity.id == "workflow/Snakefile"
    assert "ComputationalWorkflow" in back.mainEntity.type
    actions = [e for e in back.get_entities() if e.type == "CreateAction"]
    assert len(actions) > 20


@pytest.mark.slow
def test_a_zip_crate_holds_the_same(pipeline, crate, tmp_path):
    out = tmp_path / "run.zip"
    summary = export_crate(pipeline["work"] / "results", out, workflow=_release(pipeline))
    with zipfile.ZipFile(out) as archive:
        names = set(archive.namelist())
        document = json.loads(archive.read("ro-crate-metadata.json"))
        for entity in document["@graph"]:
            if entity["@id"].startswith("results/"):
                data = archive.read(entity["@id"])
                assert hashlib.sha256(data).hexdigest() == entity["sha256"]
    folder = {p.relative_to(crate).as_posix() for p in crate.rglob("*") if p.is_file()}
    assert names == folder
    assert summary.results == len(_result_files(pipeline["work"]))


@pytest.mark.slow
def test_a_changed_result_is_refused_and_nothing_is_left(pipeline, tmp_path):
    work = tmp_path / "work"
    shutil.copytree(pipeline["work"], work, symlinks=True)
    tampered = work / "results" / "metrics" / "summary.tsv"
    tampered.write_text(tampered.read_text() + "\n")
    out = tmp_path / "crate"
    with pytest.raises(ProvenanceError, match="summary.tsv: changed since its record"):
        export_crate(work / "results", out, workflow=_release(pipeline))
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".crate")] == []


def test_other_code_than_the_run_is_refused(pipeline, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(REPO / "workflow", other / "workflow")
    (other / "workflow" / "rules" / "extra.smk").write_text("# a changed workflow\n")
    with pytest.raises(ProvenanceError, match="is not the code that ran these jobs"):
        export_crate(pipeline["work"] / "results", tmp_path / "crate", workflow=other)


def test_an_existing_target_is_refused(pipeline, tmp_path):
    (tmp_path / "crate").mkdir()
    (tmp_path / "crate" / "keep.txt").write_text("mine")
    with pytest.raises(ProvenanceError, match="already exists"):
        export_crate(pipeline["work"] / "results", tmp_path / "crate")
