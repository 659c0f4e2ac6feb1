"""DICOM RT Structure Sets: ABM labels out as contours, contoured ABM regions in as labels.

Writing: one ROI per region of the table (empty where the label lacks it), one CLOSED_PLANAR
contour per outline (outer borders and holes) per axial slice, each referencing its CT slice.
Patient and study attributes are copied from the CT, nothing else identifying is added. Label,
series description and structure set description say research use only: a research model's
contours, not validated for clinical use.

Reading: ROI names are matched to regions case-insensitively, through configured aliases; the
matched ROIs' contours are filled onto the CT grid with the even-odd rule (holes cancel). ROIs that
match no region (BODY, PTV...) are ignored and reported.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import ImplicitVRLittleEndian, generate_uid

from abmseg import __version__
from abmseg.atomic import write_atomic
from abmseg.errors import PatientDataError
from abmseg.io.dicom_series import DicomSeries, uid_digest
from abmseg.io.volume import Geometry, image_like
from abmseg.rt.contours import fill_polygons, mask_to_contours

log = logging.getLogger(__name__)

RT_STRUCTURE_SET_STORAGE = "1.2.840.10008.5.1.4.1.1.481.3"
# VR limits: StructureSetLabel SH (16 characters), SeriesDescription LO (64).
STRUCTURE_SET_LABEL = "ABM RESEARCH"
SERIES_DESCRIPTION = "abmseg active bone marrow RESEARCH USE ONLY"
RESEARCH_USE = "research use only, not for clinical use"
# The conventional (retired Detached Study Management) class of RTReferencedStudySequence items.
STUDY_REFERENCE_CLASS = "1.2.840.10008.3.1.2.3.1"
# Patient and General Study module attributes copied from the CT, when the CT has them.
PATIENT_STUDY_KEYWORDS = (
    "SpecificCharacterSet",
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
    "StudyDescription",
)
# Type 2 attributes of those modules: present (empty when the CT lacks them).
TYPE2_KEYWORDS = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
)
DEFAULT_COLOURS = ((230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180))
# A contour must lie within this fraction of the slice step of a CT slice centre.
SLICE_TOLERANCE = 0.25


# --------------------------------------------------------------------------------------- writing


def _item(**values) -> Dataset:
    ds = Dataset()
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    return ds


def _image_ref(ct: Dataset) -> Dataset:
    return _item(ReferencedSOPClassUID=ct.SOPClassUID, ReferencedSOPInstanceUID=ct.SOPInstanceUID)


def _ds_text(values: np.ndarray) -> list[str]:
    """Coordinates as decimal strings (0.001 mm: far below any CT pixel, short in the file)."""
    texts = (f"{v:.3f}".rstrip("0").rstrip(".") for v in values.ravel())
    return ["0" if t in ("", "-0") else t for t in texts]


def _slice_frame(ct: Dataset) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Position, row/column directions and (row, column) spacing of one CT slice."""
    iop = np.array([float(v) for v in ct.ImageOrientationPatient])
    ipp = np.array([float(v) for v in ct.ImagePositionPatient])
    spacing = np.array([float(v) for v in ct.PixelSpacing])
    return ipp, iop[:3], iop[3:], spacing


def index_to_patient(points: np.ndarray, ct: Dataset) -> np.ndarray:
    """(row, column) indices of a CT slice -> LPS mm, from the slice's own position tags.

    DICOM: P = ImagePositionPatient + column * PixelSpacing[1] * IOP[:3] (the row direction)
    + row * PixelSpacing[0] * IOP[3:] (the column direction).
    """
    ipp, row_dir, col_dir, spacing = _slice_frame(ct)
    return (
        ipp
        + np.outer(points[:, 1] * spacing[1], row_dir)
        + np.outer(points[:, 0] * spacing[0], col_dir)
    )


def _copy_identity(target: Dataset, ct: Dataset) -> None:
    for keyword in PATIENT_STUDY_KEYWORDS:
        if keyword in ct:
            target[keyword] = ct[keyword]
        elif keyword in TYPE2_KEYWORDS:
            setattr(target, keyword, "")


def write_rtstruct(
    label: sitk.Image,
    ct_series: DicomSeries,
    regions: Mapping[str, int],
    out_path: str | Path,
    *,
    patient: str | None = None,
    colours: Mapping[str, Sequence[int]] | None = None,
    structure_set_label: str = STRUCTURE_SET_LABEL,
    series_description: str = SERIES_DESCRIPTION,
    software: str = "abmseg",
    version: str = __version__,
) -> None:
    """Write ``label`` (region values on the CT grid) as an RT Structure Set of ``ct_series``.

    One ROI per region of ``regions`` (named from it, numbered by its value; a region absent from
    the label is an ROI without contours, so every export names the same regions), one
    CLOSED_PLANAR contour per outline and slice, referencing that CT slice. New, unique
    SOP instance and series UIDs; the file is written atomically (Implicit VR Little Endian, whose
    32-bit lengths hold contours of any size; explicit VR DS elements stop at 64 KiB).
    """
    by_value = _checked_region_values(label, ct_series, regions, out_path, patient)
    array = sitk.GetArrayViewFromImage(label)
    first = ct_series.datasets[0]
    frame_uid = str(first.FrameOfReferenceUID)
    ds = _structure_set_header(first, structure_set_label, series_description, software, version)
    ds.ReferencedFrameOfReferenceSequence = _referenced_frame(ct_series, frame_uid)
    rois, roi_contours, observations = [], [], []
    for n, value in enumerate(sorted(by_value)):  # every region, found or not
        name = by_value[value]
        colour = (colours or {}).get(name, DEFAULT_COLOURS[n % len(DEFAULT_COLOURS)])
        rois.append(
            _item(
                ROINumber=value,
                ReferencedFrameOfReferenceUID=frame_uid,
                ROIName=name,
                ROIGenerationAlgorithm="AUTOMATIC",
                ROIGenerationDescription=f"{software} {version}",
            )
        )
        roi_contours.append(_roi_contour(array == value, value, colour, ct_series))
        observations.append(
            _item(
                ObservationNumber=value,
                ReferencedROINumber=value,
                RTROIInterpretedType="ORGAN",
                ROIInterpreter="",
            )
        )
    ds.StructureSetROISequence = DicomSequence(rois)
    ds.ROIContourSequence = DicomSequence(roi_contours)
    ds.RTROIObservationsSequence = DicomSequence(observations)
    write_atomic(out_path, lambda tmp: ds.save_as(tmp, enforce_file_format=True))


def _checked_region_values(
    label: sitk.Image,
    ct_series: DicomSeries,
    regions: Mapping[str, int],
    out_path: str | Path,
    patient: str | None,
) -> dict[int, str]:
    """{value: region name}, once the label lies on the CT grid and holds only region values."""
    geometry = Geometry.of(label)
    if not geometry.matches(ct_series.geometry):
        raise PatientDataError(
            patient,
            out_path,
            f"the label's grid {geometry.as_dict()} is not the CT series' grid "
            f"{ct_series.geometry.as_dict()}",
            "resample the label onto the CT (nearest neighbour) before exporting contours",
        )
    by_value = {int(value): name for name, value in regions.items()}
    array = sitk.GetArrayViewFromImage(label)
    unknown = [v for v in sorted(int(v) for v in np.unique(array) if v != 0) if v not in by_value]
    if unknown:
        raise PatientDataError(
            patient,
            out_path,
            f"label values {unknown} are not in the region table {dict(regions)}",
            "relabel the image to the configured region values",
        )
    return by_value


def _structure_set_header(
    first: Dataset, label: str, description: str, software: str, version: str
) -> Dataset:
    """A new structure set (new UIDs, now) carrying the CT's patient and study identity."""
    now = datetime.now()
    date, time = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    sop_uid = generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = RT_STRUCTURE_SET_STORAGE
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ImplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    _copy_identity(ds, first)
    ds.SOPClassUID = RT_STRUCTURE_SET_STORAGE
    ds.SOPInstanceUID = sop_uid
    ds.InstanceCreationDate, ds.InstanceCreationTime = date, time
    ds.Modality = "RTSTRUCT"
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = ""
    ds.SeriesDescription = description
    ds.OperatorsName = ""
    ds.Manufacturer = software
    ds.ManufacturerModelName = software
    ds.SoftwareVersions = version
    ds.StructureSetLabel = label
    ds.StructureSetDescription = f"Automatic ABM contours by {software} {version}; {RESEARCH_USE}"
    ds.StructureSetDate, ds.StructureSetTime = date, time
    return ds


def _referenced_frame(ct_series: DicomSeries, frame_uid: str) -> DicomSequence:
    """The frame of reference -> study -> series -> every CT slice the contours may lie on."""
    first = ct_series.datasets[0]
    series = _item(
        SeriesInstanceUID=first.SeriesInstanceUID,
        ContourImageSequence=DicomSequence([_image_ref(ct) for ct in ct_series.datasets]),
    )
    study = _item(
        ReferencedSOPClassUID=STUDY_REFERENCE_CLASS,
        ReferencedSOPInstanceUID=first.StudyInstanceUID,
        RTReferencedSeriesSequence=DicomSequence([series]),
    )
    return DicomSequence(
        [_item(FrameOfReferenceUID=frame_uid, RTReferencedStudySequence=DicomSequence([study]))]
    )


def _roi_contour(
    mask: np.ndarray, value: int, colour: Sequence[int], ct_series: DicomSeries
) -> Dataset:
    """One ROI's contours: each outline of each slice, referencing that CT slice."""
    contours = []
    for k, ct in enumerate(ct_series.datasets):
        for points in mask_to_contours(mask[k]):
            contours.append(
                _item(
                    ContourImageSequence=DicomSequence([_image_ref(ct)]),
                    ContourGeometricType="CLOSED_PLANAR",
                    NumberOfContourPoints=len(points),
                    ContourNumber=len(contours) + 1,
                    ContourData=_ds_text(index_to_patient(points, ct)),
                )
            )
    roi_contour = _item(ReferencedROINumber=value, ROIDisplayColor=[int(c) for c in colour])
    if contours:  # an empty ROI has no Contour Sequence (type 3), not an empty one
        roi_contour.ContourSequence = DicomSequence(contours)
    return roi_contour


# --------------------------------------------------------------------------------------- reading


@dataclass
class RtstructLabel:
    """A structure set filled onto the CT grid, with what was matched and what was ignored."""

    image: sitk.Image
    matched: dict[str, str]  # region name -> ROI name
    ignored: list[str]  # ROI names matching no region
    contours: dict[str, int] = field(default_factory=dict)  # region name -> contours filled
    overlap_voxels: int = 0  # voxels claimed by two regions (the higher region value kept)

    def summary(self) -> str:
        matched = ", ".join(f"{roi!r} -> {region}" for region, roi in self.matched.items())
        text = f"ROIs used: {matched}"
        if self.ignored:
            text += f"; ignored: {', '.join(repr(n) for n in self.ignored)}"
        if self.overlap_voxels:
            text += f"; {self.overlap_voxels} voxels in two regions (higher value kept)"
        return text


def _name_table(
    regions: Mapping[str, int], aliases: Mapping[str, Sequence[str]] | None
) -> dict[str, str]:
    """Case-folded ROI name -> region name; a name claimed by two regions is a config error."""
    table: dict[str, str] = {}
    for region in regions:
        for name in (region, *((aliases or {}).get(region, ()))):
            key = name.strip().casefold()
            if table.get(key, region) != region:
                raise ValueError(f"ROI name {name!r} is an alias of both {table[key]} and {region}")
            table[key] = region
    unknown = sorted(set(aliases or {}) - set(regions))
    if unknown:
        raise ValueError(f"aliases given for regions {unknown} that are not in {list(regions)}")
    return table


def _read_dataset(path: Path, patient: str | None) -> Dataset:
    fix = "point the sheet's label at the RT Structure Set (RTSTRUCT) file of this patient's CT"
    try:
        ds = pydicom.dcmread(path)
    except Exception as exc:  # pydicom raises many types for damaged or non-DICOM files
        raise PatientDataError(
            patient,
            path,
            f"not a readable DICOM file ({type(exc).__name__}: {str(exc)[:160]}), so not an "
            "RTSTRUCT",
            fix,
        ) from None
    modality = str(ds.get("Modality", "")).upper()
    sop_class = str(ds.get("SOPClassUID", ""))
    if modality != "RTSTRUCT" or sop_class != RT_STRUCTURE_SET_STORAGE:
        raise PatientDataError(
            patient,
            path,
            f"not an RTSTRUCT (Modality '{modality}', SOPClassUID '{sop_class}')",
            fix,
        )
    return ds


def _malformed(patient: str | None, path: Path, what: str) -> PatientDataError:
    return PatientDataError(
        patient,
        path,
        f"malformed RTSTRUCT: {what}",
        "export the structure set again from the planning system",
    )


def _world_to_index(points: np.ndarray, ct: sitk.Image) -> np.ndarray:
    """LPS mm (n, 3) -> continuous (x, y, z) indices of the CT grid."""
    direction = np.array(ct.GetDirection()).reshape(3, 3)
    offsets = points - np.array(ct.GetOrigin())
    return np.linalg.solve(direction, offsets.T).T / np.array(ct.GetSpacing())


def _frame_uids(ds: Dataset) -> list[str]:
    return [
        str(item.get("FrameOfReferenceUID", ""))
        for item in ds.get("ReferencedFrameOfReferenceSequence", [])
    ]


def load_rtstruct(
    path: str | Path,
    ct: sitk.Image,
    patient: str | None,
    regions: Mapping[str, int],
    aliases: Mapping[str, Sequence[str]] | None = None,
    *,
    frame_of_reference: str,
) -> RtstructLabel:
    """Fill the contours of the ROIs that name a region onto the CT grid (uint8 region values).

    ``frame_of_reference`` is the CT series' FrameOfReferenceUID, or its 16-hex sha256 digest as
    stored in the converted meta.json. ``aliases`` maps a region name to other ROI names that mean
    it; names match case-insensitively, ignoring surrounding blanks.
    """
    path = Path(path)
    table = _name_table(regions, aliases)  # the config first: its error needs no file
    ds = _read_dataset(path, patient)
    names, frames, contours_of = _roi_table(ds, path, patient)
    by_region, ignored = _match_regions(names, table, regions, aliases, path, patient)
    fallback = _frame_uids(ds)
    for number in by_region.values():
        frame = frames[number] or (fallback[0] if len(fallback) == 1 else "")
        if frame_of_reference not in (frame, uid_digest(frame)):
            raise PatientDataError(
                patient,
                path,
                f"ROI '{names[number]}' is in frame of reference '{frame}', not the CT's "
                f"('{frame_of_reference}'): the contours were drawn on another scan",
                "export the structure set drawn on this patient's planning CT (the sheet's ct "
                "series), or register it to that CT first",
            )
    size_x, size_y, size_z = ct.GetSize()
    label = np.zeros((size_z, size_y, size_x), dtype=np.uint8)
    counts: dict[str, int] = {}
    overlap = 0
    for region, number in sorted(by_region.items(), key=lambda kv: regions[kv[0]]):
        per_slice: dict[int, list[np.ndarray]] = {}
        for c, contour in enumerate(contours_of.get(number, [])):
            k, polygon = _contour_on_slice(contour, c, names[number], ct, path, patient)
            per_slice.setdefault(k, []).append(polygon)
        for k, polygons in per_slice.items():
            filled = fill_polygons(polygons, (size_y, size_x))
            overlap += int(np.count_nonzero(filled & (label[k] != 0)))
            label[k][filled] = regions[region]
        counts[region] = sum(len(p) for p in per_slice.values())
    return RtstructLabel(
        image=image_like(label, ct),
        matched={region: names[number] for region, number in by_region.items()},
        ignored=sorted(ignored),
        contours=counts,
        overlap_voxels=overlap,
    )


def _roi_table(
    ds: Dataset, path: Path, patient: str | None
) -> tuple[dict[int, str], dict[int, str], dict[int, list]]:
    """ROI number -> name, -> frame of reference UID, -> its contour items."""
    try:
        roi_items = list(ds.StructureSetROISequence)
        contour_items = list(ds.get("ROIContourSequence", []))
    except AttributeError:
        raise _malformed(patient, path, "no StructureSetROISequence") from None
    names: dict[int, str] = {}
    frames: dict[int, str] = {}
    for item in roi_items:
        if "ROINumber" not in item:
            raise _malformed(patient, path, "a StructureSetROISequence item has no ROINumber")
        names[int(item.ROINumber)] = str(item.get("ROIName", "")).strip()
        frames[int(item.ROINumber)] = str(item.get("ReferencedFrameOfReferenceUID", ""))
    contours_of = {
        int(item.ReferencedROINumber): list(item.get("ContourSequence", []))
        for item in contour_items
        if "ReferencedROINumber" in item
    }
    return names, frames, contours_of


def _match_regions(
    names: Mapping[int, str],
    table: Mapping[str, str],
    regions: Mapping[str, int],
    aliases: Mapping[str, Sequence[str]] | None,
    path: Path,
    patient: str | None,
) -> tuple[dict[str, int], list[str]]:
    """{region: its one ROI number} and the names of the ROIs that match no region (``table``:
    case-folded ROI name -> region, from ``_name_table``)."""
    by_region: dict[str, list[int]] = {}
    ignored = []
    for number, name in names.items():
        region = table.get(name.casefold())
        if region is None:
            ignored.append(name)
        else:
            by_region.setdefault(region, []).append(number)
    if not by_region:
        configured = "; ".join(
            f"{region}: {', '.join([region, *((aliases or {}).get(region, ()))])}"
            for region in regions
        )
        raise PatientDataError(
            patient,
            path,
            f"no ROI matches a region: ROI names found {sorted(names.values())}, configured "
            f"names and aliases (case-insensitive) {configured}",
            "rename the ABM ROIs in the planning system or add their names to the region aliases",
        )
    for region, numbers in by_region.items():
        if len(numbers) > 1:
            raise PatientDataError(
                patient,
                path,
                f"ROIs {', '.join(repr(names[n]) for n in numbers)} all map to region '{region}'",
                "keep one ROI per region (merge or rename the others) or change the aliases",
            )
    return {region: numbers[0] for region, numbers in by_region.items()}, ignored


def _contour_on_slice(
    contour: Dataset, c: int, roi: str, ct: sitk.Image, path: Path, patient: str | None
) -> tuple[int, np.ndarray]:
    """Contour ``c`` of ROI ``roi`` as (CT slice index, (row, column) polygon), checked."""
    kind = str(contour.get("ContourGeometricType", ""))
    if kind != "CLOSED_PLANAR":
        raise PatientDataError(
            patient,
            path,
            f"ROI '{roi}' contour {c + 1} is {kind or 'untyped'}, not CLOSED_PLANAR",
            "draw the ABM regions as closed contours (no points or open lines)",
        )
    data = np.array([float(v) for v in contour.get("ContourData", [])])
    if data.size < 9 or data.size % 3:
        raise _malformed(
            patient,
            path,
            f"ROI '{roi}' contour {c + 1} has {data.size} "
            "coordinates (needs 3 per point, at least 3 points)",
        )
    index = _world_to_index(data.reshape(-1, 3), ct)
    size_z = ct.GetSize()[2]
    k = int(np.rint(index[:, 2].mean()))
    off = float(np.max(np.abs(index[:, 2] - k)))
    if off > SLICE_TOLERANCE or not 0 <= k < size_z:
        where = (
            f"{off:.2f} of a slice step from the nearest CT slice"
            if 0 <= k < size_z
            else f"outside the CT's {size_z} slices (index {index[:, 2].mean():.1f})"
        )
        raise PatientDataError(
            patient,
            path,
            f"ROI '{roi}' contour {c + 1} lies {where}; contours must lie on CT slice "
            f"positions (within {SLICE_TOLERANCE} of a slice step)",
            "export the structure set drawn on this patient's CT series (the one in the "
            "sheet), not on a resampled or different reconstruction",
        )
    return k, index[:, 1::-1]  # (row, column) = (y, x)


def read_rtstruct(
    path: str | Path,
    ct: sitk.Image,
    patient: str | None,
    regions: Mapping[str, int],
    aliases: Mapping[str, Sequence[str]] | None = None,
    *,
    frame_of_reference: str,
) -> sitk.Image:
    """The uint8 label on the CT grid of ``load_rtstruct``; its summary goes to the log."""
    result = load_rtstruct(
        path, ct, patient, regions, aliases, frame_of_reference=frame_of_reference
    )
    log.info("patient %s, %s: %s", patient, Path(path).name, result.summary())
    return result.image
