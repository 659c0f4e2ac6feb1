"""Labels given as an RTSTRUCT (as a treatment-planning system exports them) convert to the same
label image as the NIfTI they were drawn from, through the library and through the rule."""

from __future__ import annotations

import json

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from abmseg.errors import PatientDataError
from abmseg.preprocess.convert import ConvertedPaths, ConvertSettings, convert_patient
from abmseg.synth import generate_cohort
from abmseg.workflow_run import run_snakemake

ALIASES = {"ilium": ["ABM ilium"], "lower_pelvis": [], "lumbosacral_spine": []}


@pytest.fixture(scope="module")
def rt_cohort(tmp_path_factory):
    """Two tiny patients of the same seed as the session's tiny_cohort, labels as RTSTRUCT."""
    root = tmp_path_factory.mktemp("rtcohort")
    sheet = generate_cohort(root, n_patients=2, seed=11, preset="tiny", label_format="rtstruct")
    return root, sheet


def convert(raw, tmp_path, label_path, **kwargs) -> tuple[np.ndarray, dict]:
    out = ConvertedPaths(*(tmp_path / n for n in ("ct.nii.gz", "pet.nii.gz", "l.nii.gz", "m.json")))
    meta = convert_patient(
        "SYN001", raw / "CT", raw / "PET", label_path, out, ConvertSettings(**kwargs)
    )
    return sitk.GetArrayFromImage(sitk.ReadImage(str(out.label))), meta


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


def test_generator_writes_an_rtstruct_of_the_ct(rt_cohort):
    root, sheet = rt_cohort
    assert "SYN001/label.dcm" in sheet.read_text()
    ds = pydicom.dcmread(root / "SYN001" / "label.dcm")
    ct = pydicom.dcmread(next((root / "SYN001" / "CT").iterdir()))
    assert ds.Modality == "RTSTRUCT"
    assert ds.ReferencedFrameOfReferenceSequence[0].FrameOfReferenceUID == ct.FrameOfReferenceUID
    assert not (root / "SYN001" / "label.nii.gz").exists()


def test_rtstruct_label_converts_to_the_nifti_label(rt_cohort, converted, tmp_path):
    root, _ = rt_cohort
    label, meta = convert(root / "SYN001", tmp_path, root / "SYN001" / "label.dcm")
    reference = sitk.GetArrayFromImage(sitk.ReadImage(str(converted["paths"].label)))
    assert label.shape == reference.shape
    for value in (1, 2, 3):
        assert dice(label == value, reference == value) > 0.99, value
    assert meta["label"]["source"] == "rtstruct"
    assert meta["label"]["rois"]["ilium"] == "ilium"
    assert converted["meta"]["label"]["source"] == "nifti"


def test_roi_names_match_aliases_whatever_their_case(rt_cohort, tmp_path):
    root, _ = rt_cohort
    ds = pydicom.dcmread(root / "SYN001" / "label.dcm")
    for item in ds.StructureSetROISequence:
        if item.ROIName == "ilium":
            item.ROIName = "abm ILIUM"
    renamed = tmp_path / "renamed.dcm"
    ds.save_as(renamed)
    plain, _ = convert(root / "SYN001", tmp_path / "a", root / "SYN001" / "label.dcm")
    aliased, meta = convert(root / "SYN001", tmp_path / "b", renamed, roi_aliases=ALIASES)
    assert np.array_equal(plain, aliased)
    assert meta["label"]["rois"]["ilium"] == "abm ILIUM"
    with pytest.raises(PatientDataError, match="ilium"):
        convert(root / "SYN001", tmp_path / "c", renamed, roi_aliases={})  # no alias: no ROI


def test_rtstruct_of_another_patient_is_refused(rt_cohort, tmp_path):
    root, _ = rt_cohort
    with pytest.raises(PatientDataError) as error:
        convert(root / "SYN001", tmp_path, root / "SYN002" / "label.dcm")
    message = str(error.value)
    assert "SYN001" in message and "label.dcm" in message and "Fix:" in message
    assert "frame of reference" in message.lower()


@pytest.mark.slow
def test_the_convert_rule_reads_rtstruct_labels(rt_cohort, tmp_path, converted):
    root, _ = rt_cohort
    sheet = root / "split_sheet.tsv"  # two patients: fix the split so both sides have one
    sheet.write_text(
        "patient_id\tct\tpet\tlabel\tsplit\n"
        "SYN001\tSYN001/CT\tSYN001/PET\tSYN001/label.dcm\ttrain\n"
        "SYN002\tSYN002/CT\tSYN002/PET\tSYN002/label.dcm\ttest\n"
    )
    result = run_snakemake(tmp_path, sheet, "--cores", "1", "results/converted/SYN001/meta.json")
    assert result.returncode == 0, result.stderr[-3000:]
    meta = json.loads((tmp_path / "results/converted/SYN001/meta.json").read_text())
    assert meta["label"]["source"] == "rtstruct"
    label = sitk.GetArrayFromImage(
        sitk.ReadImage(str(tmp_path / "results/converted/SYN001/label.nii.gz"))
    )
    reference = sitk.GetArrayFromImage(sitk.ReadImage(str(converted["paths"].label)))
    assert dice(label > 0, reference > 0) > 0.99
