"""DICOM SEG export of ABM label maps: written on the raw CT series, read back voxel for voxel."""

from __future__ import annotations

import shutil

import highdicom as hd
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.uid import SegmentationStorage

from abmseg import __version__
from abmseg.errors import PatientDataError
from abmseg.io.convert import convert_ct
from abmseg.io.dicom_series import read_series
from abmseg.io.volume import Geometry
from abmseg.rt.seg import read_dicom_seg, write_dicom_seg

REGIONS = {"lumbosacral_spine": 1, "ilium": 2, "lower_pelvis": 3}


@pytest.fixture(scope="module")
def ct_case(converted):
    """SYN001's raw CT series, its converted CT and its ABM label (on the CT grid)."""
    series = read_series(converted["raw"] / "CT", "CT", "SYN001")
    ct = sitk.ReadImage(str(converted["paths"].ct))
    label = sitk.ReadImage(str(converted["paths"].label))
    assert Geometry.of(label).matches(series.geometry)
    assert set(np.unique(sitk.GetArrayViewFromImage(label))) == {0, 1, 2, 3}
    return series, ct, label


@pytest.fixture(scope="module")
def written(ct_case, tmp_path_factory):
    series, ct, label = ct_case
    out = tmp_path_factory.mktemp("seg") / "abm_seg.dcm"
    write_dicom_seg(label, series, REGIONS, out, "SYN001")
    return out


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.count_nonzero(a & b) / max(np.count_nonzero(a) + np.count_nonzero(b), 1)


def test_round_trip_is_voxel_identical(ct_case, written):
    _, ct, label = ct_case
    back = read_dicom_seg(written, ct)
    assert back.GetPixelID() == sitk.sitkUInt8
    assert Geometry.of(back) == Geometry.of(ct)
    got, want = sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(label)
    for value in REGIONS.values():
        assert _dice(got == value, want == value) == 1.0
    np.testing.assert_array_equal(got, want)
    # The regions table, when given, maps segment labels to values the same way.
    again = read_dicom_seg(written, ct, regions=REGIONS)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(again), want)
    assert [p.name for p in written.parent.iterdir()] == [written.name]  # no temporary left


def test_highdicom_reads_the_same_label_per_ct_slice(ct_case, written):
    """An independent read: highdicom's own lookup of the frames by referenced CT instance."""
    series, _, label = ct_case
    seg = hd.seg.segread(written)
    uids = [str(ds.SOPInstanceUID) for ds in series.datasets]
    per_segment = seg.get_pixels_by_source_instance(uids, ignore_spatial_locations=False)
    numbers = {str(item.SegmentLabel): int(item.SegmentNumber) for item in seg.SegmentSequence}
    want = sitk.GetArrayViewFromImage(label)
    for name, value in REGIONS.items():
        np.testing.assert_array_equal(per_segment[..., numbers[name] - 1] != 0, want == value)


def test_frames_lie_on_the_ct_slices_they_reference(ct_case, written):
    """Each stored frame's position equals its referenced CT slice's, and its pixels are the label
    slice at that world position (highdicom re-sorts frames: the file order is not the input's)."""
    series, _, label = ct_case
    by_uid = {str(ds.SOPInstanceUID): ds for ds in series.datasets}
    seg = pydicom.dcmread(written)
    frames = seg.pixel_array
    label_array = sitk.GetArrayViewFromImage(label)
    values = {
        int(item.SegmentNumber): REGIONS[str(item.SegmentLabel)] for item in seg.SegmentSequence
    }
    for frame, item in zip(frames, seg.PerFrameFunctionalGroupsSequence, strict=True):
        source = item.DerivationImageSequence[0].SourceImageSequence[0]
        ct_slice = by_uid[str(source.ReferencedSOPInstanceUID)]
        position = [float(v) for v in item.PlanePositionSequence[0].ImagePositionPatient]
        np.testing.assert_allclose(position, [float(v) for v in ct_slice.ImagePositionPatient])
        index = label.TransformPhysicalPointToIndex(position)
        assert index[:2] == (0, 0)
        number = int(item.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        np.testing.assert_array_equal(frame != 0, label_array[index[2]] == values[number])


def test_seg_references_the_ct_and_carries_no_new_identity(ct_case, written):
    series, _, _ = ct_case
    ct0 = series.datasets[0]
    seg = pydicom.dcmread(written)
    assert seg.SOPClassUID == SegmentationStorage
    assert seg.file_meta.MediaStorageSOPClassUID == SegmentationStorage
    assert seg.Modality == "SEG" and seg.SegmentationType == "BINARY"
    assert seg.StudyInstanceUID == ct0.StudyInstanceUID
    assert seg.FrameOfReferenceUID == ct0.FrameOfReferenceUID
    assert seg.PatientID == ct0.PatientID and seg.PatientName == ct0.PatientName
    ct_uids = {str(ct0.StudyInstanceUID), str(ct0.SeriesInstanceUID), str(ct0.FrameOfReferenceUID)}
    ct_uids |= {str(ds.SOPInstanceUID) for ds in series.datasets}
    assert str(seg.SOPInstanceUID) not in ct_uids and str(seg.SeriesInstanceUID) not in ct_uids
    assert seg.SeriesInstanceUID != seg.SOPInstanceUID
    (referenced,) = seg.ReferencedSeriesSequence
    assert referenced.SeriesInstanceUID == ct0.SeriesInstanceUID
    assert {str(i.ReferencedSOPInstanceUID) for i in referenced.ReferencedInstanceSequence} == {
        str(ds.SOPInstanceUID) for ds in series.datasets
    }
    sources = {
        str(item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID)
        for item in seg.PerFrameFunctionalGroupsSequence
    }
    assert sources and sources <= {str(ds.SOPInstanceUID) for ds in series.datasets}
    assert seg.Manufacturer == "abmseg" and seg.DeviceSerialNumber == "none"
    assert seg.SoftwareVersions == __version__
    assert [str(s.SegmentLabel) for s in seg.SegmentSequence] == list(REGIONS)
    for segment in seg.SegmentSequence:
        algorithm = segment.SegmentationAlgorithmIdentificationSequence[0]
        assert segment.SegmentAlgorithmType == "AUTOMATIC"
        assert algorithm.AlgorithmName == "abmseg" and algorithm.AlgorithmVersion == __version__
        assert algorithm.AlgorithmFamilyCodeSequence[0].CodeValue == "123110"
        assert segment.SegmentedPropertyCategoryCodeSequence[0].CodeValue == "85756007"
        assert segment.SegmentedPropertyTypeCodeSequence[0].CodeValue == "14016003"


def test_absent_regions_are_empty_segments(ct_case, tmp_path):
    """Region 2 absent: still segments 1, 2, 3 (2 with no frames), read back as values 1 and 3."""
    series, ct, label = ct_case
    array = sitk.GetArrayFromImage(label)
    array[array == 2] = 0
    partial = sitk.GetImageFromArray(array)
    partial.CopyInformation(label)
    out = tmp_path / "partial.dcm"
    write_dicom_seg(partial, series, REGIONS, out, "SYN001")
    seg = pydicom.dcmread(out)
    assert [(int(s.SegmentNumber), str(s.SegmentLabel)) for s in seg.SegmentSequence] == [
        (1, "lumbosacral_spine"),
        (2, "ilium"),
        (3, "lower_pelvis"),
    ]
    framed = {
        int(f.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        for f in seg.PerFrameFunctionalGroupsSequence
    }
    assert framed == {1, 3}
    np.testing.assert_array_equal(sitk.GetArrayFromImage(read_dicom_seg(out, ct)), array)


def test_an_empty_label_gives_a_seg_with_empty_segments(ct_case, tmp_path):
    """No ABM predicted: a valid SEG saying so (three empty segments), read back as all zero."""
    series, ct, label = ct_case
    empty = sitk.Image(label.GetSize(), sitk.sitkUInt8)
    empty.CopyInformation(label)
    out = tmp_path / "empty.dcm"
    write_dicom_seg(empty, series, REGIONS, out, "SYN001")
    seg = hd.seg.segread(out)
    assert len(seg.SegmentSequence) == 3
    assert not np.any(seg.pixel_array)
    assert not np.any(sitk.GetArrayFromImage(read_dicom_seg(out, ct)))


def test_series_with_the_slice_normal_pointing_to_the_feet(converted, tmp_path):
    """Columns running anterior-ward flip the slice normal: the series' volume then runs head to
    feet (direction z = -1) and the SEG must still land on the right slices."""
    folder = tmp_path / "CT"
    shutil.copytree(converted["raw"] / "CT", folder)
    for path in folder.iterdir():
        ds = pydicom.dcmread(path)
        ds.ImageOrientationPatient = [1, 0, 0, 0, -1, 0]
        ds.save_as(path)
    series = read_series(folder, "CT", "SYN001")
    assert np.reshape(series.geometry.direction, (3, 3))[2, 2] == -1
    ct, _ = convert_ct(folder, "SYN001")
    rng = np.random.default_rng(3)
    array = np.zeros(sitk.GetArrayViewFromImage(ct).shape, dtype=np.uint8)
    array[2:9, 10:30, 40:70] = 1  # asymmetric boxes: any flip or shift would show
    array[15:16, 60:62, 5:9] = 2
    array[30:, 90:100, 100:127] = rng.integers(0, 2, size=(array.shape[0] - 30, 10, 27)) * 3
    label = sitk.GetImageFromArray(array)
    label.CopyInformation(ct)
    out = tmp_path / "seg.dcm"
    write_dicom_seg(label, series, REGIONS, out, "SYN001")
    np.testing.assert_array_equal(sitk.GetArrayFromImage(read_dicom_seg(out, ct)), array)
    # Slice 2 of the label is the CT file at that world position.
    seg = pydicom.dcmread(out)
    at_z = {
        float(f.PlanePositionSequence[0].ImagePositionPatient[2]): f
        for f in seg.PerFrameFunctionalGroupsSequence
        if f.SegmentIdentificationSequence[0].ReferencedSegmentNumber == 1
    }
    z2 = ct.TransformIndexToPhysicalPoint((0, 0, 2))[2]
    source = at_z[z2].DerivationImageSequence[0].SourceImageSequence[0]
    assert source.ReferencedSOPInstanceUID == series.datasets[2].SOPInstanceUID


def test_label_off_the_ct_grid_is_refused(ct_case, tmp_path):
    series, _, label = ct_case
    shifted = sitk.Image(label)
    origin = list(label.GetOrigin())
    origin[2] += 1.0
    shifted.SetOrigin(origin)
    out = tmp_path / "seg.dcm"
    with pytest.raises(PatientDataError, match="does not lie on the CT series' grid") as caught:
        write_dicom_seg(shifted, series, REGIONS, out, "SYN001")
    assert caught.value.patient == "SYN001" and caught.value.path == str(out)
    assert "abm_ct.nii.gz" in caught.value.fix
    cropped = label[:, :, 1:]
    with pytest.raises(PatientDataError, match="grid"):
        write_dicom_seg(cropped, series, REGIONS, out, "SYN001")
    assert not list(tmp_path.iterdir())


def test_unknown_label_values_and_bad_region_tables_are_refused(ct_case, tmp_path):
    series, _, label = ct_case
    array = sitk.GetArrayFromImage(label)
    array[0, 0, 0] = 7
    odd = sitk.GetImageFromArray(array)
    odd.CopyInformation(label)
    out = tmp_path / "seg.dcm"
    with pytest.raises(PatientDataError, match=r"values not in the regions table \(7;") as caught:
        write_dicom_seg(odd, series, REGIONS, out, "SYN001")
    assert "regions table" in caught.value.fix
    with pytest.raises(PatientDataError, match="not in the regions table"):
        write_dicom_seg(label, series, {"lumbosacral_spine": 1, "ilium": 2}, out, "SYN001")
    with pytest.raises(ValueError, match="share the label value"):
        write_dicom_seg(label, series, {"a": 1, "b": 1}, out, "SYN001")
    assert not list(tmp_path.iterdir())


def test_reading_onto_another_grid_is_refused(ct_case, written):
    _, ct, _ = ct_case
    other = sitk.Image(ct.GetSize()[0] // 2, ct.GetSize()[1] // 2, ct.GetSize()[2], sitk.sitkInt16)
    with pytest.raises(PatientDataError, match="pixels"):
        read_dicom_seg(written, other)
    moved = sitk.Image(ct)
    moved.SetOrigin([v + 3.0 for v in ct.GetOrigin()])
    with pytest.raises(PatientDataError, match="does not lie on a slice of the CT grid"):
        read_dicom_seg(written, moved)
