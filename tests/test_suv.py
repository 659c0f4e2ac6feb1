"""SUVbw scale factors against hand computations (QIBA vendor-neutral pseudo-code)."""

import math

import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from abmseg.errors import PatientDataError
from abmseg.io.suv import suv_scale

PATIENT = "P007"
PATH = "/data/P007/pet/slice_001.dcm"

WEIGHT_KG = 75.0
DOSE_BQ = 370e6
F18_HALF_LIFE_S = 6586.2


def _pet(
    *,
    units="BQML",
    decay="START",
    corrected=("ATTN", "DECY"),
    weight="75",
    series=("20240315", "100000"),
    acquisition=("20240315", "100000"),
    start_time="090000",
    start_datetime=None,
    dose="370000000",
    half_life="6586.2",
    sequence=True,
):
    ds = Dataset()
    ds.Modality = "PT"
    ds.Units = units
    if decay is not None:
        ds.DecayCorrection = decay
    if corrected is not None:
        ds.CorrectedImage = list(corrected)
    if weight is not None:
        ds.PatientWeight = weight
    if series is not None:
        ds.SeriesDate, ds.SeriesTime = series
    if acquisition is not None:
        ds.AcquisitionDate, ds.AcquisitionTime = acquisition
    if sequence:
        info = Dataset()
        if dose is not None:
            info.RadionuclideTotalDose = dose
        if half_life is not None:
            info.RadionuclideHalfLife = half_life
        if start_time is not None:
            info.RadiopharmaceuticalStartTime = start_time
        if start_datetime is not None:
            info.RadiopharmaceuticalStartDateTime = start_datetime
        ds.RadiopharmaceuticalInformationSequence = Sequence([info])
    return ds


def _factor(decay_seconds):
    """Hand computation: SUVbw = weight[g] / (dose * 2^(-t / T_half))."""
    return (WEIGHT_KG * 1000.0) / (DOSE_BQ * 2.0 ** (-decay_seconds / F18_HALF_LIFE_S))


def test_bqml_start_one_hour_uptake():
    scale = suv_scale([_pet()], PATIENT, PATH)
    expected = 75000 / (370e6 * 2 ** (-3600 / 6586.2))
    assert scale.factor == pytest.approx(expected, rel=1e-12)
    # Same law written as exp(-ln 2 * t / T): 2.0270e-4 * 1.46064 = 2.96075e-4.
    assert scale.factor == pytest.approx(
        75000 / (370e6 * math.exp(-math.log(2) * 3600 / 6586.2)), rel=1e-12
    )
    assert scale.factor == pytest.approx(2.96075e-4, rel=1e-5)
    assert scale.decay_seconds == 3600.0
    assert scale.units == "BQML"
    assert scale.weight_kg == 75.0
    assert scale.injected_dose_bq == 370e6
    assert scale.half_life_s == 6586.2
    assert scale.scan_time_source == "SeriesDate/SeriesTime"


def test_fractional_seconds_in_times():
    scale = suv_scale(
        [_pet(series=("20240315", "101500.25"), acquisition=None, start_time="090000.000")],
        PATIENT,
        PATH,
    )
    assert scale.decay_seconds == pytest.approx(4500.25, abs=1e-9)
    assert scale.factor == pytest.approx(_factor(4500.25), rel=1e-12)


def test_start_datetime_preferred_over_start_time():
    # StartTime says 09:00 (60 min); StartDateTime says 09:30 (30 min): StartDateTime wins.
    ds = _pet(start_time="090000", start_datetime="20240315093000")
    scale = suv_scale([ds], PATIENT, PATH)
    assert scale.decay_seconds == 1800.0
    assert scale.factor == pytest.approx(75000 / (370e6 * 2 ** (-1800 / 6586.2)), rel=1e-12)


def test_start_datetime_with_utc_offset():
    ds = _pet(start_time=None, start_datetime="20240315091500.000000+0100")
    scale = suv_scale([ds], PATIENT, PATH)
    assert scale.decay_seconds == 2700.0


def test_start_datetime_only():
    scale = suv_scale([_pet(start_time=None, start_datetime="20240315084000")], PATIENT, PATH)
    assert scale.decay_seconds == 4800.0
    assert scale.factor == pytest.approx(_factor(4800.0), rel=1e-12)


def test_midnight_crossing_with_start_time_only():
    # Injection 23:30 (time only), scan 00:20 the next day: 50 min of decay.
    next_day = ("20240316", "002000")
    ds = _pet(series=next_day, acquisition=next_day, start_time="233000")
    scale = suv_scale([ds], PATIENT, PATH)
    assert scale.decay_seconds == 50 * 60
    assert scale.factor == pytest.approx(75000 / (370e6 * 2 ** (-3000 / 6586.2)), rel=1e-12)


def test_series_time_after_acquisition_uses_earliest_acquisition():
    # Series time 11:00 (post-processing) is after the acquisitions (10:05, 10:00, 10:10):
    # QIBA uses the earliest acquisition time, 10:00, so decay is 60 min, not 120.
    slices = [
        _pet(series=("20240315", "110000"), acquisition=("20240315", "100500")),
        _pet(series=("20240315", "110000"), acquisition=("20240315", "100000")),
        _pet(series=("20240315", "110000"), acquisition=("20240315", "101000")),
    ]
    scale = suv_scale(slices, PATIENT, PATH)
    assert scale.decay_seconds == 3600.0
    assert scale.scan_time_source == "earliest AcquisitionDate/AcquisitionTime"
    assert scale.factor == pytest.approx(_factor(3600.0), rel=1e-12)


def test_series_time_before_acquisition_is_used():
    ds = _pet(series=("20240315", "100000"), acquisition=("20240315", "102000"))
    scale = suv_scale([ds], PATIENT, PATH)
    assert scale.decay_seconds == 3600.0
    assert scale.scan_time_source == "SeriesDate/SeriesTime"


def test_admin_decay_correction_needs_no_times():
    ds = _pet(decay="ADMIN", series=None, acquisition=None, start_time=None)
    scale = suv_scale([ds], PATIENT, PATH)
    assert scale.factor == pytest.approx(75000 / 370e6, rel=1e-12)
    assert scale.decay_seconds == 0.0


def test_gml_is_already_suv():
    ds = _pet(units="GML", weight=None, sequence=False)
    scale = suv_scale([ds], PATIENT, PATH)
    assert scale.factor == 1.0
    assert scale.units == "GML"


def test_cnts_with_philips_suv_factor():
    ds = _pet(units="CNTS")
    ds.add_new(0x70530010, "LO", "Philips PET Private Group")
    ds.add_new(0x70531000, "DS", "0.000321")
    scale = suv_scale([ds], PATIENT, PATH)
    assert scale.factor == pytest.approx(0.000321, rel=1e-12)
    assert scale.units == "CNTS"


def test_cnts_with_philips_activity_scale():
    # (7053,1009) turns counts into Bq/ml; then the BQML factor applies.
    ds = _pet(units="CNTS")
    ds.add_new(0x70530010, "LO", "Philips PET Private Group")
    ds.add_new(0x70531009, "DS", "2.5")
    scale = suv_scale([ds], PATIENT, PATH)
    assert scale.factor == pytest.approx(2.5 * _factor(3600.0), rel=1e-12)


def _assert_patient_error(datasets, *words):
    with pytest.raises(PatientDataError) as info:
        suv_scale(datasets, PATIENT, PATH)
    message = str(info.value)
    assert PATIENT in message
    assert PATH in message
    assert "Fix:" in message
    for word in words:
        assert word in message
    assert info.value.patient == PATIENT
    assert info.value.path == PATH
    return message


def test_cnts_without_philips_factor_is_refused():
    _assert_patient_error([_pet(units="CNTS")], "CNTS")


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"weight": None}, ["PatientWeight"]),
        ({"weight": "0"}, ["PatientWeight"]),
        ({"dose": None}, ["RadionuclideTotalDose"]),
        ({"half_life": None}, ["RadionuclideHalfLife"]),
        ({"start_time": None}, ["injection time"]),
        ({"sequence": False}, ["RadiopharmaceuticalInformationSequence"]),
        ({"corrected": ("ATTN",)}, ["CorrectedImage"]),
        ({"corrected": None}, ["CorrectedImage"]),
        ({"units": "PROPCPS"}, ["PROPCPS"]),
        ({"units": ""}, ["missing"]),
        ({"decay": "NONE"}, ["DecayCorrection"]),
        ({"series": None, "acquisition": None}, ["scan time"]),
        # Full injection date-time 10:30 after the 10:00 scan: negative decay.
        ({"start_datetime": "20240315103000"}, ["dose in the future", "10:30:00", "10:00:00"]),
        # Time of day only, 10:30 after a 10:00 scan: taken as the day before, 23.5 h of uptake.
        ({"start_time": "103000"}, ["implausible", "previous day"]),
        # Injection a day (and a bit) before the scan: beyond any real uptake time.
        ({"start_datetime": "20240314090000"}, ["implausible"]),
    ],
)
def test_unusable_tags_raise_patient_data_error(changes, words):
    _assert_patient_error([_pet(**changes)], *words)
