"""Body-weight SUV from PET DICOM tags, following QIBA's vendor-neutral pseudo-code.

Reference: QIBA FDG-PET/CT profile, "SUV calculation: vendor-neutral pseudo-code"
(Units BQML with DecayCorrection START decayed from the injection to the scan start; CNTS via
Philips' SUV or activity-concentration scale factors; GML already in SUVbw).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass
from pathlib import Path

from pydicom.dataset import Dataset
from pydicom.tag import Tag

from abmseg.errors import PatientDataError

PHILIPS_SUV_SCALE = Tag(0x7053, 0x1000)
PHILIPS_ACTIVITY_SCALE = Tag(0x7053, 0x1009)
GE_SCAN_DATETIME = Tag(0x0009, 0x100D)
# A decay time outside this range means wrong dates or times, not a real scan.
MAX_UPTAKE_SECONDS = 12 * 3600


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
    value = ds.get(keyword)
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if not number > 0:
        raise PatientDataError(
            patient, path, f"PET has no usable {what} (tag {keyword} = {value!r})", _fix_tags(what)
        )
    return number


def _scan_datetime(datasets: list[Dataset], patient: str, path: Path) -> tuple[dt.datetime, str]:
    first = datasets[0]
    series = _datetime(first.get("SeriesDate"), first.get("SeriesTime"))
    acquisitions = [
        stamp
        for ds in datasets
        if (stamp := _datetime(ds.get("AcquisitionDate"), ds.get("AcquisitionTime"))) is not None
    ]
    earliest = min(acquisitions) if acquisitions else None
    if series is not None and (earliest is None or series <= earliest):
        return series, "SeriesDate/SeriesTime"
    ge = _dicom_datetime(first.get(GE_SCAN_DATETIME).value if GE_SCAN_DATETIME in first else None)
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
    full = _dicom_datetime(info.get("RadiopharmaceuticalStartDateTime"))
    if full is not None:
        return full, "RadiopharmaceuticalStartDateTime"
    start = _datetime(scan.strftime("%Y%m%d"), info.get("RadiopharmaceuticalStartTime"))
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


def suv_scale(datasets: list[Dataset], patient: str, path: str | Path) -> SuvScale:
    """SUVbw factor for a PET series (datasets of all slices; the first one carries the tags)."""
    path = Path(path)
    first = datasets[0]
    units = str(first.get("Units", "")).upper()
    if units == "GML":
        return SuvScale(factor=1.0, units=units, method="QIBA: GML images are SUVbw already")

    if (
        units == "CNTS"
        and PHILIPS_SUV_SCALE in first
        and float(first[PHILIPS_SUV_SCALE].value or 0) > 0
    ):
        # The vendor's factor already folds in weight, dose and decay.
        return SuvScale(
            factor=float(first[PHILIPS_SUV_SCALE].value),
            units=units,
            method="QIBA: Philips SUV scale factor (7053,1000)",
        )
    weight_kg = _positive(first, "PatientWeight", patient, path, "patient weight")
    weight_g = weight_kg * 1000.0
    if units == "CNTS":
        if PHILIPS_ACTIVITY_SCALE in first and float(first[PHILIPS_ACTIVITY_SCALE].value or 0) > 0:
            to_bqml = float(first[PHILIPS_ACTIVITY_SCALE].value)
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
    corrected = {str(v).upper() for v in (first.get("CorrectedImage") or [])}
    if not {"ATTN", "DECY"} <= corrected:
        raise PatientDataError(
            patient,
            path,
            f"PET is not attenuation and decay corrected (CorrectedImage {sorted(corrected)})",
            "use the attenuation- and decay-corrected reconstruction (CorrectedImage ATTN, DECY)",
        )
    sequence = first.get("RadiopharmaceuticalInformationSequence")
    if not sequence:
        raise PatientDataError(
            patient,
            path,
            "PET has no RadiopharmaceuticalInformationSequence",
            _fix_tags("the injected dose, half-life and injection time"),
        )
    info = sequence[0]
    dose = _positive(info, "RadionuclideTotalDose", patient, path, "injected dose")
    half_life = _positive(info, "RadionuclideHalfLife", patient, path, "radionuclide half-life")
    decay_correction = str(first.get("DecayCorrection", "")).upper()
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
    if not 0 <= decay_seconds <= MAX_UPTAKE_SECONDS:
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
