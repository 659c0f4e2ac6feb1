"""Per-patient random parameters: every number that makes one synthetic patient unique.

Everything is drawn from ``SeedSequence([seed, k])`` and is independent of the grid, so patient k
is the same person in every preset and in cohorts of any size.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np

from abmseg.synth.shapes import Solid, rotation

STUDY_DATE = dt.date(2024, 3, 15)
F18_HALF_LIFE_S = 6586.2
SPINE, ILIUM, LOWER_PELVIS = 1, 2, 3
REGION_NAMES = {SPINE: "spine", ILIUM: "ilium", LOWER_PELVIS: "lower_pelvis"}
# PET noise model: sd = PET_NOISE_GAIN * sqrt(SUV) + PET_NOISE_FLOOR (SUV units).
PET_NOISE_GAIN = 0.08
PET_NOISE_FLOOR = 0.02
PSF_FWHM_MM = 6.0


@dataclass(frozen=True)
class Body:
    """Elliptic-cylinder trunk whose semi-axes change linearly (slowly) along z."""

    center_xy: tuple[float, float]
    semi_xy: tuple[float, float]
    taper: tuple[float, float]  # relative change of each semi-axis over the CT length
    fat_mm: float
    z_extent_mm: float

    def semi_at(self, z: np.ndarray, inset_mm: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
        """Semi-axes (a, b) at heights ``z``, shrunk by ``inset_mm`` (for the muscle core)."""
        u = np.clip(np.asarray(z, dtype=np.float64) / self.z_extent_mm, -0.25, 1.25) - 0.5
        a = self.semi_xy[0] * (1.0 + self.taper[0] * u) - inset_mm
        b = self.semi_xy[1] * (1.0 + self.taper[1] * u) - inset_mm
        return a, b

    def max_posterior_y(self) -> float:
        """Largest y (most posterior point) of the body at any simulated height."""
        return self.center_xy[1] + self.semi_xy[1] * (1.0 + 0.75 * abs(self.taper[1]))


@dataclass(frozen=True)
class Bone:
    """One bone: an outer solid, a cortex thickness, and the ABM region it belongs to."""

    name: str
    region: int
    solid: Solid
    cortex_mm: float


@dataclass(frozen=True)
class Bed:
    """Scanner table: a plate behind the patient, separated from the body by air."""

    y_range_mm: tuple[float, float]
    half_width_mm: float
    hu: float


@dataclass(frozen=True)
class Tissues:
    """CT numbers and true SUVbw of each tissue, plus the marrow composition."""

    fat_hu: float
    soft_hu: float
    bladder_hu: float
    gas_hu: float
    cortex_hu: float
    red_hu: float
    yellow_hu: float
    texture_hu: float
    ct_noise_sd: float
    fat_suv: float
    soft_suv: float
    cortex_suv: float
    yellow_suv: float
    red_suv_mean: float
    red_suv_spread: float
    bladder_suv: float
    active_fraction: float
    field_sigma_mm: float


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
    body: Body
    bones: tuple[Bone, ...]
    bladder: Solid
    gas: tuple[Solid, ...]
    bed: Bed
    tissues: Tissues
    motion: Motion
    acquisition: Acquisition


def patient_id(index: int) -> str:
    return f"SYN{index:03d}"


def patient_streams(seed: int, index: int) -> dict[str, np.random.Generator]:
    """Independent generators per purpose, so a grid change never shifts the anatomy draws."""
    children = np.random.SeedSequence([seed, index]).spawn(4)
    names = ("params", "fields", "ct_noise", "pet_noise")
    return {n: np.random.default_rng(c) for n, c in zip(names, children, strict=True)}


def _bones(
    rng: np.random.Generator, cx: float, cy: float, length: float, gx: float, gy: float
) -> list[Bone]:
    """Pelvic bones laid out around the body centre; positions scale (damped) with body size."""
    g = float(np.sqrt(gx * gy))

    def jit() -> float:
        return float(rng.uniform(0.9, 1.1))

    def cortex() -> float:
        return float(rng.uniform(2.0, 4.0))

    bones: list[Bone] = []
    # 1: lumbosacral spine. L5 body runs off the top of the field; the sacrum is tilted so its
    # base (promontory) is anterior-superior.
    lo, hi = 0.78 * length, length + 80.0
    l5 = Solid(
        (cx, cy + 28.0 * gy, (lo + hi) / 2),
        (24.0 * g * jit(), 17.0 * g * jit(), (hi - lo) / 2),
        cylinder=True,
    )
    bones.append(Bone("L5", SPINE, l5, cortex()))
    sacrum = Solid(
        (cx, cy + 48.0 * gy, 0.55 * length),
        (50.0 * g * jit(), 16.0 * g * jit(), 55.0 * g * jit()),
        rotation("x", float(rng.uniform(25.0, 35.0))),
    )
    bones.append(Bone("sacrum", SPINE, sacrum, cortex()))
    # 2: iliac wings, plates running from posterior-medial (SI joint) to anterior-lateral.
    for side, name in ((-1, "ilium_right"), (1, "ilium_left")):
        wing = Solid(
            (cx + side * 85.0 * gx, cy + 10.0 * gy, 0.72 * length),
            (46.0 * g * jit(), float(rng.uniform(11.0, 16.0)), 0.2 * length * jit()),
            rotation("z", -side * float(rng.uniform(25.0, 35.0))),
        )
        bones.append(Bone(name, ILIUM, wing, cortex()))
    # 3: lower pelvis: femoral heads and shafts, pubic bars, ischia.
    head_z = float(rng.uniform(0.2, 0.3)) * length
    for side, tag in ((-1, "right"), (1, "left")):
        hx = cx + side * float(rng.uniform(85.0, 95.0)) * gx
        hy = cy - 5.0 * gy
        hz = head_z + float(rng.uniform(-3.0, 3.0))
        radius = float(rng.uniform(22.0, 27.0))
        head = Solid((hx, hy, hz), (radius, radius, radius))
        bones.append(Bone(f"femoral_head_{tag}", LOWER_PELVIS, head, cortex()))
        shaft = Solid(
            (hx + side * 12.0 * gx, hy, hz - 70.0),
            (15.0 * g * jit(), 15.0 * g * jit(), 95.0),
            rotation("y", -side * float(rng.uniform(8.0, 12.0))),
        )
        bones.append(Bone(f"femur_{tag}", LOWER_PELVIS, shaft, cortex()))
    for side, tag in ((-1, "right"), (1, "left")):
        pubis = Solid(
            (cx + side * 28.0 * gx, cy - 68.0 * gy, head_z - 0.05 * length),
            (30.0 * g * jit(), 11.0 * g * jit(), 13.0 * g * jit()),
            rotation("z", side * float(rng.uniform(10.0, 20.0))),
        )
        bones.append(Bone(f"pubis_{tag}", LOWER_PELVIS, pubis, cortex()))
        ischium = Solid(
            (cx + side * 45.0 * gx, cy + 28.0 * gy, 0.07 * length),
            (14.0 * g * jit(), 20.0 * g * jit(), 35.0 * g * jit()),
        )
        bones.append(Bone(f"ischium_{tag}", LOWER_PELVIS, ischium, cortex()))
    return bones


def _max_fat(body: Body, solids: list[Solid], margin_mm: float = 3.0) -> float:
    """Thickest fat ring that still keeps every bone inside the muscle core."""
    pts = np.concatenate([s.surface_points() for s in solids])
    length = body.z_extent_mm
    pts = pts[(pts[:, 2] > -0.15 * length) & (pts[:, 2] < 1.15 * length)]
    lo, hi = 0.0, 60.0
    for _ in range(30):
        mid = (lo + hi) / 2
        a, b = body.semi_at(pts[:, 2], inset_mm=mid + margin_mm)
        r = ((pts[:, 0] - body.center_xy[0]) / a) ** 2 + ((pts[:, 1] - body.center_xy[1]) / b) ** 2
        if np.all(r <= 1.0) and np.all(a > 0) and np.all(b > 0):
            lo = mid
        else:
            hi = mid
    return lo


def _triple(values: np.ndarray) -> tuple[float, float, float]:
    x, y, z = (float(v) for v in values)
    return x, y, z


def _gas_pockets(rng: np.random.Generator, body: Body, bones: list[Solid]) -> tuple[Solid, ...]:
    """A few small bowel-gas pockets, apart from each other and from the bones.

    Overlapping pockets could trap a lone soft-tissue voxel between them, which would show up as
    an extra connected component after thresholding the CT.
    """
    a_in = body.semi_xy[0] - body.fat_mm
    b_in = body.semi_xy[1] - body.fat_mm
    cx, cy = body.center_xy
    boxes = [s.bounds() for s in bones]
    pockets: list[Solid] = []
    for _ in range(int(rng.integers(2, 6))):
        for _attempt in range(20):
            centre = np.array(
                [
                    cx + rng.uniform(-0.45, 0.45) * a_in,
                    cy + rng.uniform(-0.55, -0.05) * b_in,
                    rng.uniform(0.45, 0.9) * body.z_extent_mm,
                ]
            )
            semi = rng.uniform(5.0, 14.0, size=3)
            reach = float(semi.max()) + 3.0
            apart = all(
                np.linalg.norm(centre - np.asarray(p.center)) > reach + max(p.semi) for p in pockets
            )
            clear = all(np.any((centre + reach < lo) | (centre - reach > hi)) for lo, hi in boxes)
            if apart and clear:
                pockets.append(Solid(_triple(centre), _triple(semi)))
                break
    return tuple(pockets)


def draw_patient(seed: int, index: int, z_extent_mm: float) -> PatientParams:
    """All random parameters of patient ``index`` (1-based) for ``seed``."""
    rng = patient_streams(seed, index)["params"]
    length = z_extent_mm

    # Demographics and marrow conversion with age.
    age = int(rng.integers(18, 71))
    sex = "F" if rng.random() < 0.5 else "M"
    birth = dt.date(STUDY_DATE.year - age, STUDY_DATE.month, STUDY_DATE.day) - dt.timedelta(
        days=int(rng.integers(1, 365))
    )
    active_fraction = float(np.clip(0.80 - 0.007 * (age - 18) + rng.normal(0.0, 0.05), 0.3, 0.85))

    # Body and bones.
    a, b = float(rng.uniform(150.0, 200.0)), float(rng.uniform(105.0, 140.0))
    cx, cy = (float(v) for v in rng.uniform(-6.0, 6.0, size=2))
    taper = (float(rng.uniform(-0.08, 0.08)), float(rng.uniform(-0.08, 0.08)))
    gx, gy = 1.0 + 0.5 * (a / 175.0 - 1.0), 1.0 + 0.5 * (b / 122.0 - 1.0)
    bones = _bones(rng, cx, cy, length, gx, gy)
    fat_draw = float(rng.uniform(15.0, 35.0))
    body = Body((cx, cy), (a, b), taper, fat_draw, length)
    # Only the part of a bone within the simulated slab must fit inside the body.
    fat = min(fat_draw, _max_fat(body, [bone.solid for bone in bones]))
    body = Body((cx, cy), (a, b), taper, max(fat, 8.0), length)

    bladder = Solid(
        (cx + float(rng.uniform(-8.0, 8.0)), cy - 30.0 * gy, float(rng.uniform(0.2, 0.3)) * length),
        (
            float(rng.uniform(35.0, 50.0)),
            float(rng.uniform(25.0, 35.0)),
            float(rng.uniform(25, 35)),
        ),
    )
    gas = _gas_pockets(rng, body, [bone.solid for bone in bones])

    y0 = body.max_posterior_y() + float(rng.uniform(8.0, 25.0))
    bed = Bed((y0, y0 + float(rng.uniform(10.0, 20.0))), 220.0, float(rng.uniform(100.0, 300.0)))

    tissues = Tissues(
        fat_hu=float(rng.uniform(-110.0, -90.0)),
        soft_hu=float(rng.uniform(30.0, 50.0)),
        bladder_hu=10.0,
        gas_hu=-900.0,
        cortex_hu=float(rng.uniform(700.0, 1200.0)),
        red_hu=float(rng.uniform(30.0, 80.0)),
        yellow_hu=float(rng.uniform(-100.0, -50.0)),
        texture_hu=10.0,
        ct_noise_sd=float(rng.uniform(12.0, 20.0)),
        fat_suv=float(rng.uniform(0.3, 0.5)),
        soft_suv=float(rng.uniform(0.7, 1.0)),
        cortex_suv=0.5,
        yellow_suv=float(rng.uniform(0.6, 1.0)),
        red_suv_mean=float(rng.uniform(2.5, 3.2)),
        red_suv_spread=0.25,
        bladder_suv=float(rng.uniform(10.0, 25.0)),
        active_fraction=active_fraction,
        field_sigma_mm=float(rng.uniform(10.0, 15.0)),
    )

    motion = Motion(
        center=(cx, cy, length / 2),
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
        body=body,
        bones=tuple(bones),
        bladder=bladder,
        gas=gas,
        bed=bed,
        tissues=tissues,
        motion=motion,
        acquisition=acquisition,
    )
