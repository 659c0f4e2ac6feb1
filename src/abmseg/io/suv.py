"""Body-weight SUV from PET DICOM tags, following QIBA's vendor-neutral pseudo-code.

Reference: QIBA FDG-PET/CT profile, "SUV calculation: vendor-neutral pseudo-code"
(Units BQML with DecayCorrection START decayed from the injection to the scan start; CNTS via
Philips' SUV or activity-concentration scale factors; GML already in SUVbw).
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import asdict, dataclass
from pathlib import Path

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.tag import Tag

from abmseg.errors import PatientDataError
from abmseg.io.dicom_series import as_float, tag_value

PHILIPS_SUV_SCALE = Tag(0x7053, 0x1000)
PHILIPS_ACTIVITY_SCALE = Tag(0x7053, 0x1009)
GE_SCAN_DATETIME = Tag(0x0009, 0x100D)
# A decay time outside this range means wrong dates or times, not a real scan.
MAX_UPTAKE_SECONDS = 12 * 3600
# Values outside these ranges are unit mistakes (weight in g or lb x 1000, dose in MBq or mCi).
WEIGHT_RANGE_KG = (0.2, 500.0)
MIN_DOSE_BQ = 1e6
# SUV tags that every slice of one PET series must share (only the first slice's are used).
SHARED_TAGS = (
    "Units",
    "DecayCorrection",
    "CorrectedImage",
    "PatientWeight",
    "SeriesDate",
    "SeriesTime",
)
SHARED_INFO_TAGS = (
    "RadionuclideTotalDose",
    "RadionuclideHalfLife",
    "RadiopharmaceuticalStartTime",
    "RadiopharmaceuticalStartDateTime",
)


@dataclass(frozen=True)
class SuvScale:
    """How stored PET values (after rescale) become SUVbw; no dates, no identity."""

    factor: float  # SUVbw per unit of rescaled pixel value
    units: str
    method: str
    weight_kg: float | None = None
    injected_dose_bq: float | None = None
    half_life_s: float | None = None
    decay_seconds: float | None = None
    scan_time_source: str | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def _fix_tags(what: str) -> str:
    return f"fill in {what} from the scanner's dose report (or re-export the PET with SUV tags)"


def _datetime(date: str | None, time: str | None) -> dt.datetime | None:
    if not date or not time:
        return None
    time = str(time).strip()
    main, _, frac = time.partition(".")
    main = main.ljust(6, "0")
    try:
        stamp = dt.datetime.strptime(str(date).strip()[:8] + main[:6], "%Y%m%d%H%M%S")
    except ValueError:
        return None
    micros = int((frac + "000000")[:6]) if frac.isdigit() else 0
    return stamp + dt.timedelta(microseconds=micros)


def _dicom_datetime(value: str | None) -> dt.datetime | None:
    if not value:
        return None
    value = str(value).strip()
    # Strip a UTC offset (+hhmm/-hhmm): all other times in the file are local.
    for sign in "+-":
        if sign in value[8:]:
            value = value[: 8 + value[8:].index(sign)]
    return _datetime(value[:8], value[8:] or None)


def _positive(ds: Dataset, keyword: str, patient: str, path: Path, what: str) -> float:
    value = tag_value(ds, keyword, path, patient)
    number = as_float(value)
    if number is None or not math.isfinite(number) or number <= 0:
        raise PatientDataError(
            patient, path, f"PET has no usable {what} (tag {keyword} = {value!r})", _fix_tags(what)
        )
    return number


def _text(ds: Dataset, key, patient: str, path: Path) -> str | None:
    """A date, time or code string; anything else (a number, a list, bytes) counts as absent."""
    value = tag_value(ds, key, path, patient)
    return value if isinstance(value, str) and value.strip() else None


def _comparable(value) -> object:
    number = as_float(value)
    return number if number is not None else str(value)


def _check_slices_agree(
    datasets: list[Dataset], paths: list[Path], patient: str, info: Dataset | None
) -> None:
    """All slices must carry the first slice's SUV tags: a stray slice must not be scaled wrong."""
    first, first_path = datasets[0], paths[0]
    reference = {k: _comparable(tag_value(first, k, first_path, patient)) for k in SHARED_TAGS}
    info_reference = {
        k: _comparable(tag_value(info, k, first_path, patient)) if info is not None else None
        for k in SHARED_INFO_TAGS
    }
    for ds, path in zip(datasets[1:], paths[1:], strict=True):
        found = {k: _comparable(tag_value(ds, k, path, patient)) for k in SHARED_TAGS}
        sequence = tag_value(ds, "RadiopharmaceuticalInformationSequence", path, patient)
        item = _first_item(sequence)
        found_info = {
            k: _comparable(tag_value(item, k, path, patient)) if item is not None else None
            for k in SHARED_INFO_TAGS
        }
        for keyword, value in {**found, **found_info}.items():
            expected = {**reference, **info_reference}[keyword]
            if value != expected and not (value != value and expected != expected):  # NaN
                raise PatientDataError(
                    patient,
                    path,
                    f"PET slices disagree on {keyword} ({value!r} here, {expected!r} in "
                    f"{first_path.name})",
                    "export the PET series again; a file of another series or a damaged file is "
                    "in this folder",
                )


def _first_item(sequence) -> Dataset | None:
    if isinstance(sequence, Sequence) and len(sequence) and isinstance(sequence[0], Dataset):
        return sequence[0]
    return None


def _scan_datetime(datasets: list[Dataset], patient: str, path: Path) -> tuple[dt.datetime, str]:
    first = datasets[0]
    series = _datetime(
        _text(first, "SeriesDate", patient, path), _text(first, "SeriesTime", patient, path)
    )
    acquisitions = [
        stamp
        for ds in datasets
        if (
            stamp := _datetime(
                _text(ds, "AcquisitionDate", patient, path),
                _text(ds, "AcquisitionTime", patient, path),
            )
        )
        is not None
    ]
    earliest = min(acquisitions) if acquisitions else None
    if series is not None and (earliest is None or series <= earliest):
        return series, "SeriesDate/SeriesTime"
    ge = _dicom_datetime(_text(first, GE_SCAN_DATETIME, patient, path))
    if ge is not None:
        return ge, "GE private scan date-time (0009,100D)"
    if earliest is not None:
        # QIBA: a series time after the acquisition means the series was post-processed.
        return earliest, "earliest AcquisitionDate/AcquisitionTime"
    raise PatientDataError(
        patient,
        path,
        "PET has no scan time (SeriesDate/SeriesTime or AcquisitionDate/Time)",
        _fix_tags("the series date and time"),
    )


def _injection_datetime(
    info: Dataset, scan: dt.datetime, patient: str, path: Path
) -> tuple[dt.datetime, str]:
    full = _dicom_datetime(_text(info, "RadiopharmaceuticalStartDateTime", patient, path))
    if full is not None:
        return full, "RadiopharmaceuticalStartDateTime"
    start = _datetime(
        scan.strftime("%Y%m%d"), _text(info, "RadiopharmaceuticalStartTime", patient, path)
    )
    if start is None:
        raise PatientDataError(
            patient,
            path,
            "PET has no injection time (RadiopharmaceuticalStartTime/StartDateTime)",
            _fix_tags("the injection time"),
        )
    if start > scan:
        # Only a time of day is known: an injection 'after' the scan was given the day before
        # (scan just after midnight).
        return start - dt.timedelta(days=1), "RadiopharmaceuticalStartTime (previous day)"
    return start, "RadiopharmaceuticalStartTime"


def _philips_factor(ds: Dataset, tag: Tag, patient: str, path: Path) -> float | None:
    number = as_float(tag_value(ds, tag, path, patient))
    return number if number is not None and math.isfinite(number) and number > 0 else None


def suv_scale(
    datasets: list[Dataset],
    patient: str,
    path: str | Path,
    paths: list[Path] | None = None,
) -> SuvScale:
    """SUVbw factor for a PET series (datasets of all slices; the first one carries the tags).

    ``paths`` (one a slice) name the file in an error about slices that disagree.
    """
    path = Path(path)
    first = datasets[0]
    sequence = tag_value(first, "RadiopharmaceuticalInformationSequence", path, patient)
    _check_slices_agree(
        datasets,
        [Path(p) for p in paths] if paths else [path] * len(datasets),
        patient,
        _first_item(sequence),
    )
    units = str(tag_value(first, "Units", path, patient) or "").upper()
    if units == "GML":
        return SuvScale(factor=1.0, units=units, method="QIBA: GML images are SUVbw already")

    suv_factor = _philips_factor(first, PHILIPS_SUV_SCALE, patient, path)
    if units == "CNTS" and suv_factor is not None:
        # The vendor's factor already folds in weight, dose and decay.
        return SuvScale(
            factor=suv_factor,
            units=units,
            method="QIBA: Philips SUV scale factor (7053,1000)",
        )
    weight_kg = _positive(first, "PatientWeight", patient, path, "patient weight")
    if not WEIGHT_RANGE_KG[0] <= weight_kg <= WEIGHT_RANGE_KG[1]:
        raise PatientDataError(
            patient,
            path,
            f"PatientWeight {weight_kg:g} kg is implausible (outside {WEIGHT_RANGE_KG[0]:g}-"
            f"{WEIGHT_RANGE_KG[1]:g} kg; grams or another unit?)",
            "correct PatientWeight (in kg) in the PET tags",
        )
    weight_g = weight_kg * 1000.0
    if units == "CNTS":
        to_bqml = _philips_factor(first, PHILIPS_ACTIVITY_SCALE, patient, path)
        if to_bqml is not None:
            bqml = _bqml_scale(datasets, patient, path, weight_kg, weight_g)
            return SuvScale(
                **{
                    **bqml.as_dict(),
                    "factor": bqml.factor * to_bqml,
                    "units": units,
                    "method": "QIBA: Philips activity concentration scale (7053,1009) then BQML",
                }
            )
        raise PatientDataError(
            patient,
            path,
            "PET Units are CNTS without Philips scale factors (7053,1000)/(7053,1009)",
            "export the PET in BQML (activity concentration) or with the vendor's SUV factor",
        )
    if units != "BQML":
        raise PatientDataError(
            patient,
            path,
            f"PET Units '{units or 'missing'}' cannot be converted to SUV",
            "export the PET in BQML (Bq/ml), CNTS (Philips) or GML units",
        )
    return _bqml_scale(datasets, patient, path, weight_kg, weight_g)


def _bqml_scale(
    datasets: list[Dataset], patient: str, path: Path, weight_kg: float, weight_g: float
) -> SuvScale:
    first = datasets[0]
    value = tag_value(first, "CorrectedImage", path, patient)
    if isinstance(value, str):
        values = [value]
    else:
        values = list(value) if isinstance(value, MultiValue | list | tuple) else []
    corrected = {str(v).upper() for v in values}
    if not {"ATTN", "DECY"} <= corrected:
        raise PatientDataError(
            patient,
            path,
            f"PET is not attenuation and decay corrected (CorrectedImage {sorted(corrected)})",
            "use the attenuation- and decay-corrected reconstruction (CorrectedImage ATTN, DECY)",
        )
    info = _first_item(tag_value(first, "RadiopharmaceuticalInformationSequence", path, patient))
    if info is None:
        raise PatientDataError(
            patient,
            path,
            "PET has no RadiopharmaceuticalInformationSequence",
            _fix_tags("the injected dose, half-life and injection time"),
        )
    dose = _positive(info, "RadionuclideTotalDose", patient, path, "injected dose")
    half_life = _positive(info, "RadionuclideHalfLife", patient, path, "radionuclide half-life")
    if dose < MIN_DOSE_BQ:
        raise PatientDataError(
            patient,
            path,
            f"injected dose {dose:g} Bq is implausible (below {MIN_DOSE_BQ:g} Bq; MBq or mCi "
            "instead of Bq?)",
            "correct RadionuclideTotalDose (in Bq) in the PET tags",
        )
    decay_correction = str(tag_value(first, "DecayCorrection", path, patient) or "").upper()
    if decay_correction == "ADMIN":
        return SuvScale(
            factor=weight_g / dose,
            units="BQML",
            method="QIBA: BQML, decay corrected to ADMIN",
            weight_kg=weight_kg,
            injected_dose_bq=dose,
            half_life_s=half_life,
            decay_seconds=0.0,
        )
    if decay_correction != "START":
        raise PatientDataError(
            patient,
            path,
            f"PET DecayCorrection '{decay_correction or 'missing'}' is not supported",
            "export the PET decay-corrected to the scan start (START) or to administration (ADMIN)",
        )
    scan, source = _scan_datetime(datasets, patient, path)
    injection, injection_source = _injection_datetime(info, scan, patient, path)
    decay_seconds = (scan - injection).total_seconds()
    if decay_seconds < 0:
        raise PatientDataError(
            patient,
            path,
            f"the injection ({injection:%H:%M:%S}, from {injection_source}) is after the scan "
            f"start ({scan:%H:%M:%S}, from {source}): dose in the future",
            "correct the injection date/time or the series date/time in the PET tags",
        )
    if decay_seconds > MAX_UPTAKE_SECONDS:
        raise PatientDataError(
            patient,
            path,
            f"injection-to-scan time of {decay_seconds / 60:.1f} min is implausible "
            f"(injection from {injection_source}, scan from {source})",
            "correct the injection date/time or the series date/time in the PET tags",
        )
    decayed_dose = dose * 2.0 ** (-decay_seconds / half_life)
    return SuvScale(
        factor=weight_g / decayed_dose,
        units="BQML",
        method="QIBA: BQML, decay corrected to START, decayed from injection to scan start",
        weight_kg=weight_kg,
        injected_dose_bq=dose,
        half_life_s=half_life,
        decay_seconds=decay_seconds,
        scan_time_source=source,
    )
