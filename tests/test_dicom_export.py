"""The predicted ABM out as DICOM SEG and RTSTRUCT of the original CT (rule export_dicom).

Read back with highdicom/pydicom onto the CT grid, both files must give the label map they were
made from (Dice > 0.99 per region, and in fact voxel for voxel), reference the patient's raw CT
series, and carry no identity beyond that CT's own.
"""

from __future__ import annotations

import shutil

import highdicom as hd
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from conftest import pipeline_snakemake

from abmseg import __version__
from abmseg.io.channels import read_channels
from abmseg.io.dicom_series import list_dicom_files
from abmseg.privacy.identifiers import identifiers_in
from abmseg.privacy.scan import scan
from abmseg.rt import load_rtstruct
from abmseg.rt.export import export_patient
from abmseg.rt.seg import read_dicom_seg, read_fractional_seg

REGIONS = {"lumbosacral_spine": 1, "ilium": 2, "lower_pelvis": 3}


def dice(a: np.ndarray, b: np.ndarray) -> float:
    total = np.count_nonzero(a) + np.count_nonzero(b)
    return 1.0 if total == 0 else 2 * np.count_nonzero(a & b) / total


def read_back(seg_path, rtstruct_path, ct: sitk.Image, patient: str) -> tuple[np.ndarray, ...]:
    """Both exports as label arrays on ``ct``'s grid, each by its own reader."""
    seg = sitk.GetArrayFromImage(read_dicom_seg(seg_path, ct, regions=REGIONS, patient=patient))
    rtstruct = load_rtstruct(
        rtstruct_path,
        ct,
        patient,
        REGIONS,
        {},
        frame_of_reference=str(pydicom.dcmread(seg_path).FrameOfReferenceUID),
    )
    return seg, sitk.GetArrayFromImage(rtstruct.image)


def assert_same_label(back: np.ndarray, label: np.ndarray) -> None:
    for value in REGIONS.values():
        if np.any(label == value):
            assert dice(back == value, label == value) > 0.99, value
    np.testing.assert_array_equal(back, label)


def assert_references_ct(seg_path, rtstruct_path, ct_folder) -> None:
    """Both objects name the CT's study, series, frame of reference and every CT slice."""
    ct = [pydicom.dcmread(p, stop_before_pixels=True) for p in list_dicom_files(ct_folder)]
    first = ct[0]
    sops = {str(d.SOPInstanceUID) for d in ct}
    seg = hd.seg.segread(seg_path)
    assert seg.StudyInstanceUID == first.StudyInstanceUID
    assert seg.FrameOfReferenceUID == first.FrameOfReferenceUID
    (series,) = seg.ReferencedSeriesSequence
    assert series.SeriesInstanceUID == first.SeriesInstanceUID
    assert {str(i.ReferencedSOPInstanceUID) for i in series.ReferencedInstanceSequence} == sops
    assert [str(s.SegmentLabel) for s in seg.SegmentSequence] == list(REGIONS)
    for segment in seg.SegmentSequence:
        (algorithm,) = segment.SegmentationAlgorithmIdentificationSequence
        assert (algorithm.AlgorithmName, algorithm.AlgorithmVersion) == ("abmseg", __version__)
    rs = pydicom.dcmread(rtstruct_path)
    (frame,) = rs.ReferencedFrameOfReferenceSequence
    assert frame.FrameOfReferenceUID == first.FrameOfReferenceUID
    (study,) = frame.RTReferencedStudySequence
    assert study.ReferencedSOPInstanceUID == first.StudyInstanceUID
    (rs_series,) = study.RTReferencedSeriesSequence
    assert rs_series.SeriesInstanceUID == first.SeriesInstanceUID
    assert {str(i.ReferencedSOPInstanceUID) for i in rs_series.ContourImageSequence} == sops
    assert [r.ROIName for r in rs.StructureSetROISequence] == list(REGIONS)
    ct_uids = sops | {first.StudyInstanceUID, first.SeriesInstanceUID, first.FrameOfReferenceUID}
    for obj in (seg, rs):
        assert obj.PatientID == first.PatientID and obj.PatientName == first.PatientName
        assert obj.SOPInstanceUID not in ct_uids and obj.SeriesInstanceUID not in ct_uids


def test_export_of_a_known_label_round_trips_through_both_objects(converted, tmp_path):
    """The generator's own label on the CT grid (all three regions present) in and back out."""
    ct = sitk.ReadImage(str(converted["paths"].ct))
    label = sitk.GetArrayFromImage(sitk.ReadImage(str(converted["paths"].label)))
    assert set(np.unique(label)) == {0, 1, 2, 3}
    seg_path, rs_path = tmp_path / "abm_seg.dcm", tmp_path / "abm_rtstruct.dcm"
    summary = export_patient(
        "SYN001", converted["paths"].label, converted["raw"] / "CT", REGIONS, seg_path, rs_path
    )
    assert summary["voxels_per_region"] == {
        name: int(np.count_nonzero(label == value)) for name, value in REGIONS.items()
    }
    for back in read_back(seg_path, rs_path, ct, "SYN001"):
        assert_same_label(back, label)
    assert_references_ct(seg_path, rs_path, converted["raw"] / "CT")


def test_export_refuses_a_mask_off_the_ct_grid_and_writes_nothing(converted, tmp_path):
    label = sitk.ReadImage(str(converted["paths"].label))
    cropped = tmp_path / "cropped.nii.gz"
    sitk.WriteImage(label[2:-2, :, :], str(cropped))
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(Exception, match="grid") as caught:
        export_patient(
            "SYN001", cropped, converted["raw"] / "CT", REGIONS, out / "s.dcm", out / "r.dcm"
        )
    assert "SYN001" in str(caught.value)
    assert not list(out.iterdir())


def _test_patients(work) -> list[str]:
    rows = (work / "results" / "split.tsv").read_text().splitlines()[1:]
    return [line.split("\t")[0] for line in rows if line.split("\t")[1] == "test"]


@pytest.mark.slow
def test_pipeline_exports_every_test_patient_on_its_ct(pipeline):
    work, raw = pipeline["work"], pipeline["root"] / "raw"
    patients = _test_patients(work)
    assert patients
    for patient in patients:
        folder = work / "results" / "dicom" / "full" / patient
        seg_path, rs_path = folder / "abm_seg.dcm", folder / "abm_rtstruct.dcm"
        ct = sitk.ReadImage(str(work / "results" / "converted" / patient / "ct.nii.gz"))
        abm_ct = sitk.GetArrayFromImage(
            sitk.ReadImage(str(work / "results" / "inference" / "full" / patient / "abm_ct.nii.gz"))
        )
        for back in read_back(seg_path, rs_path, ct, patient):
            assert_same_label(back, abm_ct)
        assert_references_ct(seg_path, rs_path, raw / patient / "CT")
        prob = work / "results" / "inference" / "full" / patient / "abm_prob.nii.gz"
        probabilities, grid = read_channels(prob)
        back, _ = read_fractional_seg(folder / "abm_prob_seg.dcm", grid, patient=patient)
        np.testing.assert_allclose(back[1:], probabilities[1:], atol=0.5 / 255 + 1e-6)
        for record in ("abm_seg.dcm", "abm_prob_seg.dcm", "abm_rtstruct.dcm"):
            path = work / "results" / "provenance" / "dicom" / "full" / patient / f"{record}.json"
            assert path.is_file(), path


@pytest.mark.slow
def test_the_rule_exports_a_non_empty_mask_that_reads_back_with_dice_above_099(pipeline, tmp_path):
    """The tiny run's masks may be empty; in a copy of the run one test patient's abm_ct is
    replaced by its true label (all three regions) and the rule reruns on it alone."""
    work = tmp_path / "work"
    shutil.copytree(pipeline["work"], work, symlinks=True)
    patient = _test_patients(work)[0]
    abm_ct = work / "results" / "inference" / "full" / patient / "abm_ct.nii.gz"
    label = work / "results" / "converted" / patient / "label.nii.gz"
    shutil.copyfile(label, abm_ct)
    expected = sitk.GetArrayFromImage(sitk.ReadImage(str(abm_ct)))
    assert set(np.unique(expected)) == {0, 1, 2, 3}
    folder = work / "results" / "dicom" / "full" / patient
    targets = [str(folder.relative_to(work) / n) for n in ("abm_seg.dcm", "abm_rtstruct.dcm")]
    result = pipeline_snakemake(work, pipeline["sheet"], pipeline["fast"], "--cores", "1", *targets)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "export_dicom" in result.stdout + result.stderr
    ct = sitk.ReadImage(str(work / "results" / "converted" / patient / "ct.nii.gz"))
    for back in read_back(folder / "abm_seg.dcm", folder / "abm_rtstruct.dcm", ct, patient):
        assert_same_label(back, expected)


@pytest.mark.slow
def test_exports_carry_only_their_own_ct_identity(pipeline):
    """Each export holds its own patient's identifiers (a planning system matches on them) and
    none of any other patient's."""
    work, raw = pipeline["work"], pipeline["root"] / "raw"
    everyone = sorted(p.name for p in raw.iterdir() if (p / "CT").is_dir())
    for patient in _test_patients(work):
        exports = work / "results" / "dicom" / "full" / patient
        own = identifiers_in([raw / patient])
        findings, files = scan([exports], own)
        assert files == 3
        assert {f.identifier.kind for f in findings} >= {"patient name", "PatientID"}
        others = set().union(*(identifiers_in([raw / p]) for p in everyone if p != patient))
        findings, _ = scan([exports], others - own)
        assert not findings, "\n".join(f.line() for f in findings)


def test_the_qa_verdict_ends_every_series_description_within_64_characters():
    from abmseg.rt.export import with_verdict
    from abmseg.rt.rtstruct import SERIES_DESCRIPTION
    from abmseg.rt.seg import PROBABILITY_SERIES_DESCRIPTION, SEG_SERIES_DESCRIPTION

    for base in (SEG_SERIES_DESCRIPTION, PROBABILITY_SERIES_DESCRIPTION, SERIES_DESCRIPTION):
        assert "RESEARCH USE ONLY" in base
        assert with_verdict(base, None) == base
        for verdict in ("pass", "warn", "fail"):
            text = with_verdict(base, verdict)
            assert text == f"{base} QA {verdict.upper()}" and len(text) <= 64
    with pytest.raises(ValueError, match="longer than 64"):
        with_verdict("x" * 60, "fail")
