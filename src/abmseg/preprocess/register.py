"""PET onto CT with ANTsPy: rigid then affine, Mattes mutual information, fixed seed.

ANTs reads ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS only when it is first imported, so the thread
count is set before the (deferred) ``import ants``.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from abmseg.atomic import atomic_path, write_json
from abmseg.io.volume import read_nifti, write_nifti


@dataclass(frozen=True)
class RegistrationSettings:
    """Every knob of the ANTs call; defaults mirror config/config.yaml."""

    seed: int = 42
    threads: int = 1
    metric: str = "mattes"
    metric_bins: int = 32
    sampling_percentage: float = 0.25
    iterations: tuple[int, ...] = (200, 100, 50)
    shrink_factors: tuple[int, ...] = (4, 2, 1)
    smoothing_sigmas_vox: tuple[float, ...] = (2.0, 1.0, 0.0)
    ct_clip_hu: tuple[float, float] = (-1000.0, 1500.0)
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_config(cls, section: dict, seed: int, threads: int) -> RegistrationSettings:
        """Build from config['register'] (lists become tuples, which ANTsPy expects)."""
        return cls(
            seed=seed,
            threads=threads,
            metric_bins=int(section["metric_bins"]),
            sampling_percentage=float(section["sampling_percentage"]),
            iterations=tuple(int(v) for v in section["iterations"]),
            shrink_factors=tuple(int(v) for v in section["shrink_factors"]),
            smoothing_sigmas_vox=tuple(float(v) for v in section["smoothing_sigmas_vox"]),
            ct_clip_hu=(float(section["ct_clip_hu"][0]), float(section["ct_clip_hu"][1])),
        )


def _import_ants(threads: int):
    os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = str(threads)
    import ants  # deferred on purpose, see the module docstring

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


def _stage(ants, fixed, moving, kind: str, settings: RegistrationSettings, initial=None) -> dict:
    return ants.registration(
        fixed=fixed,
        moving=moving,
        type_of_transform=kind,
        initial_transform=initial,
        aff_metric=settings.metric,
        aff_sampling=settings.metric_bins,
        aff_random_sampling_rate=settings.sampling_percentage,
        aff_iterations=tuple(settings.iterations),
        aff_shrink_factors=tuple(settings.shrink_factors),
        aff_smoothing_sigmas=tuple(settings.smoothing_sigmas_vox),
        random_seed=settings.seed,
        verbose=False,
        **settings.extra,
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
    """Register the SUV image onto the CT, resample it on the CT grid, write transform and QC."""
    ants = _import_ants(settings.threads)
    ct = read_nifti(ct_path, patient, made_by="convert")
    pet = read_nifti(pet_path, patient, made_by="convert")
    ct_clipped = sitk.Clamp(sitk.Cast(ct, sitk.sitkFloat32), sitk.sitkFloat32, *settings.ct_clip_hu)
    fixed = _to_ants(ants, ct_clipped)
    moving = _to_ants(ants, sitk.Cast(pet, sitk.sitkFloat32))

    started = time.perf_counter()
    rigid = _stage(ants, fixed, moving, "Rigid", settings)
    affine = _stage(ants, fixed, moving, "Affine", settings, initial=rigid["fwdtransforms"][0])
    seconds = time.perf_counter() - started

    identity_on_ct = ants.resample_image_to_target(moving, fixed, interp_type="linear")
    registered = ants.apply_transforms(
        fixed, moving, transformlist=affine["fwdtransforms"], interpolator="linear"
    )
    centre = ct.TransformContinuousIndexToPhysicalPoint([(s - 1) / 2 for s in ct.GetSize()])
    with tempfile.TemporaryDirectory() as tmp:
        transform_file = Path(tmp) / "pet_to_ct.mat"
        shutil.copyfile(affine["fwdtransforms"][0], transform_file)
        summary = transform_summary(transform_file, centre)
        with atomic_path(out_transform) as tmp_out:
            shutil.copyfile(transform_file, tmp_out)

    pet_on_ct = sitk.GetImageFromArray(registered.numpy().transpose(2, 1, 0).astype(np.float32))
    pet_on_ct.CopyInformation(ct)
    qc = {
        "patient_id": patient,
        "metric": "Mattes mutual information between CT and PET on the CT grid (higher = better)",
        "mutual_information_before": round(_mutual_information(ants, fixed, identity_on_ct), 6),
        "mutual_information_after": round(_mutual_information(ants, fixed, registered), 6),
        "transform": summary,
        "transform_convention": "maps CT-world points to PET-world points (ITK/ANTs fixed->moving)",
        "seconds": round(seconds, 2),
        "settings": {
            "seed": settings.seed,
            "threads": settings.threads,
            "stages": ["Rigid", "Affine"],
            "metric": settings.metric,
            "metric_bins": settings.metric_bins,
            "sampling_percentage": settings.sampling_percentage,
            "iterations": list(settings.iterations),
            "shrink_factors": list(settings.shrink_factors),
            "smoothing_sigmas_vox": list(settings.smoothing_sigmas_vox),
        },
    }
    write_nifti(pet_on_ct, out_pet)
    write_json(out_qc, qc)
    return qc
