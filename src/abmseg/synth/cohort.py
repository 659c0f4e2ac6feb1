"""Simulate synthetic patients and write them, with their ground truth, as a cohort folder."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from abmseg.atomic import write_atomic
from abmseg.synth.anatomy import Anatomy, build_anatomy
from abmseg.synth.ct import ct_stored_values
from abmseg.synth.dicom import STUDY_DATE_STR, SeriesWriter, dicom_time
from abmseg.synth.grid import Grid
from abmseg.synth.params import (
    PET_NOISE_FLOOR,
    PET_NOISE_GAIN,
    PSF_FWHM_MM,
    REGION_NAMES,
    PatientParams,
    draw_patient,
    patient_id,
    patient_streams,
)
from abmseg.synth.pet import add_pet_noise, blur_and_move, quantize_slice
from abmseg.synth.presets import Preset, get_preset

SHEET_NAME = "patients.tsv"
SHEET_COLUMNS = ("patient_id", "ct", "pet", "label")


@dataclass
class SyntheticPatient:
    """Everything simulated for one patient, before it is written (tests use it as truth)."""

    params: PatientParams
    preset: Preset
    anatomy: Anatomy  # on the CT grid extended in z
    ct_grid: Grid
    pet_grid: Grid
    ct_stored: np.ndarray  # int16 (z, y, x), HU = value - 1024
    label: np.ndarray  # uint8 on the CT grid
    pet_clean_suv: np.ndarray  # blurred, moved, noise-free SUV on the PET grid
    pet_suv: np.ndarray  # with noise

    @property
    def ct_slab(self) -> slice:
        """The anatomy slices that make up the written CT."""
        pad = self.preset.anatomy_padding()
        return slice(pad, pad + self.ct_grid.size[2])

    def suv_to_bqml(self) -> float:
        """Bq/ml per SUVbw at the series start: decayed dose / body weight in g."""
        acq = self.params.acquisition
        return acq.decayed_dose_bq / (acq.weight_kg * 1000.0)


def simulate_patient(seed: int, index: int, preset: str | Preset = "tiny") -> SyntheticPatient:
    """Simulate patient ``index`` (1-based); depends only on (seed, index, preset)."""
    pr = get_preset(preset) if isinstance(preset, str) else preset
    params = draw_patient(seed, index, pr.z_extent_mm)
    streams = patient_streams(seed, index)
    grid = pr.anatomy_grid()
    anatomy = build_anatomy(params, grid, streams["fields"])
    ct_grid, pet_grid = pr.ct_grid(), pr.pet_grid()
    pad = pr.anatomy_padding()
    slab = slice(pad, pad + ct_grid.size[2])
    ct_stored = ct_stored_values(anatomy.hu[slab], params.tissues.ct_noise_sd, streams["ct_noise"])
    clean = blur_and_move(anatomy.suv, grid, pet_grid, params.motion)
    noisy = add_pet_noise(clean, streams["pet_noise"])
    return SyntheticPatient(
        params=params,
        preset=pr,
        anatomy=anatomy,
        ct_grid=ct_grid,
        pet_grid=pet_grid,
        ct_stored=ct_stored,
        label=np.ascontiguousarray(anatomy.label[slab]),
        pet_clean_suv=clean,
        pet_suv=noisy,
    )


def truth_record(sp: SyntheticPatient) -> dict:
    """Ground truth and acquisition facts for tests; no real identity."""
    p, acq, t = sp.params, sp.params.acquisition, sp.params.tissues
    counts = np.bincount(sp.label.ravel(), minlength=4)
    return {
        "patient_id": p.patient_id,
        "preset": sp.preset.name,
        "ct_grid": sp.ct_grid.as_dict(),
        "pet_grid": sp.pet_grid.as_dict(),
        "motion": {
            "center": list(p.motion.center),
            "angles_rad": list(p.motion.angles_rad),
            "translation_mm": list(p.motion.translation_mm),
            "transform": "SimpleITK Euler3DTransform (ComputeZYX off): SetCenter, SetRotation, "
            "SetTranslation",
            "convention": "T maps PET-world points to CT-world points: pet(p) = anatomy(T(p))",
        },
        "psf_fwhm_mm": PSF_FWHM_MM,
        "weight_kg": acq.weight_kg,
        "height_m": acq.height_m,
        "age": acq.age,
        "sex": acq.sex,
        "total_dose_bq": acq.total_dose_bq,
        "half_life_s": acq.half_life_s,
        "decayed_dose_bq": acq.decayed_dose_bq,
        "study_date": STUDY_DATE_STR,
        "injection_time_s": acq.injection_s,
        "injection_time": dicom_time(acq.injection_s),
        "series_time_s": acq.pet_s,
        "series_time": dicom_time(acq.pet_s),
        "ct_time_s": acq.ct_s,
        "ct_time": dicom_time(acq.ct_s),
        "uptake_seconds": acq.uptake_s,
        "active_fraction": t.active_fraction,
        "red_marrow_hu_mean": t.red_hu,
        "yellow_marrow_hu_mean": t.yellow_hu,
        "red_marrow_suv_mean": t.red_suv_mean,
        "yellow_marrow_suv": t.yellow_suv,
        "bladder_suv": t.bladder_suv,
        "marrow_mean_suv": sp.anatomy.marrow_mean_suv,
        "ct_noise_sd_hu": t.ct_noise_sd,
        "pet_noise_sd": {
            "gain": PET_NOISE_GAIN,
            "floor": PET_NOISE_FLOOR,
            "formula": "gain*sqrt(SUV)+floor",
        },
        "fat_thickness_mm": p.body.fat_mm,
        "label_voxels": {REGION_NAMES[r]: int(counts[r]) for r in REGION_NAMES},
        "bed_y_range_mm": list(p.bed.y_range_mm),
    }


def write_patient(sp: SyntheticPatient, folder: Path, seed: int) -> None:
    """Write CT/, PET/, label.nii.gz and truth.json into ``folder`` (which must exist)."""
    writer = SeriesWriter(sp.params, seed, sp.preset.name)
    (folder / "CT").mkdir()
    (folder / "PET").mkdir()
    writer.write_ct(folder / "CT", sp.ct_grid, sp.ct_stored)
    bqml = sp.pet_suv.astype(np.float64) * sp.suv_to_bqml()
    writer.write_pet(folder / "PET", sp.pet_grid, [quantize_slice(s) for s in bqml])
    sitk.WriteImage(sp.ct_grid.image(sp.label), str(folder / "label.nii.gz"), useCompression=True)
    # The folder is renamed into place only when complete, so plain writes are enough here.
    text = json.dumps(truth_record(sp), indent=2, sort_keys=True) + "\n"
    (folder / "truth.json").write_text(text)


def _replace_dir(tmp: Path, target: Path) -> None:
    """Move a finished patient folder into place; an old one is removed only afterwards."""
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old")
        if old.exists():
            shutil.rmtree(old)
        os.replace(target, old)
    os.replace(tmp, target)
    if old is not None:
        shutil.rmtree(old)


LABEL_FILES = {"nifti": "label.nii.gz", "rtstruct": "label.dcm"}


def label_as_rtstruct(folder: Path, patient: str) -> None:
    """Replace folder/label.nii.gz by label.dcm, an RTSTRUCT of the patient's CT series."""
    from abmseg.io.convert import DEFAULT_REGIONS
    from abmseg.io.dicom_series import read_series
    from abmseg.rt.rtstruct import write_rtstruct

    label = sitk.ReadImage(str(folder / "label.nii.gz"))
    series = read_series(folder / "CT", "CT", patient)
    write_rtstruct(label, series, DEFAULT_REGIONS, folder / "label.dcm", patient=patient)
    (folder / "label.nii.gz").unlink()


def generate_cohort(
    out_dir: str | Path,
    n_patients: int,
    seed: int,
    preset: str = "tiny",
    label_format: str = "nifti",
) -> Path:
    """Write OUT/<patient>/CT/*.dcm, OUT/<patient>/PET/*.dcm, OUT/<patient>/label.nii.gz,
    OUT/<patient>/truth.json and OUT/patients.tsv; return the sheet path. ``label_format``
    "rtstruct" writes the labels as an RT Structure Set of the CT (label.dcm) instead, as a
    treatment-planning system would export them.

    Patients are built in hidden temporary folders and renamed into place; the sheet is removed
    first and written last, so a crash never leaves a sheet that points at half a patient.
    """
    if n_patients < 1:
        raise ValueError(f"n_patients must be at least 1, got {n_patients}")
    if label_format not in LABEL_FILES:
        raise ValueError(f"label_format must be one of {sorted(LABEL_FILES)}, got {label_format}")
    pr = get_preset(preset)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sheet = out / SHEET_NAME
    sheet.unlink(missing_ok=True)
    rows = ["\t".join(SHEET_COLUMNS)]
    for index in range(1, n_patients + 1):
        pid = patient_id(index)
        tmp = Path(tempfile.mkdtemp(prefix=f".{pid}.", suffix=".part", dir=out))
        try:
            write_patient(simulate_patient(seed, index, pr), tmp, seed)
            if label_format == "rtstruct":
                label_as_rtstruct(tmp, pid)
            tmp.chmod(0o755)
            _replace_dir(tmp, out / pid)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp)
        label = f"{pid}/{LABEL_FILES[label_format]}"
        rows.append("\t".join([pid, f"{pid}/CT", f"{pid}/PET", label]))
    text = "\n".join(rows) + "\n"
    write_atomic(sheet, lambda tmp: _write_readable(tmp, text))
    return sheet


def _write_readable(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(0o644)  # the atomic helper's temporary file starts as owner-only
