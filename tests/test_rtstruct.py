"""RT Structure Sets: ABM labels out as contours on the CT, contoured regions back in as labels.

References are independent of the code under test: shapes defined analytically in world mm
(voxel centres from the converted CT's own geometry), and a circle written straight into a
hand-built RTSTRUCT rather than through the writer.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

from abmseg import __version__
from abmseg.errors import PatientDataError
from abmseg.io.dicom_series import read_series
from abmseg.io.volume import image_like, read_nifti
from abmseg.rt import (
    fill_polygons,
    load_rtstruct,
    mask_to_contours,
    read_rtstruct,
    write_rtstruct,
)
from abmseg.rt.rtstruct import RT_STRUCTURE_SET_STORAGE

REGIONS = {"lumbosacral_spine": 1, "ilium": 2, "lower_pelvis": 3}
ALIASES = {
    "lumbosacral_spine": ["spine", "L-spine", "ABM_spine"],
    "ilium": ["ABM_ilium"],
    "lower_pelvis": ["ABM_lower_pelvis", "LP"],
}
RADIUS = 20.0
AXIS = (-60.0, 30.0)  # cylinder axis (x, y), LPS mm
DISC_SLICES = range(5, 26)


@pytest.fixture(scope="module")
def ct(converted):
    return read_nifti(converted["paths"].ct)


@pytest.fixture(scope="module")
def series(converted):
    return read_series(converted["raw"] / "CT", "CT", "SYN001")


@pytest.fixture(scope="module")
def frame(series):
    return str(series.datasets[0].FrameOfReferenceUID)


def voxel_centres(ct: sitk.Image) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """World x, y, z (each (z, y, x)) of every voxel centre, from the image's own geometry."""
    nx, ny, nz = ct.GetSize()
    k, j, i = np.meshgrid(np.arange(nz), np.arange(ny), np.arange(nx), indexing="ij")
    index = np.stack([i, j, k], axis=-1).reshape(-1, 3) * np.array(ct.GetSpacing())
    world = np.array(ct.GetOrigin()) + index @ np.array(ct.GetDirection()).reshape(3, 3).T
    return tuple(world[:, a].reshape(nz, ny, nx) for a in range(3))


@pytest.fixture(scope="module")
def known_label(ct) -> np.ndarray:
    """A cylinder (region 1), a box with an empty hole and a filled hole (2), the filler (3)."""
    x, y, _ = voxel_centres(ct)
    nz = ct.GetSize()[2]
    slab = np.zeros(nz, dtype=bool)
    label = np.zeros(x.shape, dtype=np.uint8)
    slab[list(DISC_SLICES)] = True
    label[slab[:, None, None] & ((x - AXIS[0]) ** 2 + (y - AXIS[1]) ** 2 <= RADIUS**2)] = 1
    slab[:] = False
    slab[10:31] = True

    def box(x0, x1, y0, y1):
        return slab[:, None, None] & (x >= x0) & (x <= x1) & (y >= y0) & (y <= y1)

    label[box(10, 90, -70, -10)] = 2
    label[box(30, 60, -55, -30)] = 3  # region 3 fills a hole of region 2
    label[box(68, 80, -60, -40)] = 0  # an empty hole of region 2
    return label


@pytest.fixture(scope="module")
def written(tmp_path_factory, ct, series, known_label):
    path = tmp_path_factory.mktemp("rt") / "abm_rtstruct.dcm"
    write_rtstruct(image_like(known_label, ct), series, REGIONS, path, patient="SYN001")
    return path


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b))


# ----------------------------------------------------------------------------- contour primitives


def test_mask_contours_fill_back_exactly():
    rng = np.random.default_rng(3)
    for _ in range(50):
        mask = rng.random((23, 31)) < rng.uniform(0.2, 0.8)  # diagonal touches, holes, edges
        assert np.array_equal(fill_polygons(mask_to_contours(mask), mask.shape), mask)
    assert mask_to_contours(np.zeros((4, 4), dtype=bool)) == []
    square = np.zeros((6, 6), dtype=bool)
    square[1:5, 1:5] = True
    (outline,) = mask_to_contours(square)
    # Half a pixel outside the border centres, corners cut: 8 vertices, no collinear ones.
    assert len(outline) == 8
    assert outline[:, 0].min() == pytest.approx(0.5) and outline[:, 0].max() == pytest.approx(4.5)


# ----------------------------------------------------------------------------- round trip


def test_round_trip_of_a_known_shape(written, ct, frame, known_label):
    result = load_rtstruct(written, ct, "SYN001", REGIONS, ALIASES, frame_of_reference=frame)
    back = sitk.GetArrayFromImage(result.image)
    assert result.image.GetPixelID() == sitk.sitkUInt8
    assert result.image.GetSize() == ct.GetSize()
    assert np.allclose(result.image.GetOrigin(), ct.GetOrigin())
    assert result.matched == {name: name for name in REGIONS}
    assert result.ignored == [] and result.overlap_voxels == 0
    for value in REGIONS.values():
        assert dice(back == value, known_label == value) > 0.98
    # Contours through half-pixel edges and pixel-centre filling: the round trip is lossless.
    assert np.array_equal(back, known_label)

    pixel_mm2 = ct.GetSpacing()[0] * ct.GetSpacing()[1]
    band_mm2 = 2 * math.pi * RADIUS * max(ct.GetSpacing()[:2]) / 2  # half a pixel of perimeter
    for k in DISC_SLICES:
        area = np.count_nonzero(back[k] == 1) * pixel_mm2
        assert abs(area - math.pi * RADIUS**2) < band_mm2, (k, area)


def test_written_contours_lie_on_the_cylinder_and_their_slices(written, series, ct):
    ds = pydicom.dcmread(written)
    positions = {str(s.SOPInstanceUID): float(s.ImagePositionPatient[2]) for s in series.datasets}
    (cylinder,) = [c for c in ds.ROIContourSequence if c.ReferencedROINumber == 1]
    slices = set()
    for contour in cylinder.ContourSequence:
        points = np.array([float(v) for v in contour.ContourData]).reshape(-1, 3)
        assert contour.NumberOfContourPoints == len(points)
        (image,) = contour.ContourImageSequence
        assert np.allclose(points[:, 2], positions[image.ReferencedSOPInstanceUID], atol=1e-3)
        slices.add(image.ReferencedSOPInstanceUID)
        # Outlines pass between inside and outside voxel centres: within a pixel of the circle.
        radii = np.hypot(points[:, 0] - AXIS[0], points[:, 1] - AXIS[1])
        assert np.all(np.abs(radii - RADIUS) < max(ct.GetSpacing()[:2]))
    assert len(slices) == len(DISC_SLICES)


def test_written_file_is_a_valid_rtstruct_of_the_ct(written, series, frame):
    ds = pydicom.dcmread(written)
    first = series.datasets[0]
    assert ds.file_meta.MediaStorageSOPClassUID == RT_STRUCTURE_SET_STORAGE
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert ds.SOPClassUID == RT_STRUCTURE_SET_STORAGE and ds.Modality == "RTSTRUCT"
    for keyword in ("StructureSetLabel", "StructureSetDate", "StructureSetTime", "SeriesNumber"):
        assert keyword in ds
    assert (ds.Manufacturer, ds.ManufacturerModelName) == ("abmseg", "abmseg")
    assert ds.SoftwareVersions == __version__

    ct_sops = {str(s.SOPInstanceUID) for s in series.datasets}
    ct_uids = ct_sops | {
        str(first.StudyInstanceUID),
        str(first.SeriesInstanceUID),
        str(first.FrameOfReferenceUID),
    }
    for uid in (ds.SOPInstanceUID, ds.SeriesInstanceUID):
        assert UID(uid).is_valid and uid not in ct_uids

    (ref_frame,) = ds.ReferencedFrameOfReferenceSequence
    assert ref_frame.FrameOfReferenceUID == frame
    (study,) = ref_frame.RTReferencedStudySequence
    assert study.ReferencedSOPInstanceUID == first.StudyInstanceUID
    (ref_series,) = study.RTReferencedSeriesSequence
    assert ref_series.SeriesInstanceUID == first.SeriesInstanceUID
    assert {i.ReferencedSOPInstanceUID for i in ref_series.ContourImageSequence} == ct_sops
    assert {i.ReferencedSOPClassUID for i in ref_series.ContourImageSequence} == {first.SOPClassUID}

    rois = {r.ROINumber: r for r in ds.StructureSetROISequence}
    assert {r.ROIName for r in rois.values()} == set(REGIONS)
    assert {r.ReferencedFrameOfReferenceUID for r in rois.values()} == {frame}
    assert {r.ROINumber: r.ROIName for r in rois.values()} == {v: k for k, v in REGIONS.items()}
    for roi_contour in ds.ROIContourSequence:
        assert roi_contour.ReferencedROINumber in rois and len(roi_contour.ROIDisplayColor) == 3
        for contour in roi_contour.ContourSequence:
            assert contour.ContourGeometricType == "CLOSED_PLANAR"
            for image in contour.ContourImageSequence:
                assert image.ReferencedSOPInstanceUID in ct_sops
                assert image.ReferencedSOPClassUID == first.SOPClassUID
    observations = ds.RTROIObservationsSequence
    assert {o.ReferencedROINumber for o in observations} == set(rois)
    assert {o.RTROIInterpretedType for o in observations} == {"ORGAN"}
    assert {str(o.ROIInterpreter) for o in observations} == {""}

    # Identity: the CT's own patient and study values, and nothing else that names a person.
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyID"):
        assert ds[keyword].value == first[keyword].value
    for keyword in ("StudyInstanceUID", "StudyDate", "StudyTime", "AccessionNumber"):
        assert ds[keyword].value == first[keyword].value
    people = {str(first.PatientName), str(first.get("ReferringPhysicianName", "")), ""}
    names = []
    ds.walk(lambda _, elem: names.append(str(elem.value)) if elem.VR == "PN" else None)
    assert set(names) <= people
    extra = {e.keyword for e in ds if e.keyword.startswith(("Patient", "OtherPatient"))} - {
        e.keyword for e in first if e.keyword.startswith(("Patient", "OtherPatient"))
    }
    assert extra == set()
    for keyword in ("PatientAge", "PatientWeight", "PatientSize", "InstitutionName"):
        assert keyword not in ds
    assert not list(written.parent.glob(".*part*"))  # written atomically


def test_each_write_gets_new_uids(tmp_path, ct, series, known_label):
    paths = [tmp_path / f"rs{i}.dcm" for i in range(2)]
    one_slice = known_label.copy()
    one_slice[:12] = 0
    one_slice[13:] = 0
    for path in paths:
        write_rtstruct(image_like(one_slice, ct), series, REGIONS, path)
    a, b = (pydicom.dcmread(p) for p in paths)
    assert a.SOPInstanceUID != b.SOPInstanceUID and a.SeriesInstanceUID != b.SeriesInstanceUID


def test_an_empty_label_gives_every_region_as_an_roi_without_contours(tmp_path, ct, series, frame):
    """No ABM predicted: the structure set still names the three regions, each without contours,
    and reads back as an all-zero label."""
    path = tmp_path / "empty.dcm"
    write_rtstruct(image_like(np.zeros(ct.GetSize()[::-1], np.uint8), ct), series, REGIONS, path)
    ds = pydicom.dcmread(path)
    assert [(r.ROINumber, r.ROIName) for r in ds.StructureSetROISequence] == [
        (v, k) for k, v in REGIONS.items()
    ]
    assert all("ContourSequence" not in item for item in ds.ROIContourSequence)
    back = load_rtstruct(path, ct, "SYN001", REGIONS, ALIASES, frame_of_reference=frame)
    assert not np.any(sitk.GetArrayFromImage(back.image))


def test_writer_refuses_a_label_off_the_ct_grid_or_with_unknown_values(
    tmp_path, ct, series, known_label
):
    shifted = image_like(known_label, ct)
    shifted.SetOrigin([v + 5.0 for v in ct.GetOrigin()])
    with pytest.raises(PatientDataError, match="not the CT series' grid"):
        write_rtstruct(shifted, series, REGIONS, tmp_path / "rs.dcm", patient="SYN001")
    with pytest.raises(PatientDataError, match=r"label values \[3\] are not in the region table"):
        write_rtstruct(image_like(known_label, ct), series, {"a": 1, "b": 2}, tmp_path / "x.dcm")
    assert not list(tmp_path.iterdir())


# ----------------------------------------------------------------------------- hand-built files


def rtstruct_dataset(frame: str, rois: list[tuple[int, str, list[np.ndarray]]]) -> Dataset:
    """A minimal RTSTRUCT, built here rather than by the writer: (number, name, contours mm)."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = RT_STRUCTURE_SET_STORAGE
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = RT_STRUCTURE_SET_STORAGE
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality = "RTSTRUCT"
    ds.ReferencedFrameOfReferenceSequence = DicomSequence([Dataset()])
    ds.ReferencedFrameOfReferenceSequence[0].FrameOfReferenceUID = frame
    ds.StructureSetROISequence = DicomSequence()
    ds.ROIContourSequence = DicomSequence()
    for number, name, contours in rois:
        roi = Dataset()
        roi.ROINumber, roi.ROIName, roi.ReferencedFrameOfReferenceUID = number, name, frame
        ds.StructureSetROISequence.append(roi)
        item = Dataset()
        item.ReferencedROINumber = number
        item.ContourSequence = DicomSequence()
        for points in contours:
            contour = Dataset()
            contour.ContourGeometricType = "CLOSED_PLANAR"
            contour.NumberOfContourPoints = len(points)
            contour.ContourData = [f"{v:.4f}" for v in points.ravel()]
            item.ContourSequence.append(contour)
        ds.ROIContourSequence.append(item)
    return ds


def circle(centre: tuple[float, float], radius: float, z: float, n: int = 720) -> np.ndarray:
    angle = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.column_stack(
        [centre[0] + radius * np.cos(angle), centre[1] + radius * np.sin(angle), np.full(n, z)]
    )


def save(ds: Dataset, path):
    ds.save_as(path, enforce_file_format=True)
    return path


def slice_z(ct: sitk.Image, k: int) -> float:
    return ct.TransformIndexToPhysicalPoint((0, 0, k))[2]


def test_an_analytic_circle_and_ring_fill_as_expected(tmp_path, ct, frame):
    centre, r, big = (40.3, -25.7), 30.0, 45.0
    z12, z20 = slice_z(ct, 12), slice_z(ct, 20)
    ds = rtstruct_dataset(
        frame,
        [
            (7, "ABM_spine", [circle(centre, r, z12)]),
            # A ring: outer and inner outline in one slice of one ROI (even-odd: the inner is a
            # hole), given inner first to show order does not matter.
            (8, "ilium", [circle(centre, r, z20), circle(centre, big, z20)]),
        ],
    )
    label = read_rtstruct(
        save(ds, tmp_path / "rs.dcm"), ct, "SYN001", REGIONS, ALIASES, frame_of_reference=frame
    )
    back = sitk.GetArrayFromImage(label)
    x, y, _ = voxel_centres(ct)
    dist = np.hypot(x[0] - centre[0], y[0] - centre[1])
    # Exact reference: voxel centres inside the circle(s), except those within 0.01 mm of an
    # outline (a 720-gon strays 0.0006 mm from its circle).
    disc, ring = dist < r, (dist >= r) & (dist < big)
    unsure = (np.abs(dist - r) < 0.01) | (np.abs(dist - big) < 0.01)
    assert np.array_equal((back[12] == 1)[~unsure], disc[~unsure])
    assert np.array_equal((back[20] == 2)[~unsure], ring[~unsure])
    assert np.count_nonzero(back) == np.count_nonzero(back[12]) + np.count_nonzero(back[20])

    pixel = max(ct.GetSpacing()[:2])
    pixel_mm2 = ct.GetSpacing()[0] * ct.GetSpacing()[1]
    area = np.count_nonzero(back[12] == 1) * pixel_mm2
    assert abs(area - math.pi * r**2) < 2 * math.pi * r * pixel / 2
    ring_area = np.count_nonzero(back[20] == 2) * pixel_mm2
    assert abs(ring_area - math.pi * (big**2 - r**2)) < 2 * math.pi * (big + r) * pixel / 2
    # Placement in x and y (a swap or a sign error moves the centroid by tens of mm).
    rows, cols = np.nonzero(back[12] == 1)
    assert abs(x[0][rows, cols].mean() - centre[0]) < pixel / 2
    assert abs(y[0][rows, cols].mean() - centre[1]) < pixel / 2


def test_aliases_are_case_insensitive_and_unknown_rois_ignored(
    tmp_path, written, ct, frame, known_label, converted, caplog
):
    ds = pydicom.dcmread(written)
    renamed = {1: "l-SPINE", 2: " Abm_Ilium ", 3: "lp"}
    for roi in ds.StructureSetROISequence:
        roi.ROIName = renamed[roi.ROINumber]
    body = rtstruct_dataset(frame, [(99, "BODY", [circle((0, 0), 200, slice_z(ct, 3))])])
    ds.StructureSetROISequence.extend(body.StructureSetROISequence)
    ds.ROIContourSequence.extend(body.ROIContourSequence)
    path = save(ds, tmp_path / "renamed.dcm")
    # The frame digest that conversion keeps in meta.json identifies the CT as well as its UID.
    digest = converted["meta"]["ct"]["frame_of_reference_sha256_16"]
    for reference in (frame, digest):
        result = load_rtstruct(path, ct, "SYN001", REGIONS, ALIASES, frame_of_reference=reference)
        assert np.array_equal(sitk.GetArrayFromImage(result.image), known_label)
    assert result.matched == {
        "lumbosacral_spine": "l-SPINE",
        "ilium": "Abm_Ilium",
        "lower_pelvis": "lp",
    }
    assert result.ignored == ["BODY"]
    with caplog.at_level(logging.INFO, logger="abmseg.rt.rtstruct"):
        read_rtstruct(path, ct, "SYN001", REGIONS, ALIASES, frame_of_reference=frame)
    assert "ignored: 'BODY'" in caplog.text


def test_overlapping_regions_keep_the_higher_value(tmp_path, ct, frame):
    z = slice_z(ct, 8)
    ds = rtstruct_dataset(
        frame, [(1, "spine", [circle((0, 0), 30, z)]), (2, "ilium", [circle((20, 0), 30, z)])]
    )
    result = load_rtstruct(
        save(ds, tmp_path / "rs.dcm"), ct, None, REGIONS, ALIASES, frame_of_reference=frame
    )
    back = sitk.GetArrayFromImage(result.image)[8]
    assert result.overlap_voxels > 0
    assert np.count_nonzero(back == 2) > np.count_nonzero(back == 1) > 0
    assert "voxels in two regions" in result.summary()


# ----------------------------------------------------------------------------- refusals


def refused(path, ct, frame, **kwargs) -> str:
    with pytest.raises(PatientDataError) as info:
        load_rtstruct(
            path, ct, "SYN001", REGIONS, kwargs.pop("aliases", ALIASES), frame_of_reference=frame
        )
    message = str(info.value)
    assert "patient SYN001" in message and str(path) in message and "Fix:" in message
    return message


def test_refuses_a_file_that_is_not_an_rtstruct(tmp_path, series, ct, frame):
    assert "not an RTSTRUCT (Modality 'CT'" in refused(series.paths[0], ct, frame)
    text = tmp_path / "notes.txt"
    text.write_text("spine contours: see planning system\n")
    assert "not a readable DICOM file" in refused(text, ct, frame)


def test_refuses_another_frame_of_reference(tmp_path, ct, frame):
    other = generate_uid()
    ds = rtstruct_dataset(other, [(1, "spine", [circle((0, 0), 30, slice_z(ct, 8))])])
    message = refused(save(ds, tmp_path / "rs.dcm"), ct, frame)
    assert f"frame of reference '{other}', not the CT's" in message


def test_refuses_contours_between_ct_slices_or_outside_them(tmp_path, ct, frame):
    step = ct.GetSpacing()[2]
    near = rtstruct_dataset(
        frame, [(1, "spine", [circle((0, 0), 30, slice_z(ct, 8) + 0.2 * step)])]
    )
    result = load_rtstruct(
        save(near, tmp_path / "near.dcm"), ct, None, REGIONS, ALIASES, frame_of_reference=frame
    )
    assert np.count_nonzero(sitk.GetArrayFromImage(result.image)[8]) > 0  # within 1/4 slice
    off = rtstruct_dataset(frame, [(1, "spine", [circle((0, 0), 30, slice_z(ct, 8) + 0.4 * step)])])
    message = refused(save(off, tmp_path / "off.dcm"), ct, frame)
    assert "0.40 of a slice step from the nearest CT slice" in message
    beyond = rtstruct_dataset(frame, [(1, "spine", [circle((0, 0), 30, slice_z(ct, 0) - step)])])
    assert "outside the CT's 40 slices" in refused(save(beyond, tmp_path / "b.dcm"), ct, frame)


def test_refuses_when_no_roi_matches_a_region(tmp_path, ct, frame):
    z = slice_z(ct, 8)
    ds = rtstruct_dataset(
        frame, [(1, "BODY", [circle((0, 0), 100, z)]), (2, "Bladder", [circle((0, 0), 20, z)])]
    )
    message = refused(save(ds, tmp_path / "rs.dcm"), ct, frame)
    assert "no ROI matches a region" in message
    assert "['BODY', 'Bladder']" in message
    assert "lumbosacral_spine: lumbosacral_spine, spine, L-spine, ABM_spine" in message


def test_refuses_two_rois_for_one_region(tmp_path, ct, frame):
    z = slice_z(ct, 8)
    ds = rtstruct_dataset(
        frame, [(1, "Spine", [circle((0, 0), 20, z)]), (2, "ABM_SPINE", [circle((50, 0), 20, z)])]
    )
    message = refused(save(ds, tmp_path / "rs.dcm"), ct, frame)
    assert "ROIs 'Spine', 'ABM_SPINE' all map to region 'lumbosacral_spine'" in message


def test_an_alias_claimed_by_two_regions_is_a_config_error(tmp_path, ct, frame):
    with pytest.raises(ValueError, match="alias of both"):
        load_rtstruct(
            tmp_path / "unused.dcm",
            ct,
            None,
            REGIONS,
            {"ilium": ["pelvis"], "lower_pelvis": ["PELVIS"]},
            frame_of_reference=frame,
        )
