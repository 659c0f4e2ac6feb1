"""ABM for a patient who has only a planning CT: convert, crop, normalise and infer in one go.

Every preprocessing setting (crop margin, bed clearing, CT window, SUV ceiling, body threshold)
and the sampler come from the model bundle, not from a config: a bundle predicts new patients
exactly as its networks were trained. The Snakemake rule ``predict`` and ``abmseg predict`` both
call :func:`predict_ct_only`, so the two paths give the same masks.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from abmseg.atomic import write_json
from abmseg.infer.model_bundle import ModelBundle
from abmseg.infer.patient import write_prediction
from abmseg.infer.predict import predict_volume
from abmseg.io.convert import ct_image
from abmseg.io.dicom_series import DicomSeries, read_series
from abmseg.io.volume import image_like, read_nifti
from abmseg.preprocess.normalise import window_ct
from abmseg.preprocess.roi import AIR_HU, CropSettings, body_box, crop_image
from abmseg.train.progress import ProgressLine

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PredictionPaths:
    """What one CT-only prediction writes (the rule's outputs, or the CLI's --out folder)."""

    spet: Path
    abm: Path
    abm_ct: Path
    summary: Path

    @classmethod
    def in_folder(cls, folder: str | Path) -> PredictionPaths:
        folder = Path(folder)
        return cls(
            folder / "spet.nii.gz",
            folder / "abm.nii.gz",
            folder / "abm_ct.nii.gz",
            folder / "prediction.json",
        )


class SliceProgress(ProgressLine):
    """Body slices done, and the rate: a progress bar for ``predict_volume``'s ``on_batch``."""

    def text(self, step: int, slices: int, loss: float) -> str:
        seconds = time.perf_counter() - self.start
        rate = slices / seconds if seconds > 0 else 0.0
        return f"{self.label} {step}/{self.total} slices {rate:.1f} slices/s {seconds:.0f}s"

    def __call__(self, done: int, total: int) -> None:
        self.total = max(total, 1)
        if done == 0:  # the networks start now: the rate leaves CT preparation out
            self.start = time.perf_counter()
            return
        self.update(done, done, float("nan"))


@dataclass(frozen=True)
class PreparedCT:
    """A CT-only patient's CT as the networks see it, and where it came from."""

    series: DicomSeries  # as read: the DICOM export references it without a second read
    ct: sitk.Image  # the converted CT (HU) on its original grid
    normalised: sitk.Image  # cropped to the body box, bed cleared, windowed to [-1, 1]
    box: dict[str, list[int]]
    otsu_threshold_hu: float
    body_voxels: int


def prepare_ct(patient: str, ct_dir: str | Path, preprocessing: dict) -> PreparedCT:
    """Convert, crop and normalise a CT series exactly as the convert, crop and normalise rules
    treat a training patient's CT (same functions, the bundle's settings)."""
    begin = time.perf_counter()
    crop = CropSettings.from_config(preprocessing["crop"])
    series = read_series(ct_dir, "CT", patient)
    ct = ct_image(series, patient)
    hu = sitk.GetArrayFromImage(ct)
    mask, threshold, box = body_box(hu, ct.GetSpacing(), crop, patient, ct_dir)
    if crop.clear_outside_body:
        hu = np.where(mask, hu, np.asarray(AIR_HU, dtype=hu.dtype))
    cropped = crop_image(image_like(hu, ct), box)
    window = preprocessing["normalise"]
    normalised = window_ct(
        sitk.GetArrayViewFromImage(cropped), window["ct_level_hu"], window["ct_width_hu"]
    )
    log.info(
        "%s: CT converted, cropped and windowed in %.1f s", patient, time.perf_counter() - begin
    )
    return PreparedCT(series, ct, image_like(normalised, cropped), box, threshold, int(mask.sum()))


def predict_ct_only(
    patient: str,
    ct_dir: str | Path,
    bundle: ModelBundle,
    out: PredictionPaths,
    progress: Callable[[int, int], None] | None = None,
    prepared: PreparedCT | None = None,
) -> dict:
    """Predict sPET and ABM for the CT series in ``ct_dir`` with ``bundle``; write ``out``.

    sPET (SUV) and ABM are written on the cropped grid, the ABM also on the original CT grid,
    and ``prediction.json`` records the box and the bundle used (no PHI: the patient is named by
    ``patient`` only). Returns that summary. ``prepared``: :func:`prepare_ct`'s result, when the
    caller keeps it (for the DICOM export).
    """
    prepared = prepared or prepare_ct(patient, ct_dir, bundle.preprocessing)
    ct, grid = prepared.ct, prepared.normalised
    prepared_at = time.perf_counter()
    spet, labels = predict_volume(
        sitk.GetArrayFromImage(grid),
        bundle.networks,
        bundle.inference_settings(),
        bundle.device,
        progress,
    )
    inferred_at = time.perf_counter()
    log.info("%s: networks ran in %.1f s", patient, inferred_at - prepared_at)
    suv_ceiling = bundle.preprocessing["normalise"]["suv_ceiling"]
    write_prediction(
        spet, labels, grid, ct, prepared.box, suv_ceiling, out.spet, out.abm, out.abm_ct
    )
    counts = np.bincount(labels.ravel(), minlength=256)
    summary = {
        "patient_id": patient,
        "roi": {
            "box_ct_index": prepared.box,
            "index_convention": "half-open [start, stop) voxel index ranges on the CT grid",
            "ct_size_xyz": list(ct.GetSize()),
            "cropped_size_xyz": list(grid.GetSize()),
            "otsu_threshold_hu": round(prepared.otsu_threshold_hu, 2),
            "body_voxels": prepared.body_voxels,
        },
        "bundle": {
            "variant": bundle.variant,
            "abmseg_version": bundle.manifest["abmseg_version"],
            "manifest_sha256": bundle.manifest["manifest_sha256"],
        },
        "sampler": bundle.sampler,
        "voxels_per_region": {name: int(counts[value]) for name, value in bundle.regions.items()},
    }
    write_json(out.summary, summary)
    log.info("%s: outputs written in %.1f s", patient, time.perf_counter() - inferred_at)
    return summary


DICOM_NAMES = ("abm_seg.dcm", "abm_rtstruct.dcm")


def predict_into_folder(
    patient: str,
    ct_dir: str | Path,
    bundle: ModelBundle,
    out: str | Path,
    *,
    dicom: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    """``abmseg predict``: :func:`predict_ct_only` into ``out``, plus the DICOM SEG and RTSTRUCT.

    Everything is written into a hidden sibling folder first and moved into ``out`` only when
    complete, so a failure leaves ``out`` as it was; a DICOM file of an earlier prediction that
    this one does not write (``dicom=False``) is removed, so no file in ``out`` is stale.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.", dir=out.parent) as tmp:
        staging = Path(tmp)
        paths = PredictionPaths.in_folder(staging)
        prepared = prepare_ct(patient, ct_dir, bundle.preprocessing)
        summary = predict_ct_only(patient, ct_dir, bundle, paths, progress, prepared)
        if dicom:
            from abmseg.rt.export import export_label  # highdicom only when asked for

            begin = time.perf_counter()
            seg, rtstruct = (staging / name for name in DICOM_NAMES)
            label = read_nifti(paths.abm_ct, patient, made_by="predict")
            export_label(patient, label, prepared.series, bundle.regions, seg, rtstruct)
            log.info(
                "%s: DICOM SEG and RTSTRUCT written in %.1f s", patient, time.perf_counter() - begin
            )
        out.mkdir(exist_ok=True)
        for name in DICOM_NAMES if not dicom else ():
            (out / name).unlink(missing_ok=True)
        for path in sorted(staging.iterdir()):
            os.replace(path, out / path.name)
    return summary
