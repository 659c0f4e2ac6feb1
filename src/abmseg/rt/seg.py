"""ABM label images out as DICOM Segmentation (SEG) objects on the original CT series, and back.

A treatment-planning system places a SEG on the CT it references: the SEG carries the CT's
patient, study and frame of reference, and each of its frames names the CT slice (SOP Instance
UID) it lies on. :func:`write_dicom_seg` builds one with highdicom from a label image (0
background, one value per ABM region) that lies on exactly the CT series' grid;
:func:`read_dicom_seg` turns such a file back into a label image on a CT grid, placing every
frame by its own plane position (highdicom stores frames sorted along the slice normal, not in
the order they were given). :func:`write_fractional_seg` and :func:`read_fractional_seg` do the
same for per-voxel class probabilities: a FRACTIONAL SEG of type PROBABILITY (8 bits, maximum
value 255), one segment per region, whose stored value is round(p * 255).

Every series says RESEARCH USE ONLY in its description: these are a research model's output, not
a validated clinical contour.

Coded concepts of each segment (one per region of the table, present in the label or not: a
region the model did not find is an empty segment, so every SEG describes the same regions):

* segmented property category: SCT 85756007 "Tissue";
* segmented property type: SCT 14016003 "Bone Marrow";
* anatomic region: SCT 297173004 "Lumbosacral region of spine" (``lumbosacral_spine``),
  SCT 22356005 "Ilium" (``ilium``), SCT 118645006 "Pelvis" (bone structure of pelvis; for
  ``lower_pelvis`` and any other region name);
* algorithm: AUTOMATIC, name "abmseg", family DCM 123110 "Artificial Intelligence", version
  ``abmseg.__version__``; its AlgorithmParameters hold ``label_value=<n>``, the region's value in
  the label image, so a reader maps segments back to values without the regions table.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path

import highdicom as hd
import numpy as np
import SimpleITK as sitk
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import SegmentationStorage, generate_uid

from abmseg import __version__
from abmseg.atomic import write_atomic
from abmseg.errors import PatientDataError
from abmseg.io.dicom_series import DicomSeries
from abmseg.io.volume import Geometry

ALGORITHM_NAME = "abmseg"
LABEL_VALUE_PARAMETER = "label_value"
SEGMENT_CATEGORY = codes.SCT.Tissue
SEGMENT_TYPE = codes.SCT.BoneMarrow
ANATOMIC_REGIONS = {
    "lumbosacral_spine": codes.SCT.LumbosacralRegionOfSpineStructure,
    "ilium": codes.SCT.Ilium,
    "lower_pelvis": codes.SCT.BoneStructureOfPelvis,
}
DEFAULT_ANATOMIC_REGION = codes.SCT.BoneStructureOfPelvis
# Display colours (RGB) by label value: what a planning system draws the contours in.
REGION_COLOURS = {1: (230, 25, 75), 2: (60, 180, 75), 3: (0, 130, 200)}
DEFAULT_COLOUR = (255, 225, 25)
GEOMETRY_TOLERANCE_MM = 1e-3
# Frame positions are decimal strings (DS, 16 characters): allow their rounding.
POSITION_TOLERANCE_MM = 1e-2
# Series descriptions are LO (at most 64 characters); a planning system lists them with the series.
SEG_SERIES_DESCRIPTION = "ABM segmentation (abmseg) RESEARCH USE ONLY"
PROBABILITY_SERIES_DESCRIPTION = "ABM probability (abmseg) RESEARCH USE ONLY"
PROBABILITY_SERIES_NUMBER = 902  # the binary SEG is 901
MAX_FRACTIONAL_VALUE = 255


def _check_regions(regions: Mapping[str, int]) -> dict[int, str]:
    """The regions table as {label value: name}; a malformed table is a configuration error."""
    if not regions:
        raise ValueError("the regions table is empty")
    by_value: dict[int, str] = {}
    for name, value in regions.items():
        if not isinstance(name, str) or not name.strip() or len(name) > 64:
            raise ValueError(f"region name {name!r} must be a non-empty text of at most 64 chars")
        if isinstance(value, bool) or not isinstance(value, int | np.integer):
            raise ValueError(f"region {name!r} has the non-integer label value {value!r}")
        if not 1 <= int(value) <= 255:
            raise ValueError(f"region {name!r} has label value {value}, outside 1..255")
        if int(value) in by_value:
            raise ValueError(
                f"regions {by_value[int(value)]!r} and {name!r} share the label value {value}"
            )
        by_value[int(value)] = name
    return by_value


def _label_array(label: sitk.Image, ct_series: DicomSeries, out_path: Path, patient: str):
    """The label as a (z, y, x) array on the CT series' grid, or a refusal saying why not."""
    if label.GetDimension() != 3 or label.GetNumberOfComponentsPerPixel() != 1:
        raise PatientDataError(
            patient,
            out_path,
            f"the label image is not a 3-D scalar image (dimension {label.GetDimension()}, "
            f"{label.GetNumberOfComponentsPerPixel()} components)",
            "export a 3-D label map (0 background, one value per region) on the CT grid",
        )
    _check_on_ct_grid(
        label,
        ct_series,
        out_path,
        patient,
        "the label image",
        "export the mask that is on the planning-CT grid (abm_ct.nii.gz) and pass the CT "
        "series it was computed from",
    )
    return sitk.GetArrayViewFromImage(label)


def _check_on_ct_grid(
    image: sitk.Image,
    ct_series: DicomSeries,
    out_path: Path,
    patient: str | None,
    what: str,
    fix: str,
) -> None:
    """Refuse ``image`` unless it lies on the CT series' grid: the SEG's frames are its slices."""
    geometry = Geometry.of(image)
    if not geometry.matches(ct_series.geometry, tol_mm=GEOMETRY_TOLERANCE_MM):
        raise PatientDataError(
            patient,
            out_path,
            f"{what} does not lie on the CT series' grid ({geometry.as_dict()}; CT series "
            f"{ct_series.geometry.as_dict()})",
            fix,
        )


def write_dicom_seg(
    label: sitk.Image,
    ct_series: DicomSeries,
    regions: Mapping[str, int],
    out_path: str | Path,
    patient: str,
    *,
    series_number: int = 901,
    instance_number: int = 1,
    series_description: str = SEG_SERIES_DESCRIPTION,
) -> None:
    """Write ``label`` (0 background, region values from ``regions``) as a binary DICOM SEG.

    ``label`` must lie on ``ct_series``' grid (within 1e-3 mm) and hold only 0 and the values of
    ``regions`` (name -> label value); one segment is written per region of the table, labelled
    with the region's name (an empty label gives empty segments: the SEG then says "no ABM found"
    rather than failing). Patient, study and frame of reference are copied from the CT by highdicom,
    which also references every CT slice; nothing else identifying is added. The file appears at
    ``out_path`` only when complete.
    """
    out_path = Path(out_path)
    by_value = _check_regions(regions)
    if not ct_series.datasets:
        raise ValueError("the CT series holds no slices")
    array = _label_array(label, ct_series, out_path, patient)
    values = np.unique(array)
    unknown = [v.item() for v in values if v != 0 and v not in by_value]
    if unknown:
        shown = ", ".join(str(v) for v in unknown[:10])
        raise PatientDataError(
            patient,
            out_path,
            f"the label image holds values not in the regions table ({shown}; the table has "
            f"{', '.join(f'{n}={v}' for v, n in sorted(by_value.items()))})",
            "export the label map the model wrote for this regions table, or correct the "
            "regions table",
        )
    present = sorted(by_value)  # every region: an absent one is an empty segment

    # Segment numbers run 1..k over the regions table, in order of label value.
    lookup = np.zeros(256, dtype=np.uint8)
    for number, value in enumerate(present, start=1):
        lookup[value] = number
    # Frame k of the array is CT slice k: DicomSeries sorts its datasets along the slice normal,
    # the same order as the volume's z axis (highdicom pairs pixel_array[k] with
    # source_images[k]).
    segment_map = lookup[np.asarray(array, dtype=np.int64)]

    seg = _segmentation(
        ct_series,
        segment_map,
        _segment_descriptions(by_value),
        series_number=series_number,
        instance_number=instance_number,
        content_label="ABM",
        content_description="Pelvic active bone marrow regions; research use only",
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
    )
    seg.SeriesDescription = series_description
    write_atomic(out_path, lambda tmp: seg.save_as(tmp))


def _segment_descriptions(by_value: Mapping[int, str]) -> list[hd.seg.SegmentDescription]:
    """One description per region, numbered 1..k in order of label value (binary and fractional
    SEGs describe the same regions the same way)."""
    return [
        hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=by_value[value],
            segmented_property_category=SEGMENT_CATEGORY,
            segmented_property_type=SEGMENT_TYPE,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=hd.AlgorithmIdentificationSequence(
                name=ALGORITHM_NAME,
                family=codes.DCM.ArtificialIntelligence,
                version=__version__,
                parameters={LABEL_VALUE_PARAMETER: str(value)},
            ),
            anatomic_regions=[ANATOMIC_REGIONS.get(by_value[value], DEFAULT_ANATOMIC_REGION)],
            display_color=hd.color.CIELabColor.from_rgb(*REGION_COLOURS.get(value, DEFAULT_COLOUR)),
        )
        for number, value in enumerate(sorted(by_value), start=1)
    ]


def _segmentation(
    ct_series: DicomSeries,
    pixel_array: np.ndarray,
    descriptions: list[hd.seg.SegmentDescription],
    **specific,
) -> hd.seg.Segmentation:
    """A new SEG of the CT series (new UIDs; the CT's patient, study and frame of reference);
    ``specific`` holds what differs between the binary and the fractional SEG."""
    return hd.seg.Segmentation(
        source_images=list(ct_series.datasets),
        pixel_array=pixel_array,
        segment_descriptions=descriptions,
        series_instance_uid=generate_uid(),
        sop_instance_uid=generate_uid(),
        manufacturer="abmseg",
        manufacturer_model_name="abmseg pelvic ABM segmentation",
        software_versions=__version__,
        device_serial_number="none",
        omit_empty_frames=True,
        **specific,
    )


def write_fractional_seg(
    probabilities: np.ndarray,
    grid: sitk.Image,
    ct_series: DicomSeries,
    regions: Mapping[str, int],
    out_path: str | Path,
    patient: str | None = None,
    series_description: str = PROBABILITY_SERIES_DESCRIPTION,
) -> None:
    """Write class probabilities (C, z, y, x) on ``grid`` as a FRACTIONAL (PROBABILITY) DICOM SEG.

    Channel c is the class of label value c (0 background, not written); one segment per region of
    ``regions``, described as in :func:`write_dicom_seg`, stores round(p * 255) of its channel.
    ``grid`` must be the CT series' grid; frames that store only zeros are omitted (a planning
    system shows those slices as probability 0). The file appears only when complete.
    """
    out_path = Path(out_path)
    by_value = _check_regions(regions)
    if not ct_series.datasets:
        raise ValueError("the CT series holds no slices")
    _check_on_ct_grid(
        grid,
        ct_series,
        out_path,
        patient,
        "the probabilities' grid",
        "export the probabilities that are on the planning-CT grid (abm_prob.nii.gz) and pass "
        "the CT series they were computed from",
    )
    stacked = _quantised_segments(probabilities, grid, by_value, out_path, patient)
    seg = _segmentation(
        ct_series,
        stacked,
        _segment_descriptions(by_value),
        series_number=PROBABILITY_SERIES_NUMBER,
        instance_number=1,
        content_label="ABM_PROBABILITY",
        content_description="Pelvic active bone marrow probability; research use only",
        segmentation_type=hd.seg.SegmentationTypeValues.FRACTIONAL,
        fractional_type=hd.seg.SegmentationFractionalTypeValues.PROBABILITY,
        max_fractional_value=MAX_FRACTIONAL_VALUE,
    )
    seg.SeriesDescription = series_description
    write_atomic(out_path, lambda tmp: seg.save_as(tmp))


def _quantised_segments(
    probabilities: np.ndarray,
    grid: sitk.Image,
    by_value: Mapping[int, str],
    out_path: Path,
    patient: str | None,
) -> np.ndarray:
    """The regions' channels as (z, y, x, segment) float32 on the 1/255 steps the file stores.

    Quantising here (in float64: round(p * 255) exactly) lets highdicom drop every frame that
    would store only zeros, not only those that are exactly 0 before rounding.
    """
    probabilities = np.asarray(probabilities)
    expected = tuple(reversed(grid.GetSize()))
    if probabilities.ndim != 4 or probabilities.shape[1:] != expected:
        raise PatientDataError(
            patient,
            out_path,
            f"the probabilities of shape {probabilities.shape} are not (channel, z, y, x) maps on "
            f"the grid of (z, y, x) {expected}",
            "export the 4D probabilities (abm_prob.nii.gz) written with this CT grid",
        )
    _check_channels(probabilities, by_value, out_path, patient)
    _check_probability_range(probabilities)
    stacked = np.empty((*expected, len(by_value)), dtype=np.float32)
    for index, value in enumerate(sorted(by_value)):
        steps = np.rint(probabilities[value].astype(np.float64) * MAX_FRACTIONAL_VALUE)
        stacked[..., index] = steps / MAX_FRACTIONAL_VALUE
    return stacked


def _check_channels(
    probabilities: np.ndarray, by_value: Mapping[int, str], out_path: Path, patient: str | None
) -> None:
    """Every region needs its channel; a channel of no region must hold no probability."""
    count = probabilities.shape[0]
    unnamed = [c for c in range(1, count) if c not in by_value and probabilities[c].any()]
    if max(by_value) >= count or unnamed:
        table = ", ".join(f"{n}={v}" for v, n in sorted(by_value.items()))
        raise PatientDataError(
            patient,
            out_path,
            f"the probabilities have {count} channels (classes 0..{count - 1}) but the regions "
            f"table is {table}" + (f"; classes {unnamed} are in no region" if unnamed else ""),
            "export the probabilities the model wrote for this regions table, or correct the "
            "regions table",
        )


def _check_probability_range(probabilities: np.ndarray) -> None:
    """Probabilities must be numbers in [0, 1] (np.min/np.max return NaN if any value is NaN: no
    mask of the whole volume unless something is wrong)."""
    low, high = float(np.min(probabilities)), float(np.max(probabilities))
    if low >= 0.0 and high <= 1.0:
        return
    nan = int(np.count_nonzero(np.isnan(probabilities)))
    found = f"{nan} NaN values" if nan else f"values from {low:g} to {high:g}"
    raise ValueError(f"probabilities must lie in [0, 1]; found {found}")


def _refuse(path: Path, problem: str, patient: str | None) -> PatientDataError:
    return PatientDataError(
        patient,
        path,
        problem,
        "read the SEG against the CT it was made on (results/.../ct.nii.gz of the same patient)",
    )


def _segment_values(seg: hd.seg.Segmentation, regions: Mapping[str, int] | None, path, patient):
    """{segment number: label value}: from the regions table when given, else from each
    segment's ``label_value`` algorithm parameter, else the segment number itself."""
    by_name = dict(regions) if regions is not None else None
    values: dict[int, int] = {}
    for item in seg.SegmentSequence:
        number = int(item.SegmentNumber)
        name = str(item.get("SegmentLabel", ""))
        if by_name is not None:
            if name not in by_name:
                raise _refuse(
                    path, f"segment {number} '{name}' is not in the regions table", patient
                )
            values[number] = int(by_name[name])
            continue
        value = number
        for algorithm in item.get("SegmentationAlgorithmIdentificationSequence", []):
            text = str(algorithm.get("AlgorithmParameters", ""))
            for pair in text.split(","):
                key, _, found = pair.partition("=")
                if key.strip() == LABEL_VALUE_PARAMETER and found.strip().isdigit():
                    value = int(found.strip())
        values[number] = value
    if any(not 1 <= v <= 255 for v in values.values()):
        raise _refuse(
            path, f"segment label values {sorted(values.values())} exceed 1..255", patient
        )
    return values


def read_dicom_seg(
    path: str | Path,
    ct: sitk.Image,
    *,
    regions: Mapping[str, int] | None = None,
    patient: str | None = None,
) -> sitk.Image:
    """A binary DICOM SEG as a uint8 label image on ``ct``'s grid.

    Each frame is placed by its own ImagePositionPatient (it must fall on a CT slice) and given
    its segment's label value: from ``regions`` (segment label -> value) when given, else from the
    ``label_value`` parameter :func:`write_dicom_seg` stores, else the segment number. Voxels not
    covered by any frame are 0. A SEG whose orientation, pixel spacing or matrix differs from the
    CT's, or whose segments overlap, is refused.
    """
    path = Path(path)
    seg = _read_seg(path, "BINARY", patient)
    geometry = Geometry.of(ct)
    _check_frame_geometry(seg, geometry, path, patient)
    values = _segment_values(seg, regions, path, patient)
    size_x, size_y, size_z = geometry.size
    labels = np.zeros((size_z, size_y, size_x), dtype=np.uint8)
    for k, value, frame in _placed_frames(seg, geometry, values, path, patient):
        mask = frame != 0
        clash = mask & (labels[k] != 0) & (labels[k] != value)
        if clash.any():
            raise _refuse(
                path, f"segments overlap on slice {k}: not representable as one label", patient
            )
        labels[k][mask] = value
    image = sitk.GetImageFromArray(labels)
    image.CopyInformation(ct)
    return image


def read_fractional_seg(
    path: str | Path,
    grid: sitk.Image,
    *,
    regions: Mapping[str, int] | None = None,
    patient: str | None = None,
) -> tuple[np.ndarray, dict[str, int]]:
    """A FRACTIONAL (PROBABILITY) SEG as (C, z, y, x) float32 class probabilities on ``grid``.

    Channel v holds the segment of label value v (mapped as in :func:`read_dicom_seg`), each frame
    placed by its own plane position and scaled by MaximumFractionalValue; voxels no frame covers
    are 0, and channel 0 (background) is 1 minus the others, clipped at 0. Also returns
    {segment label: label value}. Frames off ``grid`` are refused, as by :func:`read_dicom_seg`.
    """
    path = Path(path)
    seg = _read_seg(path, "FRACTIONAL", patient)
    if str(seg.get("SegmentationFractionalType", "")) != "PROBABILITY":
        raise _refuse(
            path,
            f"SegmentationFractionalType {seg.get('SegmentationFractionalType')} "
            "(only PROBABILITY is read)",
            patient,
        )
    geometry = Geometry.of(grid)
    _check_frame_geometry(seg, geometry, path, patient)
    values = _segment_values(seg, regions, path, patient)
    scale = float(seg.MaximumFractionalValue)
    size_x, size_y, size_z = geometry.size
    probabilities = np.zeros((max(values.values()) + 1, size_z, size_y, size_x), np.float32)
    for k, value, frame in _placed_frames(seg, geometry, values, path, patient):
        probabilities[value, k] = frame / scale
    probabilities[0] = np.clip(1.0 - probabilities[1:].sum(axis=0), 0.0, None)
    names = {str(s.SegmentLabel): values[int(s.SegmentNumber)] for s in seg.SegmentSequence}
    return probabilities, names


def _placed_frames(
    seg: hd.seg.Segmentation,
    geometry: Geometry,
    values: Mapping[int, int],
    path: Path,
    patient: str | None,
) -> Iterator[tuple[int, int, np.ndarray]]:
    """(CT slice index, label value, stored pixels) of every frame, placed by its own plane
    position: highdicom stores frames sorted along the slice normal, not in the order given."""
    pixels = seg.pixel_array
    if pixels.ndim == 2:
        pixels = pixels[np.newaxis]
    frames = seg.PerFrameFunctionalGroupsSequence
    if len(frames) != pixels.shape[0]:
        raise _refuse(
            path, f"{len(frames)} frame descriptions for {pixels.shape[0]} frames", patient
        )
    for frame, item in zip(pixels, frames, strict=True):
        number = int(item.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        if number not in values:
            raise _refuse(path, f"a frame refers to the undescribed segment {number}", patient)
        yield _frame_slice(item, geometry, path, patient), values[number], frame


def _read_seg(path: Path, segmentation_type: str, patient: str | None) -> hd.seg.Segmentation:
    """The file as a highdicom Segmentation, refused unless it is a DICOM SEG of that type."""
    try:
        seg = hd.seg.segread(path)
    except Exception as exc:  # pydicom/highdicom raise many types for a bad file
        raise _refuse(
            path, f"not a readable DICOM SEG ({type(exc).__name__}: {str(exc)[:160]})", patient
        ) from None
    if seg.SOPClassUID != SegmentationStorage:
        raise _refuse(path, f"SOP class {seg.SOPClassUID} is not Segmentation Storage", patient)
    if str(seg.SegmentationType) != segmentation_type:
        raise _refuse(
            path,
            f"SegmentationType {seg.SegmentationType} (only {segmentation_type} is read here)",
            patient,
        )
    return seg


def _check_frame_geometry(
    seg: hd.seg.Segmentation, geometry: Geometry, path: Path, patient: str | None
) -> None:
    """The SEG's frames must have the CT's matrix, orientation and pixel spacing."""
    direction = np.array(geometry.direction).reshape(3, 3)
    size_x, size_y, _ = geometry.size
    if (int(seg.Rows), int(seg.Columns)) != (size_y, size_x):
        raise _refuse(
            path,
            f"SEG frames are {seg.Rows} x {seg.Columns} pixels, the CT's {size_y} x {size_x}",
            patient,
        )
    shared = seg.SharedFunctionalGroupsSequence[0]
    orientation = np.array(shared.PlaneOrientationSequence[0].ImageOrientationPatient, dtype=float)
    if not np.allclose(orientation, direction.T[:2].flatten(), atol=1e-4):
        raise _refuse(
            path,
            f"SEG orientation {orientation.tolist()} differs from the CT's "
            f"{direction.T[:2].flatten().tolist()}",
            patient,
        )
    spacing = np.array(shared.PixelMeasuresSequence[0].PixelSpacing, dtype=float)  # row, col
    if not np.allclose(spacing, geometry.spacing[1::-1], atol=GEOMETRY_TOLERANCE_MM):
        raise _refuse(
            path,
            f"SEG pixel spacing {spacing.tolist()} differs from the CT's "
            f"{list(geometry.spacing[1::-1])}",
            patient,
        )


def _frame_slice(item: Dataset, geometry: Geometry, path: Path, patient: str | None) -> int:
    """The CT slice index a frame lies on (by its own ImagePositionPatient), or a refusal."""
    direction = np.array(geometry.direction).reshape(3, 3)
    step = np.array(geometry.spacing)
    position = np.array(item.PlanePositionSequence[0].ImagePositionPatient, dtype=float)
    offset_mm = direction.T @ (position - np.array(geometry.origin))  # along the index axes
    k = int(round(offset_mm[2] / step[2]))
    if (
        not np.allclose(offset_mm[:2], 0, atol=POSITION_TOLERANCE_MM)
        or abs(offset_mm[2] - k * step[2]) > POSITION_TOLERANCE_MM
        or not 0 <= k < geometry.size[2]
    ):
        raise _refuse(
            path,
            f"a frame at {position.tolist()} does not lie on a slice of the CT grid",
            patient,
        )
    return k
