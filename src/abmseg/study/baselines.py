"""Trivial CT (and PET) baselines for ABM segmentation, fitted on training patients only.

The validation study compares the network with rules a reader could apply without it: "all the
marrow", "marrow above a CT number", a logistic model on CT number and position, and "marrow
above a PET SUV". Unlike :mod:`abmseg.synth.baselines` (which works inside the phantom's TRUE
marrow), these baselines see only what a test patient's images show: the marrow is found from the
CT alone (:func:`bone_interior`) and its region from a position atlas (:class:`RegionAtlas`).
Every number is fitted on the training patients (:func:`fit_baselines`) and then applied
unchanged to a test patient (:func:`predict_baseline`), so a baseline's test Dice is as honest as
the network's. Volumes are numpy arrays (z, y, x) on the cropped grid; labels are 0 (background)
and 1, 2, 3 (ABM of the regions in :data:`REGIONS`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

from abmseg.preprocess.bone import bone_interior
from abmseg.synth.baselines import (
    REGIONS,
    LogisticModel,
    fit_logistic,
    logistic_features,
    position_features,
    quantile_candidates,
    region_dice,
    smoothed_inside,
    subsample,
    threshold_dice,
    tune_threshold,
)

BASELINE_METHODS = ("all_marrow", "hu_threshold", "logistic", "pet_threshold")
# Smoothing of the CT number inside the interior, in voxels (z, y, x): about one 3.9 mm pixel
# in-plane, half a slice across (slices are 3-6 mm and bones change fast along z), so noise
# (~20 HU per voxel) averages out without mixing neighbouring bones.
SIGMA_VOX = (0.5, 1.0, 1.0)
ATLAS_BINS = 12


# --- the region atlas ---------------------------------------------------------------------------


def _bin_index(mask: np.ndarray, points: tuple[np.ndarray, ...], bins: int) -> tuple:
    """Bin (z, y, x) of ``points`` (index arrays) by position over ``mask``'s bounding box."""
    hit = np.argwhere(mask)
    lo, hi = hit.min(axis=0), hit.max(axis=0)
    out = []
    for axis, index in enumerate(points):
        pos = (index - lo[axis]) / max(int(hi[axis] - lo[axis]), 1)
        out.append(np.clip(np.floor(pos * bins).astype(np.int64), 0, bins - 1))
    return tuple(out)


@dataclass(frozen=True)
class RegionAtlas:
    """Where each ABM region lies within the bone interior's bounding box, from training labels.

    A test patient has no label, so a baseline needs another way to say whether a marrow voxel
    is spine, ilium or lower pelvis: its position, normalised to [0, 1] over the patient's own
    interior box (so body size and crop do not matter), looked up in ``bins``^3 cells.
    ``counts[z, y, x, i]`` is the number of training label voxels of region ``REGIONS[i]`` in a
    cell (label voxels outside a patient's interior box are clipped to its edge cells).
    """

    counts: np.ndarray  # (bins, bins, bins, len(REGIONS)) int64
    bins: int = ATLAS_BINS
    _table: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        counts = np.asarray(self.counts, dtype=np.int64)
        if counts.shape != (self.bins,) * 3 + (len(REGIONS),):
            raise ValueError(f"atlas counts have shape {counts.shape}, expected {self.bins}^3 x 3")
        total = counts.sum(axis=3)
        if not total.any():
            raise ValueError("the region atlas has no label voxel: no training ABM to learn from")
        best = np.asarray(REGIONS, dtype=np.uint8)[np.argmax(counts, axis=3)]  # ties: lowest
        # Empty cells take the region of the nearest cell that saw training ABM.
        _, nearest = ndimage.distance_transform_edt(total == 0, return_indices=True)
        object.__setattr__(self, "counts", counts)
        object.__setattr__(self, "_table", best[tuple(nearest)])

    @classmethod
    def fit(
        cls, pairs: Sequence[tuple[np.ndarray, np.ndarray]], bins: int = ATLAS_BINS
    ) -> RegionAtlas:
        """Count each training patient's label voxels per cell; ``pairs`` = (interior, label)."""
        counts = np.zeros((bins,) * 3 + (len(REGIONS),), dtype=np.int64)
        for interior, label in pairs:
            if not interior.any():
                continue
            for i, r in enumerate(REGIONS):
                points = np.nonzero(label == r)
                if len(points[0]) == 0:
                    continue
                cells = np.ravel_multi_index(_bin_index(interior, points, bins), (bins,) * 3)
                counts[..., i] += np.bincount(cells, minlength=bins**3).reshape((bins,) * 3)
        return cls(counts=counts, bins=bins)

    @property
    def table(self) -> np.ndarray:
        """Region (1..3) of every cell, empty cells filled from the nearest non-empty one."""
        return self._table.copy()

    def assign(self, interior: np.ndarray) -> np.ndarray:
        """uint8 map: each ``interior`` voxel gets its cell's region, every other voxel 0."""
        out = np.zeros(interior.shape, dtype=np.uint8)
        points = np.nonzero(interior)
        if len(points[0]):
            out[points] = self._table[_bin_index(interior, points, self.bins)]
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {"bins": int(self.bins), "counts": self.counts.tolist()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RegionAtlas:
        """Inverse of :meth:`to_dict`."""
        return cls(counts=np.asarray(data["counts"], dtype=np.int64), bins=int(data["bins"]))


# --- fitting and applying -----------------------------------------------------------------------


@dataclass(frozen=True)
class BaselineVolumes:
    """One patient's cropped volumes (z, y, x); ``pet`` None when the patient has no PET."""

    patient_id: str
    hu: np.ndarray
    pet: np.ndarray | None
    label: np.ndarray
    spacing_zyx: tuple[float, float, float]


@dataclass(frozen=True)
class BaselineModels:
    """Everything the baselines learnt from the training patients, and their training Dice.

    A rule passes a voxel when ``score >= threshold``: the HU rule's score is
    ``hu_sign * smoothed HU`` (the sign that did better on training), the logistic rule's the
    predicted probability, the PET rule's the raw SUV (None when no training patient had PET).
    """

    atlas: RegionAtlas
    hu_threshold: float
    hu_sign: float
    logistic: LogisticModel
    logistic_threshold: float
    pet_threshold: float | None
    sigma_vox: tuple[float, float, float] = SIGMA_VOX
    cortex_hu: float = 150.0
    max_hole_mm2: float = 2500.0
    closing_mm: float = 4.0
    marrow_max_hu: float | None = None
    training_dice: dict[str, float] = field(default_factory=dict)
    training_patients: tuple[str, ...] = ()

    def interior(self, hu: np.ndarray, spacing_zyx: Sequence[float]) -> np.ndarray:
        """:func:`bone_interior` with the fitted parameters."""
        return bone_interior(
            hu, spacing_zyx, self.cortex_hu, self.max_hole_mm2, self.closing_mm, self.marrow_max_hu
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (floats, lists, the atlas's counts, patient ids)."""
        lg = self.logistic
        return {
            "atlas": self.atlas.to_dict(),
            "hu_threshold": float(self.hu_threshold),
            "hu_sign": float(self.hu_sign),
            "logistic": {
                "mean": np.asarray(lg.mean, dtype=np.float64).tolist(),
                "scale": np.asarray(lg.scale, dtype=np.float64).tolist(),
                "coef": np.asarray(lg.coef, dtype=np.float64).tolist(),
                "intercept": float(lg.intercept),
            },
            "logistic_threshold": float(self.logistic_threshold),
            "pet_threshold": None if self.pet_threshold is None else float(self.pet_threshold),
            "sigma_vox": [float(s) for s in self.sigma_vox],
            "cortex_hu": float(self.cortex_hu),
            "max_hole_mm2": float(self.max_hole_mm2),
            "closing_mm": float(self.closing_mm),
            "marrow_max_hu": None if self.marrow_max_hu is None else float(self.marrow_max_hu),
            "training_dice": {k: float(v) for k, v in self.training_dice.items()},
            "training_patients": list(self.training_patients),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BaselineModels:
        """Inverse of :meth:`to_dict`."""
        lg = data["logistic"]
        pet = data.get("pet_threshold")
        return cls(
            atlas=RegionAtlas.from_dict(data["atlas"]),
            hu_threshold=float(data["hu_threshold"]),
            hu_sign=float(data["hu_sign"]),
            logistic=LogisticModel(
                mean=np.asarray(lg["mean"], dtype=np.float64),
                scale=np.asarray(lg["scale"], dtype=np.float64),
                coef=np.asarray(lg["coef"], dtype=np.float64),
                intercept=float(lg["intercept"]),
            ),
            logistic_threshold=float(data["logistic_threshold"]),
            pet_threshold=None if pet is None else float(pet),
            sigma_vox=tuple(float(s) for s in data["sigma_vox"]),
            cortex_hu=float(data["cortex_hu"]),
            max_hole_mm2=float(data["max_hole_mm2"]),
            closing_mm=float(data["closing_mm"]),
            marrow_max_hu=None
            if data.get("marrow_max_hu") is None
            else float(data["marrow_max_hu"]),
            training_dice={k: float(v) for k, v in data.get("training_dice", {}).items()},
            training_patients=tuple(data.get("training_patients", ())),
        )


@dataclass(frozen=True)
class _Patient:
    """A training patient's interior voxels (1-D, C order) and the whole volume's label counts."""

    region: np.ndarray
    label: np.ndarray
    hu_smooth: np.ndarray
    position: np.ndarray
    pet: np.ndarray | None
    truth_counts: list[int]


def _features(p: _Patient) -> np.ndarray:
    return logistic_features(p.hu_smooth, p.position, p.region)


def _tune(patients: Sequence[_Patient], scores: Sequence[np.ndarray]) -> tuple[float, float]:
    """Threshold of ``score >= t`` with the best cohort mean Dice over quantile candidates."""
    candidates = quantile_candidates(np.concatenate(scores))
    curves = [
        threshold_dice(s, p.region, p.label, p.truth_counts, candidates)
        for p, s in zip(patients, scores, strict=True)
    ]
    return tune_threshold(curves, candidates)


def fit_baselines(
    training: Sequence[BaselineVolumes],
    seed: int = 0,
    max_voxels: int = 200_000,
    cortex_hu: float = 150.0,
    max_hole_mm2: float = 2500.0,
    closing_mm: float = 4.0,
    marrow_max_hu: float | None = None,
) -> BaselineModels:
    """Fit every baseline on ``training`` alone (a test patient must never be passed here).

    Thresholds maximise the training cohort's mean Dice (regions, then patients), where ABM
    outside the CT interior counts as missed. The logistic model is fitted on at most
    ``max_voxels`` interior voxels drawn reproducibly (``seed``) from the pooled patients. The
    PET threshold is fitted on the patients that have PET, and left None when none has.
    """
    if not training:
        raise ValueError("fit_baselines needs at least one training patient")
    interiors = []
    for v in training:
        if v.hu.shape != v.label.shape or (v.pet is not None and v.pet.shape != v.hu.shape):
            raise ValueError(f"{v.patient_id}: CT, PET and label shapes differ")
        interior = bone_interior(
            v.hu, v.spacing_zyx, cortex_hu, max_hole_mm2, closing_mm, marrow_max_hu
        )
        if not interior.any():
            raise ValueError(f"{v.patient_id}: the CT shows no bone interior at {cortex_hu} HU")
        interiors.append(interior)
    atlas = RegionAtlas.fit([(m, v.label) for m, v in zip(interiors, training, strict=True)])

    patients = []
    for m, v in zip(interiors, training, strict=True):
        patients.append(
            _Patient(
                region=atlas.assign(m)[m],
                label=v.label[m],
                hu_smooth=smoothed_inside(v.hu, m, SIGMA_VOX),
                position=position_features(m),
                pet=None if v.pet is None else v.pet[m].astype(np.float32),
                truth_counts=[int(np.count_nonzero(v.label == r)) for r in REGIONS],
            )
        )

    dice: dict[str, float] = {
        "all_marrow": float(
            np.mean(
                [
                    region_dice(
                        np.ones(len(p.label), bool), p.region, p.label, p.truth_counts
                    ).mean()
                    for p in patients
                ]
            )
        )  # fmt: skip
    }
    best = None
    for sign in (1.0, -1.0):
        t, d = _tune(patients, [sign * p.hu_smooth for p in patients])
        if best is None or d > best[2]:
            best = (sign, t, d)
    hu_sign, hu_threshold, dice["hu_threshold"] = best

    x = np.concatenate([_features(p) for p in patients])
    y = np.concatenate([p.label > 0 for p in patients])
    keep = subsample(len(x), max_voxels, seed)
    logistic = fit_logistic(x[keep], y[keep])
    probs = [logistic.probability(_features(p)) for p in patients]
    logistic_threshold, dice["logistic"] = _tune(patients, probs)

    pet_threshold = None
    with_pet = [p for p in patients if p.pet is not None]
    if with_pet:
        pet_threshold, dice["pet_threshold"] = _tune(with_pet, [p.pet for p in with_pet])

    return BaselineModels(
        atlas=atlas,
        hu_threshold=hu_threshold,
        hu_sign=hu_sign,
        logistic=logistic,
        logistic_threshold=logistic_threshold,
        pet_threshold=pet_threshold,
        sigma_vox=SIGMA_VOX,
        cortex_hu=cortex_hu,
        max_hole_mm2=max_hole_mm2,
        closing_mm=closing_mm,
        marrow_max_hu=marrow_max_hu,
        training_dice=dice,
        training_patients=tuple(v.patient_id for v in training),
    )


def predict_baseline(
    models: BaselineModels,
    method: str,
    hu: np.ndarray,
    spacing_zyx: Sequence[float],
    pet: np.ndarray | None = None,
) -> np.ndarray:
    """uint8 label map (shape of ``hu``) of one baseline on a patient the models never saw.

    ``all_marrow``: every CT interior voxel with its atlas region; the other methods keep the
    interior voxels that pass their fitted rule. Only the patient's own images are used.
    """
    if method not in BASELINE_METHODS:
        raise ValueError(f"unknown baseline method {method!r}; expected one of {BASELINE_METHODS}")
    if method == "pet_threshold":
        if pet is None:
            raise ValueError("the pet_threshold baseline needs the patient's PET (SUV)")
        if models.pet_threshold is None:
            raise ValueError("the pet_threshold baseline was not fitted (no training PET)")
        if pet.shape != hu.shape:
            raise ValueError(f"PET shape {pet.shape} differs from the CT's {hu.shape}")
    interior = models.interior(hu, spacing_zyx)
    region = models.atlas.assign(interior)
    if method == "all_marrow" or not interior.any():
        return region
    if method == "hu_threshold":
        passes = models.hu_sign * smoothed_inside(hu, interior, models.sigma_vox)
        passes = passes >= models.hu_threshold
    elif method == "logistic":
        features = logistic_features(
            smoothed_inside(hu, interior, models.sigma_vox),
            position_features(interior),
            region[interior],
        )
        passes = models.logistic.probability(features) >= models.logistic_threshold
    else:
        passes = pet[interior] >= models.pet_threshold
    out = np.zeros(hu.shape, dtype=np.uint8)
    out[interior] = np.where(passes, region[interior], 0)
    return out
