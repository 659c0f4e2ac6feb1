"""CT-only patients: the model bundle of a finished run predicts new patients from their planning
CT alone, through the DAG (rule predict) and through `abmseg predict`, with identical masks."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from conftest import REPO, planned_jobs

from abmseg.infer.ct_only import prepare_ct
from abmseg.infer.model_bundle import write_model_bundle
from abmseg.io.channels import read_channels
from abmseg.io.dicom_series import read_series
from abmseg.io.volume import Geometry
from abmseg.models.trained_model import trained_model_content, write_trained_model
from abmseg.preprocess.normalise import NormaliseSettings, normalise_patient
from abmseg.preprocess.roi import CropSettings, crop_patient
from abmseg.rt import load_rtstruct
from abmseg.rt.seg import read_dicom_seg, read_fractional_seg
from abmseg.synth import generate_cohort
from abmseg.train.networks import Networks, variant_presets
from abmseg.train.settings import TrainSettings
from abmseg.variants import get_variant
from abmseg.workflow_run import run_snakemake

NEW_PATIENTS = ("CTONLY1", "CTONLY2")
REGIONS = {"lumbosacral_spine": 1, "ilium": 2, "lower_pelvis": 3}
OUTPUTS = (
    "spet.nii.gz", "abm.nii.gz", "abm_ct.nii.gz", "abm_prob.nii.gz", "abm_uncertainty.nii.gz",
    "abm_stats.tsv", "abm_stats.json", "qa.json", "qa.png", "prediction.json",
)  # fmt: skip
PREPROCESSING = {
    "crop": {"margin_mm": [10.0, 10.0, 0.0], "clear_outside_body": True},
    "normalise": {"ct_level_hu": 100.0, "ct_width_hu": 1200.0, "suv_ceiling": 10.0},
    "body_threshold": -0.9,
}


def test_ct_alone_is_prepared_exactly_as_the_crop_and_normalise_rules_do(converted, tmp_path):
    """The CT-only path (no PET: Otsu on the CT) gives the normalised CT and box that the
    crop and normalise steps give a training patient (the label stands in for the registered
    PET: any image on the CT grid does)."""
    paths = converted["paths"]
    out = {name: tmp_path / f"{name}.nii.gz" for name in ("ct", "pet", "label", "nct", "npet")}
    roi = crop_patient(
        paths.ct,
        paths.label,
        paths.label,
        out["ct"],
        out["pet"],
        out["label"],
        tmp_path / "roi.json",
        CropSettings(),
        "SYN001",
    )
    normalise_patient(
        out["ct"], out["pet"], out["label"], out["nct"], out["npet"], tmp_path / "l.nii.gz",
        NormaliseSettings(), "SYN001",
    )  # fmt: skip
    prepared = prepare_ct("SYN001", converted["raw"] / "CT", CropSettings(), NormaliseSettings())
    assert prepared.cropped.box == roi["box_ct_index"]
    expected = sitk.ReadImage(str(out["nct"]))
    np.testing.assert_array_equal(
        sitk.GetArrayFromImage(prepared.normalised), sitk.GetArrayFromImage(expected)
    )
    assert prepared.normalised.GetOrigin() == expected.GetOrigin()


# ------------------------------------------------------------------------ with a trained bundle


def write_sheet(path: Path, rows: list[str]) -> Path:
    path.write_text("\n".join(["patient_id\tct\tpet\tlabel", *rows]) + "\n")
    return path


@pytest.fixture(scope="module")
def bundle(pipeline) -> Path:
    return pipeline["work"] / "results" / "bundles" / "full"


@pytest.fixture(scope="module")
def new_cohort(tmp_path_factory) -> dict:
    """Two new patients, CT only (their PET and label are not given to the pipeline)."""
    root = tmp_path_factory.mktemp("ct_only")
    generate_cohort(root / "raw", n_patients=2, seed=23, preset="tiny")
    rows = [f"{p}\tSYN00{k}/CT\t\t" for k, p in enumerate(NEW_PATIENTS, start=1)]
    sheet = write_sheet(root / "raw" / "ct_only.tsv", rows)
    cts = {p: root / "raw" / f"SYN00{k}" / "CT" for k, p in enumerate(NEW_PATIENTS, start=1)}
    return {"root": root, "sheet": sheet, "cts": cts}


def ct_only_snakemake(pipeline, work: Path, sheet: Path, bundle_path: Path, *args: str):
    return run_snakemake(
        work,
        sheet,
        *args,
        configfiles=[REPO / "config" / "demo.yaml", pipeline["fast"]],
        config=(f"model_bundle={bundle_path}",),
    )


@pytest.fixture(scope="module")
def ct_only_run(pipeline, bundle, new_cohort) -> dict:
    """The CT-only sheet run with a copy of the pipeline's bundle, given as a relative path."""
    work = new_cohort["root"] / "work"
    shutil.copytree(bundle, work / "models" / "full")
    relative = Path("models/full")
    dry = ct_only_snakemake(pipeline, work, new_cohort["sheet"], relative, "-n")
    assert dry.returncode == 0, dry.stdout[-3000:] + dry.stderr[-3000:]
    result = ct_only_snakemake(pipeline, work, new_cohort["sheet"], relative, "--cores", "2")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return {"work": work, "planned": planned_jobs(dry.stdout + dry.stderr)}


def cli_predict(bundle_path: Path, ct: Path, out: Path, *extra: str):
    command = [sys.executable, "-m", "abmseg.cli", "predict", "--bundle", str(bundle_path)]
    command += ["--ct", str(ct), "--out", str(out), "--threads", "2", *extra]
    return subprocess.run(command, capture_output=True, text=True, timeout=600)


def array(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


@pytest.mark.slow
def test_the_run_writes_a_self_describing_bundle(pipeline, bundle):
    manifest = json.loads((bundle / "bundle.json").read_text())
    assert manifest["variant"] == "full" and manifest["stage"] == 2
    assert sorted(manifest["networks"]) == ["diffusion", "g_ct2pet", "mpfpsn"]
    for entry in manifest["networks"].values():
        data = (bundle / entry["file"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"]
    assert manifest["preprocessing"]["crop"]["margin_mm"] == [10.0, 10.0, 0.0]
    assert manifest["preprocessing"]["normalise"]["suv_ceiling"] == 10.0
    assert manifest["sampler"]["steps"] == 2  # the FAST override of this run
    assert manifest["regions"] == REGIONS
    assert manifest["provenance"]["rule"] == "train_stage2"
    assert manifest["image_size"] == 32
    # the QA flags travel with the bundle: their settings and the training patients' ranges
    profile = json.loads((pipeline["work"] / "results/qa/training_profile.json").read_text())
    assert manifest["qa"]["training_profile"] == profile and profile["patients"] == 4
    assert manifest["qa"]["settings"]["max_marrow_entropy"] == 0.69
    records = pipeline["work"] / "results" / "provenance" / "bundles" / "full"
    assert (records / "bundle.json.json").is_file()
    assert {p.name for p in (records / "weights").iterdir()} == {
        f"{name}.pt.json" for name in manifest["networks"]
    }


@pytest.mark.slow
def test_ct_only_patients_plan_no_training_registration_or_metrics(ct_only_run):
    planned = ct_only_run["planned"]
    assert {rule for rule, _ in planned} == {"predict", "export_dicom", "qa_table", "all"}
    assert {wc["patient"] for rule, wc in planned if rule == "predict"} == set(NEW_PATIENTS)
    work = ct_only_run["work"]
    for folder in ("converted", "registered", "metrics", "models", "inference", "split.tsv"):
        assert not (work / "results" / folder).exists(), folder


@pytest.mark.slow
def test_ct_only_patients_get_masks_on_their_ct_and_dicom_exports(ct_only_run, new_cohort):
    work = ct_only_run["work"]
    for patient in NEW_PATIENTS:
        folder = work / "results" / "predict" / patient
        for name in OUTPUTS:
            assert (folder / name).is_file(), name
        series = read_series(new_cohort["cts"][patient], "CT", patient)
        abm_ct = sitk.ReadImage(str(folder / "abm_ct.nii.gz"))
        assert series.geometry.matches(Geometry.of(abm_ct))
        summary = json.loads((folder / "prediction.json").read_text())
        assert summary["patient_id"] == patient and summary["bundle"]["variant"] == "full"
        labels = sitk.GetArrayFromImage(abm_ct)
        assert summary["voxels_per_region"] == {
            name: int(np.count_nonzero(labels == value)) for name, value in REGIONS.items()
        }
        exports = work / "results" / "dicom" / "predict" / patient
        back = read_dicom_seg(exports / "abm_seg.dcm", abm_ct, patient=patient)
        np.testing.assert_array_equal(sitk.GetArrayFromImage(back), labels)
        frame = str(series.datasets[0].FrameOfReferenceUID)
        contours = load_rtstruct(
            exports / "abm_rtstruct.dcm", abm_ct, patient, REGIONS, {}, frame_of_reference=frame
        )
        np.testing.assert_array_equal(sitk.GetArrayFromImage(contours.image), labels)


@pytest.mark.slow
def test_cli_and_dag_give_identical_masks(ct_only_run, new_cohort, bundle, tmp_path):
    patient = NEW_PATIENTS[0]
    out = tmp_path / patient
    result = cli_predict(bundle, new_cohort["cts"][patient], out, "--sampler", "bundle")
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"{patient}: ABM voxels" in result.stdout
    dag = ct_only_run["work"] / "results" / "predict" / patient
    for name in ("abm.nii.gz", "abm_ct.nii.gz", "spet.nii.gz"):
        np.testing.assert_array_equal(array(out / name), array(dag / name), err_msg=name)
    assert json.loads((out / "prediction.json").read_text()) == json.loads(
        (dag / "prediction.json").read_text()
    )
    back = read_dicom_seg(out / "abm_seg.dcm", sitk.ReadImage(str(dag / "abm_ct.nii.gz")))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), array(dag / "abm_ct.nii.gz"))
    for name in ("abm_stats.tsv", "qa.json"):
        assert (out / name).read_text() == (dag / name).read_text(), name
    probabilities, grid = read_channels(dag / "abm_prob.nii.gz")
    back, _ = read_fractional_seg(out / "abm_prob_seg.dcm", grid)
    np.testing.assert_allclose(back[1:], probabilities[1:], atol=0.5 / 255 + 1e-6)


def untrained_bundle(folder: Path, sampler: dict | None = None) -> Path:
    """A `full` bundle of untrained tiny networks: their masks are far from empty, unlike the
    tiny pipeline's briefly trained model, so identical masks mean something."""
    torch.manual_seed(5)
    presets = variant_presets(get_variant("full"), "tiny", 2)
    settings = TrainSettings(model_preset="tiny", image_size=32).to_dict()
    state = Networks.build(presets).state()
    model = trained_model_content("full", 2, settings, presets, state, ["X"], 0, 0, [])
    write_trained_model(folder / "model.pt", model)
    sampler = sampler or {
        "sampler": "ddim", "steps": 2, "start_step": None, "batch_size": 8, "seed": 42,
        "samples": 2, "tta": True,
    }  # fmt: skip
    write_model_bundle(
        folder / "full",
        folder / "model.pt",
        preprocessing=PREPROCESSING,
        sampler=sampler,
        regions=REGIONS,
        provenance=None,
    )
    return folder / "full"


@pytest.mark.slow
def test_dag_and_cli_masks_are_identical_where_they_are_not_empty(pipeline, new_cohort, tmp_path):
    bundle_path = untrained_bundle(tmp_path / "untrained")
    patient = NEW_PATIENTS[1]
    ct = new_cohort["cts"][patient]
    work = tmp_path / "work"
    work.mkdir()
    sheet = write_sheet(tmp_path / "one.tsv", [f"{patient}\t{ct}\t\t"])
    run = ct_only_snakemake(pipeline, work, sheet, bundle_path, "--cores", "2")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    result = cli_predict(bundle_path, ct, tmp_path / patient, "--no-dicom", "--sampler", "bundle")
    assert result.returncode == 0, result.stderr[-3000:]
    dag = work / "results" / "predict" / patient
    labels = array(dag / "abm_ct.nii.gz")
    assert np.count_nonzero(labels) > 1000 and len(np.unique(labels)) > 1
    names = ("abm.nii.gz", "abm_ct.nii.gz", "spet.nii.gz", "abm_prob.nii.gz")
    for name in (*names, "abm_uncertainty.nii.gz"):
        np.testing.assert_array_equal(array(tmp_path / patient / name), array(dag / name))
    # two seeds, each mirrored: four passes whose disagreement the second map shows
    assert read_channels(dag / "abm_uncertainty.nii.gz")[0][1].max() > 0
    assert not (tmp_path / patient / "abm_seg.dcm").exists()
    assert not (tmp_path / patient / "abm_prob_seg.dcm").exists()


@pytest.mark.slow
def test_a_tampered_bundle_is_refused_by_the_cli_and_the_dag(
    pipeline, bundle, new_cohort, tmp_path
):
    tampered = tmp_path / "tampered"
    shutil.copytree(bundle, tampered)
    weights = tampered / "weights" / "mpfpsn.pt"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x01
    weights.write_bytes(bytes(data))

    patient = NEW_PATIENTS[0]
    out = tmp_path / "cli"
    result = cli_predict(tampered, new_cohort["cts"][patient], out)
    assert result.returncode == 1
    assert "SHA-256" in result.stderr and "mpfpsn.pt" in result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists() or not any(out.iterdir())

    work = tmp_path / "work"
    work.mkdir()
    sheet = write_sheet(tmp_path / "one.tsv", [f"{patient}\t{new_cohort['cts'][patient]}\t\t"])
    run = ct_only_snakemake(pipeline, work, sheet, tampered, "--cores", "1")
    assert run.returncode != 0
    message = run.stdout + run.stderr
    assert "config 'model_bundle'" in message and "SHA-256" in message
    assert "mpfpsn.pt" in message and "Fix:" in message
    assert not (work / "results").exists(), "the bundle is checked before any job runs"


@pytest.mark.slow
def test_an_edited_manifest_is_refused(bundle, new_cohort, tmp_path):
    """Settings edited in bundle.json (here the CT window) no longer match its own hash."""
    edited = tmp_path / "edited"
    shutil.copytree(bundle, edited)
    manifest = json.loads((edited / "bundle.json").read_text())
    manifest["preprocessing"]["normalise"]["ct_width_hu"] = 400.0
    (edited / "bundle.json").write_text(json.dumps(manifest))
    result = cli_predict(edited, new_cohort["cts"][NEW_PATIENTS[0]], tmp_path / "out")
    assert result.returncode == 1
    assert "edited after it was written" in result.stderr and "bundle.json" in result.stderr


@pytest.mark.slow
def test_a_ct_only_patient_beside_the_cohort_only_adds_its_prediction(pipeline, new_cohort):
    """With the run's own bundle (model_bundle null), a CT-only row plans predict and export for
    that patient, and no conversion, registration, training, inference or metrics job."""
    lines = pipeline["sheet"].read_text().splitlines()
    ct = new_cohort["cts"][NEW_PATIENTS[0]]
    sheet = pipeline["sheet"].parent / "patients_plus_ct_only.tsv"
    sheet.write_text("\n".join([*lines, f"{NEW_PATIENTS[0]}\t{ct}\t\t"]) + "\n")
    try:
        result = run_snakemake(
            pipeline["work"],
            sheet,
            "-n",
            configfiles=[REPO / "config" / "demo.yaml", pipeline["fast"]],
        )
    finally:
        sheet.unlink()
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    jobs = planned_jobs(result.stdout + result.stderr)
    mine = {rule for rule, wc in jobs if wc.get("patient") == NEW_PATIENTS[0]}
    assert mine == {"predict", "export_dicom"}
    assert not {rule for rule, _ in jobs} & {"train_stage1", "train_stage2", "bundle", "infer"}


def test_ct_only_patients_without_a_bundle_or_a_cohort_to_train_are_refused(new_cohort, tmp_path):
    result = run_snakemake(tmp_path, new_cohort["sheet"], "-n")
    assert result.returncode != 0
    assert "CT-only patient(s) and no patient with PET and label" in result.stdout + result.stderr
    missing = tmp_path / "nowhere"
    result = run_snakemake(tmp_path, new_cohort["sheet"], "-n", config=(f"model_bundle={missing}",))
    assert result.returncode != 0
    assert f"'model_bundle' {missing} holds no bundle.json" in result.stdout + result.stderr
    inside = "results/bundles/full"
    result = run_snakemake(tmp_path, new_cohort["sheet"], "-n", config=(f"model_bundle={inside}",))
    assert result.returncode != 0
    assert "lies inside this run's results/ folder" in result.stdout + result.stderr


def test_on_a_cpu_predict_takes_the_cpu_sampler_and_says_so(new_cohort, tmp_path):
    """The default on a CPU equals a bundle written with one DDIM step from T/4 (an independent
    route to the same sampler), and --sampler bundle keeps the bundle's own."""
    patient = NEW_PATIENTS[1]
    ct = new_cohort["cts"][patient]
    own = untrained_bundle(tmp_path / "own")
    fast_sampler = {
        "sampler": "ddim", "steps": 1, "start_step": 250, "batch_size": 8, "seed": 42,
        "samples": 2, "tta": True,
    }  # fmt: skip
    fast = untrained_bundle(tmp_path / "fast", sampler=fast_sampler)
    runs = {
        "auto": cli_predict(own, ct, tmp_path / "auto", "--no-dicom", "--device", "cpu"),
        "fast": cli_predict(fast, ct, tmp_path / "fast_out", "--no-dicom", "--sampler", "bundle"),
        "own": cli_predict(own, ct, tmp_path / "own_out", "--no-dicom", "--sampler", "bundle"),
    }
    for name, result in runs.items():
        assert result.returncode == 0, (name, result.stderr[-3000:])
    assert "no GPU, so the CPU sampler: DDIM, 1 step from t=250 of 1000" in runs["auto"].stderr
    assert "instead of the bundle's DDIM, 2 steps from t=1000 of 1000" in runs["auto"].stderr
    assert "sampler: the bundle's, DDIM, 2 steps" in runs["own"].stderr
    for name in ("abm.nii.gz", "abm_ct.nii.gz", "spet.nii.gz"):
        np.testing.assert_array_equal(
            array(tmp_path / "auto" / name), array(tmp_path / "fast_out" / name), err_msg=name
        )
    spet_auto, spet_own = (
        array(tmp_path / "auto" / "spet.nii.gz"),
        array(tmp_path / "own_out" / "spet.nii.gz"),
    )
    assert not np.array_equal(spet_auto, spet_own)
    summary = json.loads((tmp_path / "auto" / "prediction.json").read_text())
    assert summary["sampler"] == fast_sampler and summary["sampler_from_bundle"] is False
    own_summary = json.loads((tmp_path / "own_out" / "prediction.json").read_text())
    assert own_summary["sampler_from_bundle"] is True and own_summary["sampler"]["steps"] == 2
