"""Simulate synthetic patients and write them, with their ground truth, as a cohort folder."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from abmseg.atomic import write_atomic
from abmseg.synth.ceiling import ceiling_probability
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
from abmseg.synth.pet import (
    add_pet_noise,
    bin_xy,
    blur,
    emission_grid,
    marrow_box,
    marrow_emission,
    motion_transform,
    quantize_slice,
    sample,
    sub_grid,
)
from abmseg.synth.phantom import Phantom, build_phantom
from abmseg.synth.presets import Preset, get_preset

SHEET_NAME = "patients.tsv"
SHEET_COLUMNS = ("patient_id", "ct", "pet", "label")
# Blur reaches about 3 PSF sigmas; the ceiling's redraw box keeps that much tissue around marrow.
CEILING_MARGIN_MM = 15.0


@dataclass
class SyntheticPatient:
    """Everything simulated for one patient, before it is written (tests use it as truth)."""

    params: PatientParams
    preset: Preset
    phantom: Phantom  # on the CT grid extended in z
    ct_grid: Grid
    pet_grid: Grid
    ct_stored: np.ndarray  # int16 (z, y, x), HU = value - 1024
    label: np.ndarray  # uint8 on the CT grid
    marrow: np.ndarray  # uint8 on the CT grid: region of voxels at least half marrow
    ceiling: np.ndarray  # float32 on the CT grid: P(ABM | what the CT shows)
    pet_clean_suv: np.ndarray  # blurred, moved, noise-free SUV on the PET grid
    pet_suv: np.ndarray  # with noise
    log_suv_stats: dict  # true marrow log-SUV: variance in total and of the CT-invisible part

    @property
    def ct_slab(self) -> slice:
        """The anatomy slices that make up the written CT."""
        pad = self.preset.anatomy_padding()
        return slice(pad, pad + self.ct_grid.size[2])

    def suv_to_bqml(self) -> float:
        """Bq/ml per SUVbw at the series start: decayed dose / body weight in g."""
        acq = self.params.acquisition
        return acq.decayed_dose_bq / (acq.weight_kg * 1000.0)


def _world_points(grid: Grid, mask: np.ndarray) -> np.ndarray:
    z, y, x = np.nonzero(mask)
    return np.stack([grid.axis(0)[x], grid.axis(1)[y], grid.axis(2)[z]], axis=1)


def simulate_patient(seed: int, index: int, preset: str | Preset = "tiny") -> SyntheticPatient:
    """Simulate patient ``index`` (1-based); depends only on (seed, index, preset)."""
    pr = get_preset(preset) if isinstance(preset, str) else preset
    params = draw_patient(seed, index, pr.z_extent_mm)
    m = params.marrow
    streams = patient_streams(seed, index)
    grid = pr.anatomy_grid()
    phantom = build_phantom(params, grid, streams["fields"])
    ct_grid, pet_grid = pr.ct_grid(), pr.pet_grid()
    pad = pr.anatomy_padding()
    slab = slice(pad, pad + ct_grid.size[2])
    ct_stored = ct_stored_values(
        phantom.hu[slab], ct_grid.spacing, params.tissues.ct_noise_sd, streams["ct_noise"]
    )

    # PET: emission grid, marrow uptake x patient factor x PET-only field, PSF, motion, noise.
    egrid = emission_grid(grid, pr.emission_bin)
    other = bin_xy(phantom.suv_other, pr.emission_bin)
    uptake = bin_xy(phantom.marrow_uptake_map(), pr.emission_bin)
    box = marrow_box(uptake > 0, egrid, CEILING_MARGIN_MM)
    box_grid = sub_grid(egrid, box)
    marrow_suv, g = marrow_emission(uptake[box], box_grid, m, m.uptake_factor, streams["pet_field"])
    emission = other.copy()
    emission[box] += marrow_suv
    motion = motion_transform(params.motion)
    clean = np.maximum(sample(blur(emission, egrid), pet_grid, motion), 0.0)
    noisy = add_pet_noise(clean, streams["pet_noise"])

    # Label: marrow where the acquired PET, mapped onto the CT, reaches the patient's marrow mean.
    marrow = phantom.region[slab]
    in_marrow = marrow > 0
    on_ct = sample(pet_grid.image(noisy), ct_grid, motion.GetInverse())
    label = np.where(in_marrow & (on_ct >= on_ct[in_marrow].mean()), marrow, 0).astype(np.uint8)

    points = _world_points(ct_grid, in_marrow)
    ceiling = np.zeros(ct_grid.shape, dtype=np.float32)
    ceiling[in_marrow] = ceiling_probability(
        other[box],
        uptake[box],
        box_grid,
        pet_grid.spacing,
        points,
        m,
        pr.ceiling_draws,
        streams["ceiling"],
    )
    return SyntheticPatient(
        params=params,
        preset=pr,
        phantom=phantom,
        ct_grid=ct_grid,
        pet_grid=pet_grid,
        ct_stored=ct_stored,
        label=label,
        marrow=marrow.copy(),
        ceiling=ceiling,
        pet_clean_suv=clean,
        pet_suv=noisy,
        log_suv_stats=_log_suv_stats(phantom, slab, points, box_grid, g, m),
    )


def _log_suv_stats(phantom: Phantom, slab: slice, points, box_grid: Grid, g, m) -> dict:
    """Variance of the true marrow log-SUV in the CT's field and of its CT-invisible part.

    log SUV = log(factor) + log(uptake(c, b)) + sd g - sd^2 / 2: the uptake term is what the CT
    shows; the factor and the field g are not.
    """
    index = ((points - np.asarray(box_grid.origin)) / np.asarray(box_grid.spacing))[:, ::-1].T
    g_at = ndimage.map_coordinates(g, index, order=1, mode="nearest")
    ny, nx = phantom.grid.shape[1:]
    in_field = np.flatnonzero(phantom.region[slab] > 0) + slab.start * ny * nx
    uptake = phantom.uptake[np.searchsorted(phantom.marrow_index, in_field)]
    visible = np.log(uptake)
    hidden = float(m.pet_sd) * g_at
    return {
        "n": int(len(visible)),
        "mean_visible": float(visible.mean()),
        "var_visible": float(visible.var()),
        "var_hidden_field": float(hidden.var()),
        "var_total_within": float((visible + hidden).var()),
        "log_uptake_factor": float(np.log(m.uptake_factor)),
        "mean_log_suv": float(
            (visible + hidden).mean() + np.log(m.uptake_factor) - m.pet_sd**2 / 2
        ),
    }


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total


def truth_record(sp: SyntheticPatient) -> dict:
    """Ground truth and acquisition facts for tests; no real identity."""
    p, acq, t, m = sp.params, sp.params.acquisition, sp.params.tissues, sp.params.marrow
    counts = np.bincount(sp.label.ravel(), minlength=4)
    marrow_counts = np.bincount(sp.marrow.ravel(), minlength=4)
    ceiling_pred = np.where(sp.ceiling >= 0.5, sp.marrow, 0)
    ceiling_dice = {REGION_NAMES[r]: _dice(ceiling_pred == r, sp.label == r) for r in REGION_NAMES}
    ceiling_dice["mean"] = float(np.mean(list(ceiling_dice.values())))
    y0 = sp.phantom.body_back_y + p.bed.gap_mm
    return {
        "patient_id": p.patient_id,
        "phantom": "abmseg-pelvis-v2",
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
        "pelvis": {
            "scale": p.pelvis.scale,
            "hip_half_width_mm": p.pelvis.hip_half_width,
            "femoral_head_radius_mm": p.pelvis.head_radius,
            "tilt_deg": p.pelvis.tilt_deg,
        },
        "marrow": {
            "cellularity_mean": m.cellularity,
            "trabecular_fraction_mean": m.trabecular,
            "uptake_factor": m.uptake_factor,
            "field_sigma_mm": m.field_sigma_mm,
            "pet_field_sd": m.pet_sd,
            "pet_field_sigma_mm": m.pet_sigma_mm,
            "log_suv": sp.log_suv_stats,
        },
        "abm_share": float(counts[1:].sum() / max(marrow_counts[1:].sum(), 1)),
        "ceiling_dice": ceiling_dice,
        "bladder_suv": t.urine_suv,
        "tissues": dataclasses.asdict(t),
        "tumour": p.organs.tumour is not None,
        "ct_noise_sd_hu_ref_voxel": t.ct_noise_sd,
        "pet_noise_sd": {
            "gain": PET_NOISE_GAIN,
            "floor": PET_NOISE_FLOOR,
            "formula": "gain*sqrt(SUV)+floor",
        },
        "fat_thickness_mm": p.body.fat_mm,
        "label_voxels": {REGION_NAMES[r]: int(counts[r]) for r in REGION_NAMES},
        "marrow_voxels": {REGION_NAMES[r]: int(marrow_counts[r]) for r in REGION_NAMES},
        "bed_y_range_mm": [y0, y0 + p.bed.thickness_mm],
    }


def write_patient(sp: SyntheticPatient, folder: Path, seed: int) -> None:
    """Write CT/, PET/, label.nii.gz and truth.json into ``folder`` (which must exist)."""
    writer = SeriesWriter(sp.params, seed, sp.preset.name)
    (folder / "CT").mkdir()
    (folder / "PET").mkdir()
    writer.write_ct(folder / "CT", sp.ct_grid, sp.ct_stored)
    bqml = sp.pet_suv.astype(np.float64) * sp.suv_to_bqml()
    writer.write_pet(folder / "PET", sp.pet_grid, [quantize_slice(s) for s in bqml])
    for name, array in (("label", sp.label), ("marrow", sp.marrow), ("ceiling_prob", sp.ceiling)):
        image = sp.ct_grid.image(array)
        sitk.WriteImage(image, str(folder / f"{name}.nii.gz"), useCompression=True)
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
    from abmseg.io.dicom_series import read_series
    from abmseg.regions import DEFAULT_REGIONS
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
