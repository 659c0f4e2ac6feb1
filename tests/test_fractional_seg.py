"""Class probabilities out as a FRACTIONAL (probability) DICOM SEG of the CT, and back; every
exported series says research use only."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.uid import SegmentationStorage

from abmseg.errors import PatientDataError
from abmseg.io.channels import write_channels
from abmseg.io.dicom_series import read_series
from abmseg.io.volume import Geometry
from abmseg.rt.export import export_probabilities
from abmseg.rt.rtstruct import write_rtstruct
from abmseg.rt.seg import (
    read_dicom_seg,
    read_fractional_seg,
    write_dicom_seg,
    write_fractional_seg,
)

REGIONS = {"lumbosacral_spine": 1, "ilium": 2, "lower_pelvis": 3}
STEP = 1 / 255


@pytest.fixture(scope="module")
def ct_case(converted):
    """SYN001's raw CT series, its converted CT (the grid) and its ABM label."""
    series = read_series(converted["raw"] / "CT", "CT", "SYN001")
    ct = sitk.ReadImage(str(converted["paths"].ct))
    label = sitk.ReadImage(str(converted["paths"].label))
    assert Geometry.of(ct).matches(series.geometry)
    return series, ct, label


@pytest.fixture(scope="module")
def probabilities(ct_case) -> np.ndarray:
    """(4, z, y, x) probabilities summing to 1: random classes on a slab of slices, background
    elsewhere (slices with no foreground at all, whose frames the SEG may omit)."""
    _, ct, _ = ct_case
    z, y, x = sitk.GetArrayViewFromImage(ct).shape
    rng = np.random.default_rng(18)
    p = np.zeros((4, z, y, x), dtype=np.float32)
    p[0] = 1.0
    slab = slice(z // 4, z // 2)
    p[:, slab] = np.moveaxis(
        rng.dirichlet([4.0, 1.0, 1.0, 0.5], size=(z // 2 - z // 4, y, x)), -1, 0
    )
    p[2, z // 4] = 0.0  # one slice without ilium: its frame stores only zeros
    p[0] = 1.0 - p[1:].sum(axis=0)
    return np.clip(p, 0.0, 1.0)


@pytest.fixture(scope="module")
def written(ct_case, probabilities, tmp_path_factory):
    series, ct, _ = ct_case
    out = tmp_path_factory.mktemp("prob") / "abm_prob_seg.dcm"
    write_fractional_seg(probabilities, ct, series, REGIONS, out, "SYN001")
    return out


def test_round_trip_within_one_step(ct_case, probabilities, written):
    _, ct, _ = ct_case
    back, names = read_fractional_seg(written, ct)
    assert names == REGIONS
    assert back.dtype == np.float32 and back.shape == probabilities.shape
    assert back.shape[1:] == tuple(reversed(ct.GetSize()))
    assert np.abs(back[1:] - probabilities[1:]).max() <= 0.5 * STEP + 1e-6
    np.testing.assert_allclose(back[0], np.clip(1 - back[1:].sum(axis=0), 0, None))
    assert np.abs(back[0] - probabilities[0]).max() <= 3 * STEP
    assert [p.name for p in written.parent.iterdir()] == [written.name]  # no temporary left


def test_export_from_the_4d_nifti_round_trips(converted, ct_case, probabilities, tmp_path):
    """export_probabilities: abm_prob.nii.gz and the CT series in, the same SEG out."""
    _, ct, _ = ct_case
    prob_path = tmp_path / "abm_prob.nii.gz"
    write_channels(probabilities, ct, prob_path)
    out = tmp_path / "abm_prob_seg.dcm"
    series = read_series(converted["raw"] / "CT", "CT", "SYN001")
    export_probabilities("SYN001", prob_path, series, REGIONS, out)
    back, _ = read_fractional_seg(out, ct, regions=REGIONS)
    assert np.abs(back[1:] - probabilities[1:]).max() <= 0.5 * STEP + 1e-6


def test_pydicom_reads_a_probability_seg_of_the_ct(ct_case, probabilities, written):
    """An independent read: the header references the CT, and one voxel stores round(p * 255)."""
    series, _, _ = ct_case
    ct0 = series.datasets[0]
    ct_sops = [str(ds.SOPInstanceUID) for ds in series.datasets]
    seg = pydicom.dcmread(written)
    assert seg.SOPClassUID == SegmentationStorage and seg.Modality == "SEG"
    assert seg.SegmentationType == "FRACTIONAL"
    assert seg.SegmentationFractionalType == "PROBABILITY"
    assert seg.MaximumFractionalValue == 255 and seg.BitsAllocated == 8
    assert seg.FrameOfReferenceUID == ct0.FrameOfReferenceUID
    assert seg.StudyInstanceUID == ct0.StudyInstanceUID and seg.PatientID == ct0.PatientID
    (referenced,) = seg.ReferencedSeriesSequence
    assert referenced.SeriesInstanceUID == ct0.SeriesInstanceUID
    assert {str(i.ReferencedSOPInstanceUID) for i in referenced.ReferencedInstanceSequence} == set(
        ct_sops
    )
    assert [str(s.SegmentLabel) for s in seg.SegmentSequence] == list(REGIONS)
    assert "RESEARCH USE ONLY" in seg.SeriesDescription and len(seg.SeriesDescription) <= 64
    assert int(seg.SeriesNumber) != 901  # the binary SEG's

    frames = seg.pixel_array
    by_key = {}
    for frame, item in zip(frames, seg.PerFrameFunctionalGroupsSequence, strict=True):
        source = item.DerivationImageSequence[0].SourceImageSequence[0]
        number = int(item.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        by_key[(str(source.ReferencedSOPInstanceUID), number)] = frame
        position = item.PlanePositionSequence[0].ImagePositionPatient
        ct_slice = series.datasets[ct_sops.index(str(source.ReferencedSOPInstanceUID))]
        np.testing.assert_allclose(
            [float(v) for v in position], [float(v) for v in ct_slice.ImagePositionPatient]
        )
    assert {uid for uid, _ in by_key} <= set(ct_sops)
    z = probabilities.shape[1]
    assert len(by_key) < 3 * z  # background-only frames are omitted
    assert (ct_sops[z // 4], 2) not in by_key  # so is a frame of all zeros
    k, row, col = z // 3, 7, 11
    p = float(probabilities[2, k, row, col])  # ilium: label value 2, segment 2
    assert 0 < p < 1
    assert by_key[(ct_sops[k], 2)][row, col] == round(p * 255)


def test_bad_probabilities_are_refused_and_nothing_is_written(ct_case, probabilities, tmp_path):
    series, ct, _ = ct_case
    out = tmp_path / "seg.dcm"
    high = probabilities.copy()
    high[1, 0, 0, 0] = 1.5
    with pytest.raises(ValueError, match=r"\[0, 1\]; found values from 0 to 1.5"):
        write_fractional_seg(high, ct, series, REGIONS, out, "SYN001")
    nan = probabilities.copy()
    nan[3, 1, 2, 3] = np.nan
    with pytest.raises(ValueError, match="1 NaN values"):
        write_fractional_seg(nan, ct, series, REGIONS, out, "SYN001")
    with pytest.raises(PatientDataError, match="not \\(channel, z, y, x\\) maps") as caught:
        write_fractional_seg(probabilities[:, :, 1:], ct, series, REGIONS, out, "SYN001")
    assert caught.value.patient == "SYN001" and caught.value.path == str(out)
    with pytest.raises(PatientDataError, match="4 channels .* classes \\[3\\] are in no region"):
        write_fractional_seg(probabilities, ct, series, {"a": 1, "b": 2}, out, "SYN001")
    with pytest.raises(PatientDataError, match="3 channels"):
        write_fractional_seg(probabilities[:3], ct, series, REGIONS, out, "SYN001")
    moved = sitk.Image(ct)
    moved.SetOrigin([v + 1.0 for v in ct.GetOrigin()])
    with pytest.raises(PatientDataError, match="does not lie on the CT series' grid") as caught:
        write_fractional_seg(probabilities, moved, series, REGIONS, out, "SYN001")
    assert "abm_prob.nii.gz" in caught.value.fix
    assert not list(tmp_path.iterdir())


def test_each_reader_refuses_the_other_type(ct_case, written, tmp_path):
    series, ct, label = ct_case
    binary = tmp_path / "abm_seg.dcm"
    write_dicom_seg(label, series, REGIONS, binary, "SYN001")
    with pytest.raises(PatientDataError, match="only FRACTIONAL"):
        read_fractional_seg(binary, ct)
    with pytest.raises(PatientDataError, match="only BINARY"):
        read_dicom_seg(written, ct)


def test_binary_seg_and_rtstruct_say_research_use_only(ct_case, tmp_path):
    series, _, label = ct_case
    write_dicom_seg(label, series, REGIONS, tmp_path / "seg.dcm", "SYN001")
    write_rtstruct(label, series, REGIONS, tmp_path / "rs.dcm", patient="SYN001")
    seg = pydicom.dcmread(tmp_path / "seg.dcm", stop_before_pixels=True)
    rs = pydicom.dcmread(tmp_path / "rs.dcm")
    for description in (seg.SeriesDescription, rs.SeriesDescription):
        assert "RESEARCH USE ONLY" in description and len(description) <= 64
    assert "RESEARCH" in rs.StructureSetLabel and len(rs.StructureSetLabel) <= 16
    assert "not for clinical use" in rs.StructureSetDescription
    assert "research use only" in seg.ContentDescription and len(seg.ContentDescription) <= 64
