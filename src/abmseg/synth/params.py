"""Per-patient random parameters: every number that makes one synthetic patient unique.

Everything is drawn from ``SeedSequence([seed, k])`` and does not depend on the cohort size, so
patient k is the same in a cohort of any size. The parameters drawn here do not depend on the grid
either (given the CT's axial length, 240 mm in both presets); the smooth random fields of marrow
and PET are drawn on the grid, so they differ between presets. Literature values used as anchors
are cited where they are drawn.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np

from abmseg.synth.skeleton import REGION_NAMES, PelvisShape

STUDY_DATE = dt.date(2024, 3, 15)
F18_HALF_LIFE_S = 6586.2
__all__ = ["REGION_NAMES", "PatientParams", "draw_patient", "patient_id", "patient_streams"]
# PET noise model: sd = PET_NOISE_GAIN * sqrt(SUV) + PET_NOISE_FLOOR (SUV units) per PET voxel.
PET_NOISE_GAIN = 0.08
PET_NOISE_FLOOR = 0.02
PSF_FWHM_MM = 6.0
# CT noise is drawn for a reference voxel of 0.977 x 0.977 x 2.5 mm and scales with
# 1/sqrt(voxel volume), as quantum noise does when voxels are averaged.
CT_NOISE_REF_VOXEL_MM3 = 0.9765625 * 0.9765625 * 2.5
# Mineralised bone tissue and the two marrow components, HU (Suchacki et al., Nat Commun 2020:
# proximal-femur marrow below 115 HU is fatty, 115-300 HU red; fat about -100 HU).
BONE_TISSUE_HU = 1900.0


@dataclass(frozen=True)
class Body:
    """Trunk outline: fat and muscle margins around the skeleton, and the belly's depth."""

    centre_xy: tuple[float, float]
    fat_mm: float  # subcutaneous fat
    lateral_muscle_mm: float  # gluteal/thigh muscle beyond the outermost bone
    posterior_muscle_mm: float  # paraspinal and gluteus maximus behind the bones
    belly_mm: float  # depth of the abdomen in front of the body centre (inside the fat)
    wall_mm: float  # abdominal wall muscle thickness


@dataclass(frozen=True)
class Bed:
    """Scanner table: a plate behind the patient, separated from the body by air."""

    gap_mm: float  # air between the body's back and the table
    thickness_mm: float
    half_width_mm: float
    hu: float


@dataclass(frozen=True)
class BowelLoop:
    """One bowel segment: a tube through ``points`` (pelvis frame), possibly holding gas."""

    points: tuple[tuple[float, float, float], ...]
    radius: float
    gas: bool
    suv: float


@dataclass(frozen=True)
class Organs:
    """Pelvic organs and vessels (pelvis frame), and an optional rectal tumour."""

    bladder_fill: float  # scales the bladder's volume
    rectum_radius: float
    rectum_gas: bool
    bowel: tuple[BowelLoop, ...]
    tumour: tuple[float, float, float, float] | None  # centre (pelvis frame) and radius, mm


@dataclass(frozen=True)
class Tissues:
    """CT numbers and true SUVbw of the soft tissues and cortex."""

    fat_hu: float
    muscle_hu: float
    disc_hu: float
    urine_hu: float
    bowel_wall_hu: float
    bowel_content_hu: float
    gas_hu: float
    blood_hu: float
    tumour_hu: float
    cortex_hu: float
    ct_noise_sd: float  # at the reference voxel
    fat_suv: float
    muscle_suv: float
    disc_suv: float
    urine_suv: float
    bowel_wall_suv: float
    blood_suv: float
    tumour_suv: float
    cortex_suv: float


@dataclass(frozen=True)
class Marrow:
    """Marrow composition fields and how they reach CT and PET.

    cellularity c(x) = sigmoid(logit(c_mean) + site_weight * site(x) + cell_sd * field_c(x));
    trabecular fraction b(x) = b_mean * site_b(x) * exp(bone_sd * field_b(x) - bone_sd^2 / 2),
    clipped to [0, 0.6], field_b sharing a part of field_c (marrow.BONE_CELL_COUPLING);
    HU = b * BONE_TISSUE_HU + (1 - b) * (c * red_hu + (1 - c) * fat_hu);
    true SUV = factor * suv_scale * (1 - b) * (fat_uptake + c)^power * exp(pet_sd g - pet_sd^2/2),
    g a smooth field independent of everything the CT shows.
    """

    cellularity: float
    trabecular: float
    site_weight: float
    cell_sd: float
    bone_sd: float
    field_sigma_mm: float
    red_hu: float
    fat_hu: float
    suv_scale: float
    fat_uptake: float
    uptake_power: float  # uptake grows faster than linearly with cellularity
    uptake_factor: float  # the patient's log-normal factor (CV about 20 %)
    pet_sd: float
    pet_sigma_mm: float


@dataclass(frozen=True)
class Motion:
    """Rigid CT-to-PET patient motion as a SimpleITK Euler3DTransform (PET -> CT points)."""

    center: tuple[float, float, float]
    angles_rad: tuple[float, float, float]
    translation_mm: tuple[float, float, float]


@dataclass(frozen=True)
class Acquisition:
    """Demographics, dose and clock times (seconds of the day on ``STUDY_DATE``)."""

    age: int
    sex: str
    birth_date: dt.date
    weight_kg: float
    height_m: float
    total_dose_bq: float
    half_life_s: float
    injection_s: int
    uptake_s: int
    ct_s: int

    @property
    def pet_s(self) -> int:
        return self.injection_s + self.uptake_s

    @property
    def decayed_dose_bq(self) -> float:
        """Dose at the PET series start (DecayCorrection START reference)."""
        return self.total_dose_bq * 2.0 ** (-self.uptake_s / self.half_life_s)


@dataclass(frozen=True)
class PatientParams:
    index: int
    patient_id: str
    pelvis: PelvisShape
    body: Body
    organs: Organs
    bed: Bed
    tissues: Tissues
    marrow: Marrow
    motion: Motion
    acquisition: Acquisition


def patient_id(index: int) -> str:
    return f"SYN{index:03d}"


STREAMS = ("params", "fields", "ct_noise", "pet_noise", "pet_field", "ceiling")


def patient_streams(seed: int, index: int) -> dict[str, np.random.Generator]:
    """Independent generators per purpose, so a grid change never shifts the anatomy draws."""
    children = np.random.SeedSequence([seed, index]).spawn(len(STREAMS))
    return {n: np.random.default_rng(c) for n, c in zip(STREAMS, children, strict=True)}


def _triple(values: np.ndarray) -> tuple[float, float, float]:
    x, y, z = (float(v) for v in values)
    return x, y, z


def draw_uptake_factor(rng: np.random.Generator) -> float:
    """The patient's marrow uptake factor: log-normal, mean 1, CV about 20 %."""
    return float(np.exp(rng.normal(0.0, 0.2) - 0.02))


def _marrow(rng: np.random.Generator, age: int, sex: str) -> Marrow:
    """Cellularity and bone density from age and sex, then the per-patient texture settings."""
    # Marrow fat fraction: 27-35 % in young adults' lumbar spine, rising with age; men fattier
    # before about 50, women catching up after the menopause (Griffith et al., Radiology 2012).
    fat = 0.30 + 0.0065 * (age - 25)
    fat += (0.03 if age < 50 else 0.0) if sex == "M" else 0.03 * max(age - 50, 0) / 20.0
    # Fatty marrow goes with low bone density (Griffith et al., Radiology 2005): the patient's
    # deviations from the age curves share a common part.
    shared = float(rng.normal())
    fat += 0.08 * (0.8 * shared + 0.6 * float(rng.normal()))
    cellularity = float(np.clip(1.0 - fat, 0.25, 0.80))
    red_hu = float(rng.uniform(40.0, 60.0))
    fat_hu = float(rng.uniform(-110.0, -90.0))
    # Trabecular L1 bone: 226 +- 44 HU under 30, about 2.5 HU lower each year (Jang et al.,
    # Radiology 2019). Solve the mixture for the trabecular fraction that gives it.
    target_hu = 226.0 - 2.5 * (age - 25) - 35.0 * (0.8 * shared + 0.6 * float(rng.normal()))
    mix = cellularity * red_hu + (1.0 - cellularity) * fat_hu
    trabecular = float(np.clip((target_hu - mix) / (BONE_TISSUE_HU - mix), 0.02, 0.25))
    return Marrow(
        cellularity=cellularity,
        trabecular=trabecular,
        site_weight=1.0,
        cell_sd=1.1,
        bone_sd=0.25,
        field_sigma_mm=float(rng.uniform(8.0, 15.0)),
        red_hu=red_hu,
        fat_hu=fat_hu,
        suv_scale=3.4,
        fat_uptake=0.05,
        uptake_power=1.0,
        uptake_factor=draw_uptake_factor(rng),
        pet_sd=0.25,
        pet_sigma_mm=float(rng.uniform(8.0, 15.0)),
    )


def _bowel(rng: np.random.Generator, hx: float) -> tuple[BowelLoop, ...]:
    """Small-bowel and sigmoid loops: random walks in the abdomen above the bladder."""
    loops = []
    for _ in range(int(rng.integers(6, 11))):
        p = np.array(
            [rng.uniform(-0.7, 0.7) * hx, rng.uniform(-75.0, -15.0), rng.uniform(70.0, 200.0)]
        )
        pts = [p.copy()]
        for _step in range(int(rng.integers(3, 6))):
            step = rng.normal(0.0, 1.0, size=3)
            step *= 28.0 / max(float(np.linalg.norm(step)), 1e-6)
            p = p + step
            p[0] = np.clip(p[0], -0.75 * hx, 0.75 * hx)
            p[1] = np.clip(p[1], -85.0, 0.0)
            p[2] = np.clip(p[2], 60.0, 215.0)
            pts.append(p.copy())
        loops.append(
            BowelLoop(
                points=tuple(_triple(q) for q in pts),
                radius=float(rng.uniform(9.0, 15.0)),
                gas=bool(rng.random() < 0.5),
                suv=float(rng.uniform(1.0, 3.0)),
            )
        )
    return tuple(loops)


def draw_patient(seed: int, index: int, z_extent_mm: float) -> PatientParams:
    """All random parameters of patient ``index`` (1-based) for ``seed``."""
    rng = patient_streams(seed, index)["params"]

    age = int(rng.integers(18, 71))
    sex = "F" if rng.random() < 0.5 else "M"
    birth = dt.date(STUDY_DATE.year - age, STUDY_DATE.month, STUDY_DATE.day) - dt.timedelta(
        days=int(rng.integers(1, 365))
    )
    female = sex == "F"
    # Pelvis: women's pelves are smaller overall but wider between the hips and more flared.
    scale = float(rng.normal(0.95 if female else 1.02, 0.035))
    cx, cy = (float(v) for v in rng.uniform(-8.0, 8.0, size=2))
    hip_z = z_extent_mm * 0.3 + float(rng.uniform(-8.0, 8.0))
    pelvis = PelvisShape(
        scale=scale,
        hip_half_width=float(rng.normal(92.0 if female else 87.0, 3.0)),
        head_radius=float(rng.normal(22.5 if female else 25.0, 1.0)),
        wing_flare=float(rng.normal(1.06 if female else 1.0, 0.03)),
        crest_height=float(rng.normal(128.0 if female else 138.0, 5.0)),
        wing_centre_mm=float(rng.uniform(2.0, 4.0)),
        tilt_deg=float(rng.normal(4.0 if female else 0.0, 4.0)),
        lordosis_deg=float(rng.normal(0.0, 4.0)),
        origin=(cx + float(rng.uniform(-4.0, 4.0)), cy - 15.0, hip_z),
        cortex_mm=float(rng.uniform(0.5, 1.0)),
        femur_cortex_mm=float(rng.uniform(4.0, 6.0)),
    )
    body = Body(
        centre_xy=(cx, cy),
        fat_mm=float(rng.uniform(12.0, 38.0) + (6.0 if female else 0.0)),
        lateral_muscle_mm=float(rng.uniform(28.0, 42.0)),
        posterior_muscle_mm=float(rng.uniform(35.0, 50.0)),
        belly_mm=float(rng.uniform(95.0, 140.0)),
        wall_mm=float(rng.uniform(8.0, 14.0)),
    )
    tumour = None
    if rng.random() < 0.3:
        tumour = (
            float(rng.uniform(-8.0, 8.0)),
            float(rng.uniform(35.0, 60.0)),
            float(rng.uniform(-30.0, 40.0)),
            float(rng.uniform(10.0, 22.0)),
        )
    organs = Organs(
        bladder_fill=float(rng.uniform(0.5, 1.4)),
        rectum_radius=float(rng.uniform(11.0, 18.0)),
        rectum_gas=bool(rng.random() < 0.6),
        bowel=_bowel(rng, pelvis.hip_half_width),
        tumour=tumour,
    )
    bed = Bed(
        gap_mm=float(rng.uniform(8.0, 25.0)),
        thickness_mm=float(rng.uniform(10.0, 20.0)),
        half_width_mm=220.0,
        hu=float(rng.uniform(100.0, 300.0)),
    )
    tissues = Tissues(
        fat_hu=float(rng.uniform(-110.0, -90.0)),
        muscle_hu=float(rng.uniform(40.0, 55.0)),
        disc_hu=float(rng.uniform(70.0, 95.0)),
        urine_hu=float(rng.uniform(0.0, 15.0)),
        bowel_wall_hu=float(rng.uniform(35.0, 50.0)),
        bowel_content_hu=float(rng.uniform(10.0, 30.0)),
        gas_hu=-950.0,
        blood_hu=float(rng.uniform(35.0, 50.0)),
        tumour_hu=float(rng.uniform(35.0, 50.0)),
        cortex_hu=float(rng.uniform(1200.0, 1600.0) - 4.0 * (age - 18)),
        ct_noise_sd=float(rng.uniform(12.0, 22.0)),
        fat_suv=float(rng.uniform(0.3, 0.5)),
        muscle_suv=float(rng.uniform(0.5, 1.0)),
        disc_suv=float(rng.uniform(0.4, 0.7)),
        urine_suv=float(rng.uniform(10.0, 30.0)),
        bowel_wall_suv=float(rng.uniform(1.2, 2.5)),
        blood_suv=float(rng.uniform(1.5, 2.0)),
        tumour_suv=float(rng.uniform(6.0, 15.0)),
        cortex_suv=float(rng.uniform(0.3, 0.5)),
    )
    marrow = _marrow(rng, age, sex)
    motion = Motion(
        center=(cx, cy, z_extent_mm / 2),
        angles_rad=_triple(np.radians(rng.uniform(-3.0, 3.0, size=3))),
        translation_mm=_triple(rng.uniform(-6.0, 6.0, size=3)),
    )
    injection = int(rng.integers(8 * 3600, 14 * 3600))
    uptake = int(rng.integers(50 * 60, 75 * 60 + 1))
    acquisition = Acquisition(
        age=age,
        sex=sex,
        birth_date=birth,
        weight_kg=round(float(rng.uniform(50.0, 110.0)), 1),
        height_m=round(float(rng.uniform(1.55, 1.95)), 2),
        total_dose_bq=float(round(float(rng.uniform(200.0, 400.0)) * 10) * 100_000),
        half_life_s=F18_HALF_LIFE_S,
        injection_s=injection,
        uptake_s=uptake,
        ct_s=injection + uptake - int(rng.integers(90, 301)),
    )
    return PatientParams(
        index=index,
        patient_id=patient_id(index),
        pelvis=pelvis,
        body=body,
        organs=organs,
        bed=bed,
        tissues=tissues,
        marrow=marrow,
        motion=motion,
        acquisition=acquisition,
    )
