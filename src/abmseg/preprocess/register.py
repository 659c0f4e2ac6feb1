"""PET onto CT with ANTsPy: rigid then affine, Mattes mutual information, fixed seed.

ANTs reads ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS only when it is first imported, so the thread
count is set before the (deferred) ``import ants``.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from abmseg.atomic import atomic_path, write_json
from abmseg.io.volume import image_like, read_nifti, write_nifti
from abmseg.preprocess.registration_qc import QcLimits, RegistrationQcError, check_registration
from abmseg.settings import from_section, to_section


@dataclass(frozen=True)
class StageSettings:
    """One ANTs linear stage (rigid or affine): Mattes MI and its multi-resolution schedule."""

    metric_bins: int = 32
    sampling_percentage: float = 0.25
    iterations: tuple[int, ...] = (200, 100, 50)
    shrink_factors: tuple[int, ...] = (4, 2, 1)
    smoothing_sigmas_vox: tuple[float, ...] = (2.0, 1.0, 0.0)
    gradient_step: float = 0.2


AFFINE_DEFAULT = StageSettings(
    metric_bins=64,
    sampling_percentage=0.5,
    iterations=(100, 50),
    shrink_factors=(2, 1),
    smoothing_sigmas_vox=(1.0, 0.0),
    gradient_step=0.1,
)


@dataclass(frozen=True)
class RegistrationSettings:
    """config['register'], with config['seed'] and the job's thread count."""

    seed: int = 42
    threads: int = 1
    working_spacing_mm: float = 4.0
    ct_clip_hu: tuple[float, float] = (-1000.0, 1500.0)
    pet_clip_suv: tuple[float, float] = (0.0, 5.0)
    pet_interpolation: str = "linear"  # of the written PET only; the QC metric stays linear
    rigid: StageSettings = field(default_factory=StageSettings)
    affine: StageSettings = AFFINE_DEFAULT
    qc: QcLimits = field(default_factory=QcLimits)

    @classmethod
    def from_config(cls, config: Mapping[str, Any], threads: int = 1) -> RegistrationSettings:
        """Lists become tuples, which ANTsPy expects."""
        seed = {"seed": int(config["seed"])} if "seed" in config else {}
        return from_section(cls, config.get("register"), "register", threads=threads, **seed)

    def as_dict(self) -> dict:
        """What qc.json records: every setting but the QC limits (recorded on their own)."""
        settings = {k: v for k, v in to_section(self).items() if k != "qc"}
        return {**settings, "initial_transform": "Identity", "metric": "mattes"}


def _import_ants(threads: int, seed: int):
    """Import ANTsPy with our thread count and seed.

    antspyx 0.6.3 ignores ``ants.registration(random_seed=...)`` (it vanishes into
    ``**kwargs``); the seed reaches antsRegistration only through
    ``ants.config.set_ants_deterministic``, which also sets the thread variable to 1, so ours is
    put back afterwards.
    """
    os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = str(threads)
    import ants  # deferred on purpose, see the module docstring

    ants.config.set_ants_deterministic(True, seed_value=seed)
    os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = str(threads)
    return ants


def _to_ants(ants, image: sitk.Image):
    """SimpleITK -> ANTsImage keeping the world geometry (both are LPS)."""
    array = sitk.GetArrayFromImage(image).astype(np.float32)
    return ants.from_numpy(
        np.ascontiguousarray(array.transpose(2, 1, 0)),
        origin=list(image.GetOrigin()),
        spacing=list(image.GetSpacing()),
        direction=np.array(image.GetDirection()).reshape(3, 3),
    )


def _mutual_information(ants, fixed, moving_on_fixed) -> float:
    """Mattes MI of two images on the same grid, sign flipped so that higher is better."""
    return -float(ants.image_mutual_information(fixed, moving_on_fixed))


def _stage(ants, fixed, moving, kind: str, stage: StageSettings, initial: str) -> dict:
    return ants.registration(
        fixed=fixed,
        moving=moving,
        type_of_transform=kind,
        initial_transform=[initial],
        aff_metric="mattes",
        aff_sampling=stage.metric_bins,
        aff_random_sampling_rate=stage.sampling_percentage,
        aff_iterations=tuple(stage.iterations),
        aff_shrink_factors=tuple(stage.shrink_factors),
        aff_smoothing_sigmas=tuple(stage.smoothing_sigmas_vox),
        grad_step=stage.gradient_step,
        verbose=False,
    )


def working_grid(image: sitk.Image, spacing_mm: float) -> sitk.Image:
    """The image on a coarser grid (no finer than ``spacing_mm``), Gaussian-smoothed first.

    Registration to within a PET voxel needs no sub-millimetre CT; a 512x512 CT at full
    resolution would make every metric evaluation ~40x slower.
    """
    spacing = [max(s, spacing_mm) for s in image.GetSpacing()]
    if np.allclose(spacing, image.GetSpacing()):
        return image
    size = [
        max(1, round(n * s / t))
        for n, s, t in zip(image.GetSize(), image.GetSpacing(), spacing, strict=True)
    ]
    sigmas = [
        max(0.0, (t**2 - s**2)) ** 0.5 / 2.355
        for s, t in zip(image.GetSpacing(), spacing, strict=True)
    ]
    array = ndimage.gaussian_filter(
        sitk.GetArrayFromImage(image).astype(np.float32),
        sigma=[sig / sp for sig, sp in zip(sigmas[::-1], image.GetSpacing()[::-1], strict=True)],
    )
    smoothed = image_like(array, image)
    first = np.array(image.GetOrigin()) - 0.5 * np.array(image.GetDirection()).reshape(3, 3) @ (
        np.array(image.GetSpacing())
    )
    origin = first + 0.5 * np.array(image.GetDirection()).reshape(3, 3) @ np.array(spacing)
    return sitk.Resample(
        smoothed,
        size,
        sitk.Transform(),
        sitk.sitkLinear,
        origin.tolist(),
        spacing,
        image.GetDirection(),
        float(np.min(sitk.GetArrayViewFromImage(image))),
        sitk.sitkFloat32,
    )


def transform_summary(transform_path: str | Path, centre: tuple[float, float, float]) -> dict:
    """Size of an affine transform: translation of the ROI centre and rotation angle (degrees)."""
    affine = sitk.AffineTransform(sitk.ReadTransform(str(transform_path)))
    matrix = np.array(affine.GetMatrix()).reshape(3, 3)
    moved = np.array(affine.TransformPoint(tuple(centre))) - np.array(centre)
    u, _, vt = np.linalg.svd(matrix)
    rotation = u @ vt
    angle = math.degrees(math.acos(np.clip((np.trace(rotation) - 1) / 2, -1.0, 1.0)))
    scales = np.linalg.svd(matrix, compute_uv=False)
    return {
        "centre_displacement_mm": round(float(np.linalg.norm(moved)), 4),
        "rotation_deg": round(angle, 4),
        "scale_min": round(float(scales.min()), 6),
        "scale_max": round(float(scales.max()), 6),
    }


def register_pet_to_ct(
    ct_path: str | Path,
    pet_path: str | Path,
    out_pet: str | Path,
    out_transform: str | Path,
    out_qc: str | Path,
    settings: RegistrationSettings,
    patient: str | None = None,
) -> dict:
    """Register the SUV image onto the CT, resample it on the CT grid, write transform and QC.

    A registration outside ``settings.qc`` raises RegistrationQcError (with every QC figure)
    before anything is written.
    """
    ants = _import_ants(settings.threads, settings.seed)
    ct = read_nifti(ct_path, patient, made_by="convert")
    pet = read_nifti(pet_path, patient, made_by="convert")
    ct_clipped = sitk.Clamp(sitk.Cast(ct, sitk.sitkFloat32), sitk.sitkFloat32, *settings.ct_clip_hu)
    fixed_full = _to_ants(ants, ct_clipped)
    fixed = _to_ants(ants, working_grid(ct_clipped, settings.working_spacing_mm))
    pet_float = sitk.Cast(pet, sitk.sitkFloat32)
    moving = _to_ants(ants, sitk.Clamp(pet_float, sitk.sitkFloat32, *settings.pet_clip_suv))

    started = time.perf_counter()
    # PET and CT of one PET/CT session share the scanner's frame: start from identity. ANTsPy's
    # default start (centres of intensity mass) is thrown off by the hot bladder and by negative HU.
    rigid = _stage(ants, fixed, moving, "Rigid", settings.rigid, "Identity")
    affine = _stage(ants, fixed, moving, "Affine", settings.affine, rigid["fwdtransforms"][0])
    seconds = time.perf_counter() - started

    identity_on_ct = ants.resample_image_to_target(moving, fixed, interp_type="linear")
    registered_for_qc = ants.apply_transforms(
        fixed, moving, transformlist=affine["fwdtransforms"], interpolator="linear"
    )
    centre = ct.TransformContinuousIndexToPhysicalPoint([(s - 1) / 2 for s in ct.GetSize()])
    summary = transform_summary(affine["fwdtransforms"][0], centre)
    qc = {
        "patient_id": patient,
        "metric": "Mattes mutual information between CT and PET on the CT grid (higher = better)",
        "mutual_information_before": round(_mutual_information(ants, fixed, identity_on_ct), 6),
        "mutual_information_after": round(_mutual_information(ants, fixed, registered_for_qc), 6),
        "transform": summary,
        "transform_convention": "maps CT-world points to PET-world points (ITK/ANTs fixed->moving)",
        "seconds": round(seconds, 2),
        "settings": settings.as_dict(),
        "qc_limits": settings.qc.as_dict(),
    }
    violations = check_registration(qc, settings.qc)
    qc["qc_passed"] = not violations
    qc["qc_violations"] = violations
    if violations:
        raise RegistrationQcError(patient, pet_path, qc, violations)

    # The written PET keeps full SUV (the clip above only shapes the metric's histogram).
    registered = ants.apply_transforms(
        fixed_full,
        _to_ants(ants, pet_float),
        transformlist=affine["fwdtransforms"],
        interpolator=settings.pet_interpolation,
    )
    suv = registered.numpy().transpose(2, 1, 0).astype(np.float32)
    if settings.pet_interpolation != "linear":  # spline and sinc overshoot below SUV 0
        suv = np.maximum(suv, np.float32(0.0))
    pet_on_ct = image_like(suv, ct)
    write_nifti(pet_on_ct, out_pet)
    with atomic_path(out_transform) as tmp_out:
        shutil.copyfile(affine["fwdtransforms"][0], tmp_out)
    write_json(out_qc, qc)
    return qc
